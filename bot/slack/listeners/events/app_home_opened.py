"""App Home: the dashboard is published when a user opens the Home tab, in their language."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.slack.deps import SlackDeps


def app_home_opened_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    async def handle(event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            user_id = event["user"]
            await deps.home.publish(user_id, await deps.language_for(user_id))

    return handle
