from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from autotrain.policy import RuleAction
from bot.slack.blocks import APPROVE_FLAGGED_ACTION_ID, RULE_ACTION_IDS, RULES_NEXT_PAGE_ACTION_ID
from bot.slack.deps import SlackDeps
from bot.slack.listeners.actions.alert_buttons import ALERT_ACTIONS, alert_button_listener
from bot.slack.listeners.actions.rule_buttons import edit_button_listener, rule_button_listener, show_replays_listener
from bot.slack.listeners.actions.rules_paging import next_page_listener


def register(app: AsyncApp, deps: SlackDeps) -> None:
    for rule_action, action_id in RULE_ACTION_IDS.items():
        if rule_action is RuleAction.EDIT:
            app.action(action_id)(edit_button_listener(deps))
        else:
            app.action(action_id)(rule_button_listener(deps, rule_action))
    app.action(APPROVE_FLAGGED_ACTION_ID)(rule_button_listener(deps, RuleAction.APPROVE, acknowledge_flags=True))
    app.action("rule_show_replays")(show_replays_listener(deps))
    app.action(RULES_NEXT_PAGE_ACTION_ID)(next_page_listener(deps))
    for action_id in ALERT_ACTIONS:
        app.action(action_id)(alert_button_listener(deps, action_id))
