from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.deps import SlackDeps
from bot.slack.listeners.events.app_home_opened import app_home_opened_listener


def register(app: AsyncApp, deps: SlackDeps) -> None:
    app.event("app_home_opened")(app_home_opened_listener(deps))
