"""Message shortcut `autotrain_report`: report any message; it becomes the AI response in the form."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.i18n import speaking
from bot.slack import blocks
from bot.slack.deps import SlackDeps
from bot.slack.people import FORM_LOOKUP_TIMEOUT

log = logging.getLogger("autotrain.slack")


def slack_to_plain(text: str) -> str:
    """Message text arrives with Slack's escaping; the form (and the stored feedback) wants what people read."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def report_message_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, shortcut: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user_id = (shortcut.get("user") or {}).get("id", "")
        with speaking(await deps.language_for(user_id, wait_seconds=FORM_LOOKUP_TIMEOUT)):
            await open_form(shortcut, client)

    async def open_form(shortcut: dict[str, Any], client: AsyncWebClient) -> None:
        message = shortcut.get("message") or {}
        channel = (shortcut.get("channel") or {}).get("id", "")
        metadata = {"channel": channel, "message_ts": message.get("ts", "")}
        ai_response = slack_to_plain(message.get("text") or "")
        # trigger_id lives 3 s: open the form first, fill in the thread's question after
        opened = await client.views_open(
            trigger_id=shortcut["trigger_id"], view=blocks.feedback_modal(ai_response=ai_response, metadata=metadata)
        )
        thread_ts = message.get("thread_ts")
        if not thread_ts or thread_ts == message.get("ts"):
            return
        try:
            replies = await client.conversations_replies(channel=channel, ts=thread_ts, limit=1, inclusive=True)
            messages = replies.get("messages") or []
            parent = slack_to_plain(messages[0].get("text", "")) if messages else ""
        except SlackApiError as exc:  # the bot cannot read that conversation: leave the question empty
            log.info("thread parent of %s not readable: %s", thread_ts, exc.response.get("error"))
            return
        if not parent:
            return
        view = opened["view"]
        await client.views_update(
            view_id=view["id"],
            hash=view.get("hash"),
            view=blocks.feedback_modal(query=parent, ai_response=ai_response, metadata=metadata),
        )

    return handle
