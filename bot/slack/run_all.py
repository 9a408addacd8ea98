"""run-all from Slack (the command, and the button on a backlog alert): one progress message, edited."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import blocks
from bot.slack.deps import SlackDeps

log = logging.getLogger("autotrain.slack")

PROGRESS_INTERVAL_SECONDS = 1.0  # chat.update is rate limited; progress is throttled to one edit a second


class RunAllProgress:
    """One message in the channel, posted when the service starts (after its permission check, so a refused
    run-all posts nothing), edited as feedback is processed (at most once a second), then the summary."""

    def __init__(self, client: AsyncWebClient, channel: str, user_id: str) -> None:
        self.client = client
        self.channel = channel
        self.user_id = user_id
        self.ts: str | None = None
        self._last = 0.0

    async def start(self, total: int) -> None:
        await self._post(blocks.run_all_started_text(self.user_id, total))

    async def update(self, done: int, total: int, errors: list[dict[str, str]]) -> None:
        if self.ts is None:  # the start message could not be posted: nothing to edit
            return
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
        if self.ts is None:  # no start message to replace: post the summary itself
            await self._post(text, summary_blocks)
            return
        await self.client.chat_update(channel=self.channel, ts=self.ts, text=text, blocks=summary_blocks)

    async def _post(self, text: str, rendered: list[blocks.Block] | None = None) -> None:
        try:
            response = await self.client.chat_postMessage(channel=self.channel, text=text, blocks=rendered)
        except SlackApiError:  # the bot is not in that channel: tell the user directly
            response = await self.client.chat_postMessage(channel=self.user_id, text=text, blocks=rendered)
        self.channel, self.ts = response["channel"], response["ts"]


async def run_all(deps: SlackDeps, client: AsyncWebClient, *, user_id: str, channel_id: str) -> None:
    """One progress message, edited, then the summary. A refusal (PermissionDenied) is raised before anything
    is posted; the caller tells the user privately."""
    actor = await deps.admins.actor_for(user_id)
    progress = RunAllProgress(client, channel_id, user_id)
    summary = await deps.service.run_all(actor, on_progress=progress.update, on_start=progress.start)
    text, summary_blocks = blocks.run_all_summary_blocks(summary)
    await progress.finish(text, summary_blocks)
