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
    StoreBusy,
    TransitionRefused,
)
from autotrain.i18n import Language, _, language_of
from autotrain.monitoring import Monitor
from autotrain.policy import Actor, slack_actor
from autotrain.service import PipelineService
from autotrain.settings import Settings
from bot.slack.blocks import escape
from bot.slack.cards import HomeTabs, RuleCardPublisher
from bot.slack.people import LOOKUP_TIMEOUT, SlackPeople

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
        return ", ".join(names) if names else _("nobody yet (set AUTOTRAIN_ADMINS)")


@dataclass
class SlackDeps:
    settings: Settings
    service: PipelineService
    admins: AdminDirectory
    cards: RuleCardPublisher
    home: HomeTabs
    monitor: Monitor
    people: SlackPeople

    async def language_for(self, user_id: str, *, wait_seconds: float = LOOKUP_TIMEOUT) -> Language:
        """The user's own language when Slack tells it (users.info, cached), else AUTOTRAIN_LANGUAGE."""
        person = await self.people.person(user_id, wait_seconds=wait_seconds)
        return language_of(person.locale if person else None, self.settings.language)

    def known_language_for(self, user_id: str) -> Language:
        """The same without asking Slack: for what must answer before the ack (a form's field errors)."""
        person = self.people.known(user_id)
        return language_of(person.locale if person else None, self.settings.language)


def friendly_error(exc: Exception, deps: SlackDeps | None = None) -> str:
    """What to tell a Slack user about a failure, in their language: the pipeline's own words, never a stack
    trace."""
    if isinstance(exc, PermissionDenied):
        admins = deps.admins.mention_admins() if deps else _("an admin")
        return "🔒 " + _("Only Auto-Train admins can do that. Ask {admins}.", admins=admins)
    if isinstance(exc, RateLimited):
        minutes = max(1, round(exc.retry_after / 60))
        return "⏳ " + _("That's a lot of feedback in a short time. Please try again in about {n} min.", n=minutes)
    if isinstance(exc, StoreBusy):
        return "⏳ " + _("The database is busy or full right now; nothing was changed. Please try again shortly.")
    if isinstance(exc, AutotrainError):
        message = escape(capitalized(exc.localized()))
        if isinstance(exc, TransitionRefused):
            return "ℹ️ " + _("{message}. Nothing was changed.", message=message)
        if isinstance(exc, NotFound):
            return f"🤷 {message}."
        if isinstance(exc, RuleFileInvalid):
            return "⚠️ " + _("{message}. Fix the file, then deploy again.", message=message)
        return f"⚠️ {message}"
    log.exception("unexpected error in a Slack listener", exc_info=exc)
    return "⚠️ " + _("Something went wrong on our side; it has been logged. Please try again.")


def capitalized(text: str) -> str:
    """A sentence's first word capitalized, unless it is a name (a file, a setting: `fashion_rules.json`)."""
    first = text.split(" ", 1)[0]
    return text[:1].upper() + text[1:] if first.isalpha() and first.islower() else text
