"""`/autotrain feedback|status|rules|run-all|rollback|help`. Acks at once; the work follows the ack."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.models import RuleStatus
from autotrain.policy import Action, require_permission
from bot.slack import blocks
from bot.slack.deps import SlackDeps, friendly_error

log = logging.getLogger("autotrain.slack")

RULE_ID = re.compile(r"^RUL-\d{4,}$")
PROGRESS_INTERVAL_SECONDS = 1.0  # chat.update is rate limited; progress is throttled to one edit a second

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
                await run_all(deps, client, respond, command)
            elif subcommand == "rollback":
                await rollback(deps, respond, command["user_id"], argument)
            else:
                prefix = f"I don't know `{blocks.escape(subcommand[:40])}`.\n" if subcommand not in ("", "help") else ""
                await respond(response_type="ephemeral", text=prefix + blocks.HELP_TEXT)
        except Exception as exc:
            await respond(response_type="ephemeral", text=friendly_error(exc, deps))

    return handle


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


class RunAllProgress:
    """One message in the channel, edited as feedback is processed (at most once a second), then the summary."""

    def __init__(self, client: AsyncWebClient, channel: str, ts: str) -> None:
        self.client = client
        self.channel = channel
        self.ts = ts
        self._last = 0.0

    @classmethod
    async def start(cls, client: AsyncWebClient, channel: str, user_id: str, total_hint: str) -> RunAllProgress:
        text = f"⏳ Run-all started by <@{user_id}>: {total_hint}"
        try:
            response = await client.chat_postMessage(channel=channel, text=text)
        except SlackApiError:  # the bot is not in that channel: tell the user directly
            response = await client.chat_postMessage(channel=user_id, text=text)
        return cls(client, response["channel"], response["ts"])

    async def update(self, done: int, total: int, errors: list[dict[str, str]]) -> None:
        now = time.monotonic()
        if done < total and now - self._last < PROGRESS_INTERVAL_SECONDS:
            return
        self._last = now
        try:
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=blocks.run_all_progress_text(done, total, len(errors))
            )
        except SlackApiError as exc:
            log.warning("run-all progress not updated: %s", exc)

    async def finish(self, text: str, summary_blocks: list[blocks.Block]) -> None:
        await self.client.chat_update(channel=self.channel, ts=self.ts, text=text, blocks=summary_blocks)


async def run_all(deps: SlackDeps, client: AsyncWebClient, respond: AsyncRespond, command: dict[str, Any]) -> None:
    user_id = command["user_id"]
    actor = await deps.admins.actor_for(user_id)
    require_permission(actor, Action.RUN_ALL)  # refuse before posting anything
    total = (await deps.service.status()).pending_feedback
    progress = await RunAllProgress.start(client, command["channel_id"], user_id, f"{total} pending feedback")
    summary = await deps.service.run_all(actor, on_progress=progress.update)
    text, summary_blocks = blocks.run_all_summary_blocks(summary)
    await progress.finish(text, summary_blocks)
