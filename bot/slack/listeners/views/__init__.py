from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.blocks import EDIT_CALLBACK, FEEDBACK_CALLBACK
from bot.slack.deps import SlackDeps
from bot.slack.listeners.views.feedback_submit import feedback_submit_listener
from bot.slack.listeners.views.rule_edit_submit import rule_edit_submit_listener


def register(app: AsyncApp, deps: SlackDeps) -> None:
    app.view(FEEDBACK_CALLBACK)(feedback_submit_listener(deps))
    app.view(EDIT_CALLBACK)(rule_edit_submit_listener(deps))
