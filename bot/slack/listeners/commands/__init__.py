from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.deps import SlackDeps
from bot.slack.listeners.commands.autotrain_command import autotrain_command_listener


def register(app: AsyncApp, deps: SlackDeps) -> None:
    app.command("/autotrain")(autotrain_command_listener(deps))
