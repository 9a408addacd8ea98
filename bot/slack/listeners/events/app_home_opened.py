"""App Home: the dashboard is published when a user opens the Home tab."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.slack.deps import SlackDeps


def app_home_opened_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    async def handle(event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            await deps.home.publish(event["user"])

    return handle
