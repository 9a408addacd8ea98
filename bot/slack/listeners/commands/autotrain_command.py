"""`/autotrain feedback|status|rules|run-all|rollback|help`. Acks at once; the work follows the ack."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.i18n import _, speaking
from autotrain.models import DeployResult, RuleStatus
from autotrain.policy import RuleAction
from bot.slack import blocks, monitoring_blocks
from bot.slack.deps import SlackDeps, friendly_error
from bot.slack.listeners.actions.rule_buttons import done_message
from bot.slack.listeners.actions.rules_paging import rules_page
from bot.slack.people import FORM_LOOKUP_TIMEOUT, LOOKUP_TIMEOUT
from bot.slack.run_all import run_all

log = logging.getLogger("autotrain.slack")

RULE_ID = re.compile(r"^RUL-\d{4,}$")

Listener = Callable[..., Awaitable[None]]


def autotrain_command_listener(deps: SlackDeps) -> Listener:
    async def handle(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        await ack()
        subcommand, _sep, argument = (command.get("text") or "").strip().partition(" ")
        subcommand = subcommand.lower()
        argument = argument.strip()
        user_id = command["user_id"]
        # a form must open within its trigger's 3 s: it waits less for the user's locale
        wait = FORM_LOOKUP_TIMEOUT if subcommand == "feedback" else LOOKUP_TIMEOUT
        with speaking(await deps.language_for(user_id, wait_seconds=wait)):
            try:
                if subcommand == "feedback":
                    await open_feedback_modal(client, command, argument)
                elif subcommand == "status":
                    report = await deps.service.status()
                    await respond(
                        response_type="ephemeral", text=_("Auto-Train status"), blocks=blocks.status_blocks(report)
                    )
                elif subcommand == "rules":
                    await list_rules(deps, respond, argument)
                elif subcommand == "run-all":
                    await run_all(deps, client, user_id=user_id, channel_id=command["channel_id"])
                elif subcommand == "digest":
                    await post_digest(deps, respond)
                elif subcommand == "rollback":
                    await rollback(deps, respond, user_id, argument)
                else:
                    unknown = subcommand not in ("", "help")
                    prefix = (
                        _("I don't know {command}.", command=f"`{blocks.escape(subcommand[:40])}`") if unknown else ""
                    )
                    await respond(
                        response_type="ephemeral", text=(prefix + "\n" if prefix else "") + _(blocks.HELP_TEXT)
                    )
            except Exception as exc:
                await respond(response_type="ephemeral", text=friendly_error(exc, deps))

    return handle


async def post_digest(deps: SlackDeps, respond: AsyncRespond) -> None:
    """On demand: to the digest channel when there is one, else just to the asker (one reply either way)."""
    channel = deps.settings.digest_channel
    problem = None
    if channel:
        try:
            with speaking(deps.settings.language):  # the channel's, not the asker's
                await deps.monitor.post_digest(raise_errors=True)
            await respond(
                response_type="ephemeral", text="📰 " + _("Digest posted to {channel}.", channel=f"<#{channel}>")
            )
            return
        except SlackApiError as exc:
            error = exc.response.get("error", "error")
            problem = "⚠️ " + _(
                "Could not post to {channel} ({error}; is the bot in that channel?). Here it is:",
                channel=f"<#{channel}>",
                error=error,
            )
    digest = await deps.monitor.build_digest()
    text, rendered = monitoring_blocks.digest_message(digest, {})
    if problem:
        text, rendered = f"{problem} {text}", [blocks.section(problem), *rendered][: blocks.MESSAGE_BLOCK_LIMIT]
    await respond(response_type="ephemeral", text=text, blocks=rendered)


async def open_feedback_modal(client: AsyncWebClient, command: dict[str, Any], text: str) -> None:
    metadata = {"channel": command.get("channel_id", "")}
    await client.views_open(
        trigger_id=command["trigger_id"], view=blocks.feedback_modal(feedback_text=text, metadata=metadata)
    )


async def list_rules(deps: SlackDeps, respond: AsyncRespond, argument: str) -> None:
    wanted = argument.lower().replace(" ", "_") or RuleStatus.PENDING.value
    if wanted == "all":
        status = None
    else:
        try:
            status = RuleStatus(wanted)
        except ValueError:
            choices = ", ".join(f"`{s.value}`" for s in RuleStatus)
            await respond(
                response_type="ephemeral",
                text=_(
                    "Unknown status {status}. Use {choices} or {all}.",
                    status=f"`{blocks.escape(wanted[:40])}`",
                    choices=choices,
                    all="`all`",
                ),
            )
            return
    text, rendered = await rules_page(deps, status)
    await respond(response_type="ephemeral", text=text, blocks=rendered)


async def rollback(deps: SlackDeps, respond: AsyncRespond, user_id: str, argument: str) -> None:
    rule_id = argument.upper()
    if not RULE_ID.match(rule_id):
        await respond(response_type="ephemeral", text=_("Usage: {usage}", usage="`/autotrain rollback RUL-1234`"))
        return
    actor = await deps.admins.actor_for(user_id)
    result = await deps.service.rollback(rule_id, actor)
    await respond(response_type="ephemeral", text=done_message_with_version(result))


def done_message_with_version(result: DeployResult) -> str:
    note = done_message(RuleAction.ROLLBACK, result)
    deployment = result.deployment
    if deployment.version_before != deployment.version_after:
        note += " " + _("It is at version {version}.", version=f"`{deployment.version_after[:8]}`")
    return note
