"""Slack listeners, grouped by kind; each group has a `register(app, deps)`."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.deps import SlackDeps
from bot.slack.listeners import actions, commands, events, shortcuts, views


def register_listeners(app: AsyncApp, deps: SlackDeps) -> None:
    commands.register(app, deps)
    shortcuts.register(app, deps)
    actions.register(app, deps)
    views.register(app, deps)
    events.register(app, deps)
