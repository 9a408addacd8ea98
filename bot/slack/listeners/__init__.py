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


# Interactions whose listeners read these fields; Bolt itself indexes `actions[0]` and `user.id`.
_NEEDS_USER = frozenset({"block_actions", "view_submission", "view_closed", "message_action", "shortcut"})


def malformed_reason(payload: object) -> str | None:
    """Why a (signed) interaction payload is not one Slack would send, or None when its shape is usable.

    Checked before Bolt sees the payload: Bolt and the listeners index `actions[0]`, `user["id"]` and
    `view["state"]` directly, and a signed but malformed payload must be acknowledged, not answered 500.
    """
    if not isinstance(payload, dict):
        return "the payload is not an object"
    kind = payload.get("type")
    user = payload.get("user")
    if kind in _NEEDS_USER and not (isinstance(user, dict) and isinstance(user.get("id"), str)):
        return "no user id"
    for name in ("channel", "container", "team", "message"):
        if payload.get(name) is not None and not isinstance(payload[name], dict):
            return f"{name} is not an object"
    if kind == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions:
            return "no actions"
        if not all(isinstance(action, dict) and isinstance(action.get("action_id"), str) for action in actions):
            return "an action without an action_id"
    if kind in ("view_submission", "view_closed"):
        view = payload.get("view")
        if not isinstance(view, dict) or not isinstance(view.get("callback_id"), str):
            return "no view callback_id"
        state = view.get("state", {})
        if not isinstance(state, dict) or not isinstance(state.get("values", {}), dict):
            return "the view's state is not an object"
        if not isinstance(view.get("private_metadata", ""), str):
            return "the view's private_metadata is not text"
    return None
