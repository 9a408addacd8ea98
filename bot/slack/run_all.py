"""run-all from Slack (the command, and the button on a backlog alert): one progress message, edited."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.policy import Action, require_permission
from bot.slack import blocks
from bot.slack.deps import SlackDeps

log = logging.getLogger("autotrain.slack")

PROGRESS_INTERVAL_SECONDS = 1.0  # chat.update is rate limited; progress is throttled to one edit a second


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


async def run_all(deps: SlackDeps, client: AsyncWebClient, *, user_id: str, channel_id: str) -> None:
    """Refuse non-admins before posting anything; then one progress message, edited, then the summary."""
    actor = await deps.admins.actor_for(user_id)
    require_permission(actor, Action.RUN_ALL)  # refuse before posting anything
    total = (await deps.service.status()).pending_feedback
    progress = await RunAllProgress.start(client, channel_id, user_id, f"{total} pending feedback")
    summary = await deps.service.run_all(actor, on_progress=progress.update)
    text, summary_blocks = blocks.run_all_summary_blocks(summary)
    await progress.finish(text, summary_blocks)
