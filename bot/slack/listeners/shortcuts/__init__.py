from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.deps import SlackDeps
from bot.slack.listeners.shortcuts.report_message import report_message_listener


def register(app: AsyncApp, deps: SlackDeps) -> None:
    app.shortcut("autotrain_report")(report_message_listener(deps))
