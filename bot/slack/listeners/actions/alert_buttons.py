"""Buttons on an alert message: act on what the alert is about."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.i18n import _, speaking
from autotrain.models import RuleStatus
from bot.slack import blocks
from bot.slack.deps import SlackDeps, friendly_error
from bot.slack.listeners.actions.rules_paging import rules_page
from bot.slack.replies import clicker, reply_privately
from bot.slack.run_all import run_all

ALERT_ACTIONS = ("alert_run_all", "alert_show_pending", "alert_show_status", "alert_show_deployed", "alert_show_rule")


def alert_button_listener(deps: SlackDeps, action_id: str) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user_id, channel = clicker(body)
        with speaking(await deps.language_for(user_id)):
            await act(action, client, user_id, channel)

    async def act(action: dict[str, Any], client: AsyncWebClient, user_id: str, channel: str | None) -> None:
        try:
            if action_id == "alert_run_all":
                await run_all(deps, client, user_id=user_id, channel_id=channel or user_id)
                return
            if action_id == "alert_show_rule":  # the rule an alert names: its card, to the one who asked
                text, card = await deps.cards.render(action.get("value", ""))
                await reply_privately(client, user_id, channel, text, card)
                return
            if action_id == "alert_show_status":
                report = await deps.service.status()
                await reply_privately(client, user_id, channel, _("Auto-Train status"), blocks.status_blocks(report))
                return
            status = RuleStatus.PENDING if action_id == "alert_show_pending" else RuleStatus.DEPLOYED
            text, rendered = await rules_page(deps, status)
            await reply_privately(client, user_id, channel, text, rendered)
        except Exception as exc:
            await reply_privately(client, user_id, channel, friendly_error(exc, deps))

    return handle
