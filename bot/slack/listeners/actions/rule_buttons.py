"""Buttons on a rule card, one for each `RuleAction`. The card itself is updated by the notifier."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.errors import TransitionRefused
from autotrain.models import DeployResult, Rule
from autotrain.policy import Actor, RuleAction
from bot.slack import blocks
from bot.slack.deps import SlackDeps, friendly_error
from bot.slack.replies import clicker, reply_privately

# A file change is confirmed to the admin privately; approve and reject show on the card, for everyone.
DONE = {
    RuleAction.DEPLOY: "🚀 {rule_id} deployed to `{module}`.",
    RuleAction.CANARY: "🐤 {rule_id} deployed to `{module}` for a canary of users.",
    RuleAction.PROMOTE: "🚀 {rule_id} promoted to every user in `{module}`.",
    RuleAction.ROLLBACK: "↩️ {rule_id} rolled back in `{module}`.",
    RuleAction.DEPLOY_OVERRIDE: "🚀 {rule_id} deployed to `{module}` without a passed replay (audit logged).",
}

Listener = Callable[..., Awaitable[None]]


async def perform(deps: SlackDeps, action: RuleAction, rule_id: str, actor: Actor) -> Rule | DeployResult:
    """The service call behind one button (Edit opens a form instead: see `edit_button_listener`)."""
    service = deps.service
    match action:
        case RuleAction.APPROVE:
            return await service.approve(rule_id, actor)
        case RuleAction.REJECT:
            return await service.reject(rule_id, actor)
        case RuleAction.DEPLOY:
            return await service.deploy(rule_id, actor)
        case RuleAction.CANARY:
            return await service.canary(rule_id, actor)
        case RuleAction.PROMOTE:
            return await service.promote(rule_id, actor)
        case RuleAction.ROLLBACK:
            return await service.rollback(rule_id, actor)
        case RuleAction.DEPLOY_OVERRIDE:
            return await service.deploy(rule_id, actor, override_evaluation=True)
    raise ValueError(f"{action} has no button of its own")


async def refused(deps: SlackDeps, client: AsyncWebClient, body: dict[str, Any], rule_id: str, exc: Exception) -> None:
    """Tell the user why; on a refused transition (a second click, or another admin was faster) also show the
    card as it is now, so its buttons match the rule again."""
    user_id, channel = clicker(body)
    await reply_privately(client, user_id, channel, friendly_error(exc, deps))
    if isinstance(exc, TransitionRefused):
        await deps.cards.update_card(rule_id)


def rule_button_listener(deps: SlackDeps, rule_action: RuleAction) -> Listener:
    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rule_id = action.get("value", "")
        try:
            actor = await deps.admins.actor_for(body["user"]["id"])
            result = await perform(deps, rule_action, rule_id, actor)
        except Exception as exc:
            await refused(deps, client, body, rule_id, exc)
            return
        if isinstance(result, DeployResult):
            user_id, channel = clicker(body)
            note = DONE[rule_action].format(rule_id=result.rule.rule_id, module=result.rule.module_name)
            if result.deployment.reload_status == "failed":  # deployed, but the chatbot does not know yet
                note += (
                    f"\n⚠️ The chatbot's reload failed ({blocks.escaped(result.deployment.reload_error or '', 200)});"
                    " it is retried automatically, and the card shows it until it works."
                )
            await reply_privately(client, user_id, channel, note)

    return handle


def edit_button_listener(deps: SlackDeps) -> Listener:
    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rule_id = action.get("value", "")
        try:
            actor = await deps.admins.actor_for(body["user"]["id"])
            rule = await deps.service.rule_for_edit(rule_id, actor)  # checks permission and editability
            view = blocks.edit_modal(rule, deps.settings.allowed_modules)
            await client.views_open(trigger_id=body["trigger_id"], view=view)
        except Exception as exc:
            await refused(deps, client, body, rule_id, exc)

    return handle


def show_replays_listener(deps: SlackDeps) -> Listener:
    """The card's "Show replays": a modal with each case's answers side by side."""

    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rule_id = action.get("value", "")
        try:
            evaluation = await deps.service.evaluation(rule_id)
            await client.views_open(trigger_id=body["trigger_id"], view=blocks.replays_modal(evaluation))
        except Exception as exc:
            user_id, channel = clicker(body)
            await reply_privately(client, user_id, channel, friendly_error(exc, deps))

    return handle
