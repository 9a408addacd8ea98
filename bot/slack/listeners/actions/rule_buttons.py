"""Buttons on a rule card, one for each `RuleAction`. The card itself is updated by the notifier."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.errors import TransitionRefused
from autotrain.i18n import N_, _, speaking
from autotrain.models import DeployOutcome, DeployResult, Rule
from autotrain.policy import Actor, RuleAction
from bot.slack import blocks
from bot.slack.deps import SlackDeps, friendly_error
from bot.slack.people import FORM_LOOKUP_TIMEOUT
from bot.slack.replies import clicker, reply_privately

# A file change is confirmed to the admin privately; approve and reject show on the card, for everyone.
DONE = {
    RuleAction.DEPLOY: N_("🚀 {rule_id} deployed to {module}."),
    RuleAction.CANARY: N_("🐤 {rule_id} deployed to {module} for a canary of users."),
    RuleAction.PROMOTE: N_("🚀 {rule_id} promoted to every user in {module}."),
    RuleAction.ROLLBACK: N_("↩️ {rule_id} rolled back: its change to {module} is reverted."),
    RuleAction.DEPLOY_OVERRIDE: N_("🚀 {rule_id} deployed to {module} without a passed replay (audit logged)."),
}

Listener = Callable[..., Awaitable[None]]


async def perform(
    deps: SlackDeps, action: RuleAction, rule_id: str, actor: Actor, *, acknowledge_flags: bool = False
) -> Rule | DeployResult:
    """The service call behind one button (Edit opens a form instead: see `edit_button_listener`)."""
    service = deps.service
    match action:
        case RuleAction.APPROVE:
            return await service.approve(rule_id, actor, acknowledge_flags=acknowledge_flags)
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


def done_message(action: RuleAction, result: DeployResult) -> str:
    """What a file change did, said exactly: a no-op and a rollback that left the line say so."""
    rule, deployment = result.rule, result.deployment
    module = f"`{blocks.escape(rule.module_name)}`"
    summary = blocks.deployment_summary(deployment)
    unchanged = deployment.version_before == deployment.version_after
    if deployment.outcome is DeployOutcome.NOOP:
        note = "🚀 " + _("{rule_id} is deployed, but {module} was not changed.", rule_id=rule.rule_id, module=module)
    elif action is RuleAction.ROLLBACK and summary and unchanged:
        note = "↩️ " + _("{rule_id} is rolled back, but {module} was not changed.", rule_id=rule.rule_id, module=module)
    elif action is RuleAction.ROLLBACK and summary:
        note = "↩️ " + _("{rule_id} is rolled back.", rule_id=rule.rule_id)
    else:
        note = _(DONE[action], rule_id=rule.rule_id, module=module)
        summary = None
    if summary:
        note += "\n" + summary
    if deployment.reload_status == "failed":  # deployed, but the chatbot does not know yet
        note += "\n⚠️ " + _(
            "The chatbot's reload failed ({error}); it is retried automatically, and the card shows it until it works.",
            error=blocks.escaped(deployment.reload_error or "", 200),
        )
    return note


async def refused(deps: SlackDeps, client: AsyncWebClient, body: dict[str, Any], rule_id: str, exc: Exception) -> None:
    """Tell the user why; on a refused transition (a second click, or another admin was faster) also show the
    card as it is now, so its buttons match the rule again."""
    user_id, channel = clicker(body)
    await reply_privately(client, user_id, channel, friendly_error(exc, deps))
    if isinstance(exc, TransitionRefused):
        await deps.cards.update_card(rule_id)


def rule_button_listener(deps: SlackDeps, rule_action: RuleAction, *, acknowledge_flags: bool = False) -> Listener:
    """`acknowledge_flags`: the button is a flagged rule's Approve, whose confirmation named the flags."""

    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rule_id = action.get("value", "")
        user_id, channel = clicker(body)
        with speaking(await deps.language_for(user_id)):
            try:
                actor = await deps.admins.actor_for(user_id)
                result = await perform(deps, rule_action, rule_id, actor, acknowledge_flags=acknowledge_flags)
            except Exception as exc:
                await refused(deps, client, body, rule_id, exc)
                return
            if isinstance(result, DeployResult):
                await reply_privately(client, user_id, channel, done_message(rule_action, result))

    return handle


def edit_button_listener(deps: SlackDeps) -> Listener:
    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rule_id = action.get("value", "")
        user_id = body["user"]["id"]
        with speaking(await deps.language_for(user_id, wait_seconds=FORM_LOOKUP_TIMEOUT)):
            try:
                actor = await deps.admins.actor_for(user_id)
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
        user_id, channel = clicker(body)
        with speaking(await deps.language_for(user_id, wait_seconds=FORM_LOOKUP_TIMEOUT)):
            try:
                evaluation = await deps.service.evaluation(rule_id)
                await client.views_open(trigger_id=body["trigger_id"], view=blocks.replays_modal(evaluation))
            except Exception as exc:
                await reply_privately(client, user_id, channel, friendly_error(exc, deps))

    return handle
