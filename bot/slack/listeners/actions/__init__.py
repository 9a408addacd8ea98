from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.deps import SlackDeps
from bot.slack.listeners.actions.alert_buttons import ALERT_ACTIONS, alert_button_listener
from bot.slack.listeners.actions.rule_buttons import RULE_ACTIONS, edit_button_listener, rule_button_listener


def register(app: AsyncApp, deps: SlackDeps) -> None:
    for action_id in RULE_ACTIONS:
        app.action(action_id)(rule_button_listener(deps, action_id))
    app.action("rule_edit")(edit_button_listener(deps))
    for action_id in ALERT_ACTIONS:
        app.action(action_id)(alert_button_listener(deps, action_id))
