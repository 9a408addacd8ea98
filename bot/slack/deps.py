"""What the Slack listeners need, passed to each group's `register(app, deps)` (no globals)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.errors import (
    AutotrainError,
    NotFound,
    PermissionDenied,
    RateLimited,
    RuleFileInvalid,
    TransitionRefused,
)
from autotrain.monitoring import Monitor
from autotrain.policy import Actor, slack_actor
from autotrain.service import PipelineService
from autotrain.settings import Settings
from bot.slack.blocks import escape
from bot.slack.cards import HomeTabs, RuleCardPublisher
from bot.slack.people import SlackPeople

log = logging.getLogger("autotrain.slack")

GROUP_CACHE_SECONDS = 300


@dataclass
class AdminDirectory:
    """Who is an admin: AUTOTRAIN_ADMINS, plus members of AUTOTRAIN_ADMIN_USERGROUP (cached 5 minutes)."""

    client: AsyncWebClient
    admins: tuple[str, ...]
    usergroup: str | None
    _members: tuple[str, ...] = ()
    _fetched_at: float = field(default=float("-inf"))

    async def actor_for(self, user_id: str) -> Actor:
        return slack_actor(user_id, self.admins, await self._group_members())

    async def _group_members(self) -> tuple[str, ...]:
        if not self.usergroup:
            return ()
        if time.monotonic() - self._fetched_at > GROUP_CACHE_SECONDS:
            try:
                response = await self.client.usergroups_users_list(usergroup=self.usergroup)
                self._members = tuple(response.get("users", []))
                self._fetched_at = time.monotonic()
            except SlackApiError as exc:  # keep the last known members rather than lock admins out
                log.warning("could not read the members of user group %s: %s", self.usergroup, exc)
        return self._members

    def mention_admins(self) -> str:
        names = [f"<@{user}>" for user in self.admins[:5]]
        if self.usergroup:
            names.append(f"<!subteam^{self.usergroup}>")
        return ", ".join(names) if names else "nobody yet (set AUTOTRAIN_ADMINS)"


@dataclass
class SlackDeps:
    settings: Settings
    service: PipelineService
    admins: AdminDirectory
    cards: RuleCardPublisher
    home: HomeTabs
    monitor: Monitor
    people: SlackPeople


def friendly_error(exc: Exception, deps: SlackDeps | None = None) -> str:
    """What to tell a Slack user about a failure: the pipeline's own words, never a stack trace."""
    if isinstance(exc, PermissionDenied):
        admins = deps.admins.mention_admins() if deps else "an admin"
        return f"🔒 Only Auto-Train admins can do that. Ask {admins}."
    if isinstance(exc, RateLimited):
        minutes = max(1, round(exc.retry_after / 60))
        return f"⏳ That's a lot of feedback in a short time. Please try again in about {minutes} min."
    if isinstance(exc, AutotrainError):
        message = escape(exc.message)
        if isinstance(exc, TransitionRefused):
            return f"ℹ️ {message}. Nothing was changed."
        if isinstance(exc, NotFound):
            return f"🤷 {message}."
        if isinstance(exc, RuleFileInvalid):
            return f"⚠️ {message}. Fix the file, then deploy again."
        return f"⚠️ {message}"
    log.exception("unexpected error in a Slack listener", exc_info=exc)
    return "⚠️ Something went wrong on our side; it has been logged. Please try again."
