"""`/autotrain feedback|status|rules|run-all|rollback|help`. Acks at once; the work follows the ack."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.models import RuleStatus
from bot.slack import blocks, monitoring_blocks
from bot.slack.deps import SlackDeps, friendly_error
from bot.slack.run_all import run_all

log = logging.getLogger("autotrain.slack")

RULE_ID = re.compile(r"^RUL-\d{4,}$")

Listener = Callable[..., Awaitable[None]]


def autotrain_command_listener(deps: SlackDeps) -> Listener:
    async def handle(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        await ack()
        subcommand, _, argument = (command.get("text") or "").strip().partition(" ")
        subcommand = subcommand.lower()
        argument = argument.strip()
        try:
            if subcommand == "feedback":
                await open_feedback_modal(client, command, argument)
            elif subcommand == "status":
                report = await deps.service.status()
                await respond(response_type="ephemeral", text="Auto-Train status", blocks=blocks.status_blocks(report))
            elif subcommand == "rules":
                await list_rules(deps, respond, argument)
            elif subcommand == "run-all":
                await run_all(deps, client, user_id=command["user_id"], channel_id=command["channel_id"])
            elif subcommand == "digest":
                await post_digest(deps, respond)
            elif subcommand == "rollback":
                await rollback(deps, respond, command["user_id"], argument)
            else:
                prefix = f"I don't know `{blocks.escape(subcommand[:40])}`.\n" if subcommand not in ("", "help") else ""
                await respond(response_type="ephemeral", text=prefix + blocks.HELP_TEXT)
        except Exception as exc:
            await respond(response_type="ephemeral", text=friendly_error(exc, deps))

    return handle


async def post_digest(deps: SlackDeps, respond: AsyncRespond) -> None:
    """On demand: to the digest channel when there is one, else just to the asker (one reply either way)."""
    channel = deps.settings.digest_channel
    problem = None
    if channel:
        try:
            await deps.monitor.post_digest(raise_errors=True)
            await respond(response_type="ephemeral", text=f"📰 Digest posted to <#{channel}>.")
            return
        except SlackApiError as exc:
            error = exc.response.get("error", "error")
            problem = f"⚠️ Could not post to <#{channel}> ({error}; is the bot in that channel?). Here it is:"
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
                text=f"Unknown status `{blocks.escape(wanted[:40])}`. Use {choices} or `all`.",
            )
            return
    page = await deps.service.list_rules(status=status, limit=20)
    await respond(
        response_type="ephemeral",
        text=f"{page.total} rules",
        blocks=blocks.rules_blocks(page.items, page.total, status),
    )


async def rollback(deps: SlackDeps, respond: AsyncRespond, user_id: str, argument: str) -> None:
    rule_id = argument.upper()
    if not RULE_ID.match(rule_id):
        await respond(response_type="ephemeral", text="Usage: `/autotrain rollback RUL-1234`")
        return
    actor = await deps.admins.actor_for(user_id)
    result = await deps.service.rollback(rule_id, actor)
    deployment = result.deployment
    text = f"↩️ {rule_id} rolled back: `{deployment.module_name}` is at version {deployment.version_after}."
    await respond(response_type="ephemeral", text=text)
