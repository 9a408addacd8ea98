"""Buttons on an alert message: act on what the alert is about."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.models import RuleStatus
from bot.slack import blocks
from bot.slack.deps import SlackDeps, friendly_error
from bot.slack.listeners.actions.rule_buttons import tell_user
from bot.slack.run_all import run_all

ALERT_ACTIONS = ("alert_run_all", "alert_show_pending", "alert_show_status", "alert_show_deployed")


def alert_button_listener(deps: SlackDeps, action_id: str) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user_id = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or user_id
        try:
            if action_id == "alert_run_all":
                await run_all(deps, client, user_id=user_id, channel_id=channel)
                return
            if action_id == "alert_show_status":
                report = await deps.service.status()
                await post_private(client, body, "Auto-Train status", blocks.status_blocks(report))
                return
            status = RuleStatus.PENDING if action_id == "alert_show_pending" else RuleStatus.DEPLOYED
            page = await deps.service.list_rules(status=status, limit=20)
            await post_private(client, body, f"{page.total} rules", blocks.rules_blocks(page.items, page.total, status))
        except Exception as exc:
            await tell_user(client, body, friendly_error(exc, deps))

    return handle


async def post_private(client: AsyncWebClient, body: dict[str, Any], text: str, rendered: list[blocks.Block]) -> None:
    user_id = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id")
    if channel:
        await client.chat_postEphemeral(channel=channel, user=user_id, text=text, blocks=rendered)
    else:
        await client.chat_postMessage(channel=user_id, text=text, blocks=rendered)
