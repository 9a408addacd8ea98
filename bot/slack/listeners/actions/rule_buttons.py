"""Buttons on a rule card: approve, reject, deploy, roll back, edit. The card is updated by the notifier."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.errors import TransitionRefused
from autotrain.policy import Action, Actor, check_rule_editable, require_permission
from bot.slack import blocks
from bot.slack.deps import SlackDeps, friendly_error

log = logging.getLogger("autotrain.slack")

RULE_ACTIONS = ("rule_approve", "rule_reject", "rule_deploy", "rule_deploy_canary", "rule_promote", "rule_rollback")
DONE = {
    "rule_approve": "✅ {rule_id} approved.",
    "rule_reject": "⛔ {rule_id} rejected.",
    "rule_deploy": "🚀 {rule_id} deployed to `{module}`.",
    "rule_deploy_canary": "🐤 {rule_id} deployed to `{module}` for a canary of users.",
    "rule_promote": "🚀 {rule_id} promoted to every user in `{module}`.",
    "rule_rollback": "↩️ {rule_id} rolled back in `{module}`.",
}


async def tell_user(client: AsyncWebClient, body: dict[str, Any], text: str) -> None:
    """An ephemeral note where the user clicked, or a DM when that is not possible."""
    user_id = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id")
    try:
        if channel:
            await client.chat_postEphemeral(channel=channel, user=user_id, text=text)
            return
    except SlackApiError as exc:
        log.info("ephemeral note failed (%s); sending a DM", exc.response.get("error"))
    await client.chat_postMessage(channel=user_id, text=text)


async def perform(deps: SlackDeps, action_id: str, rule_id: str, actor: Actor) -> str:
    service = deps.service
    if action_id == "rule_approve":
        rule = await service.approve(rule_id, actor)
    elif action_id == "rule_reject":
        rule = await service.reject(rule_id, actor)
    elif action_id == "rule_deploy":
        rule = (await service.deploy(rule_id, actor)).rule
    elif action_id == "rule_deploy_canary":
        rule = (await service.deploy(rule_id, actor, rollout_percent=blocks.CANARY_PERCENT)).rule
    elif action_id == "rule_promote":
        rule = (await service.promote(rule_id, actor)).rule
    else:
        rule = (await service.rollback(rule_id, actor)).rule
    return DONE[action_id].format(rule_id=rule_id, module=rule.module_name)


def rule_button_listener(deps: SlackDeps, action_id: str) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rule_id = action.get("value", "")
        actor = await deps.admins.actor_for(body["user"]["id"])
        try:
            note = await perform(deps, action_id, rule_id, actor)
        except TransitionRefused as exc:
            # a second click, or another admin was faster: say so and show the card as it is now
            await tell_user(client, body, friendly_error(exc, deps))
            await deps.cards.update_card(rule_id)
            return
        except Exception as exc:
            await tell_user(client, body, friendly_error(exc, deps))
            return
        if action_id in ("rule_deploy", "rule_deploy_canary", "rule_promote", "rule_rollback"):
            await tell_user(client, body, note)

    return handle


def edit_button_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rule_id = action.get("value", "")
        try:
            actor = await deps.admins.actor_for(body["user"]["id"])
            require_permission(actor, Action.EDIT)
            rule = await deps.service.get_rule(rule_id)
            check_rule_editable(rule_id, rule.status)
            view = blocks.edit_modal(rule, deps.settings.allowed_modules)
            await client.views_open(trigger_id=body["trigger_id"], view=view)
        except Exception as exc:
            await tell_user(client, body, friendly_error(exc, deps))
            if isinstance(exc, TransitionRefused):
                await deps.cards.update_card(rule_id)

    return handle
