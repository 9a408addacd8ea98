"""Who a Slack user is: name, e-mail and locale from `users.info`, cached, so that Slack's replies are in the
user's language and git commits carry a real author. Never in the way: a failed or slow lookup is an
unknown person (the workspace's language, the id as author), and it is asked again only after a while."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.ports import Person

log = logging.getLogger("autotrain.slack")

KNOWN_SECONDS = 3600.0  # a name, e-mail or locale rarely changes; an hour old is fine
UNKNOWN_SECONDS = 300.0  # not found, or Slack failed: ask again in 5 minutes
LOOKUP_TIMEOUT = 2.0  # a reply waits at most this long for it
FORM_LOOKUP_TIMEOUT = 0.5  # a form must open within the 3 s of its trigger: it waits less


@dataclass
class SlackPeople:
    """A `PeopleDirectory` on Slack's Web API."""

    client: AsyncWebClient
    _cache: dict[str, tuple[float, Person | None]] = field(default_factory=dict)
    _asking: dict[str, asyncio.Future[Person | None]] = field(default_factory=dict)

    def known(self, user_id: str) -> Person | None:
        """What is cached about the user, without waiting for Slack (a lookup starts, for next time)."""
        cached = self._cache.get(user_id)
        if cached is None and user_id.startswith(("U", "W")) and user_id not in self._asking:
            asking = asyncio.ensure_future(self._ask(user_id))
            self._asking[user_id] = asking
            asking.add_done_callback(lambda _done: self._asking.pop(user_id, None))
        return cached[1] if cached is not None else None

    async def person(self, user_id: str, *, wait_seconds: float = LOOKUP_TIMEOUT) -> Person | None:
        """The user as Slack describes them, waiting at most `wait_seconds` for a lookup (then: the last known)."""
        if not user_id.startswith(("U", "W")):
            return None  # a token's subject, "system", "auto-approve": not a Slack user
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        asking = self._asking.get(user_id)
        if asking is None:  # one users.info at a time per user, however many ask at once
            asking = asyncio.ensure_future(self._ask(user_id))
            self._asking[user_id] = asking
            asking.add_done_callback(lambda _done: self._asking.pop(user_id, None))
        try:
            return await asyncio.wait_for(asyncio.shield(asking), wait_seconds)
        except TimeoutError:
            return cached[1] if cached is not None else None

    async def _ask(self, user_id: str) -> Person | None:
        try:
            response = await self.client.users_info(user=user_id, include_locale=True)
        except SlackApiError as exc:
            error = exc.response.get("error", "error")
            if error != "user_not_found":
                log.info("users.info for %s failed (%s): the workspace's language and the id are used", user_id, error)
            self._cache[user_id] = (time.monotonic() + UNKNOWN_SECONDS, None)
            return None
        except Exception as exc:  # unreachable, a timeout: the same, and quietly
            log.info("users.info for %s failed (%s)", user_id, type(exc).__name__)
            self._cache[user_id] = (time.monotonic() + UNKNOWN_SECONDS, None)
            return None
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        found = Person(
            user_id=user_id,
            real_name=(profile.get("real_name") or user.get("real_name") or None),
            email=profile.get("email") or None,
            locale=user.get("locale") or None,
        )
        self._cache[user_id] = (time.monotonic() + KNOWN_SECONDS, found)
        return found
