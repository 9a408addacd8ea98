"""Private replies: what only the user who clicked, typed or submitted should see."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import Block

log = logging.getLogger("autotrain.slack")


async def reply_privately(
    client: AsyncWebClient,
    user_id: str,
    channel: str | None,
    text: str,
    blocks: list[Block] | None = None,
) -> None:
    """Ephemeral in `channel`; a DM when there is no channel or the bot cannot post there (not in it, archived)."""
    if channel:
        try:
            await client.chat_postEphemeral(channel=channel, user=user_id, text=text, blocks=blocks)
            return
        except SlackApiError as exc:
            log.info("ephemeral reply failed (%s); sending a DM", exc.response.get("error"))
    await client.chat_postMessage(channel=user_id, text=text, blocks=blocks)


def clicker(body: dict[str, Any]) -> tuple[str, str | None]:
    """(user id, channel id or None) of an interaction payload: who clicked, and where."""
    return body["user"]["id"], (body.get("channel") or {}).get("id")
