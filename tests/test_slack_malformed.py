"""Signed Slack payloads that are not what Slack sends (issue 11): a malformed but correctly signed request is
answered 200 (Bolt's ack) or a polite reply, never a 500 with a stack trace. Driven through the real Bolt app."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from autotrain.policy import RuleAction
from bot.slack.blocks import RULE_ACTION_IDS
from tests.slack_support import ADMIN_USER, REVIEW_CHANNEL, SlackSimulator


def block_actions(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": "T0001", "domain": "fake"},
        "user": {"id": ADMIN_USER, "username": "uadmin", "team_id": "T0001"},
        "api_app_id": "A0001",
        "token": "legacy",
        "trigger_id": "trigger-1",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": REVIEW_CHANNEL},
        "channel": {"id": REVIEW_CHANNEL, "name": "review"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": "card"},
        "actions": [
            {
                "type": "button",
                "action_id": RULE_ACTION_IDS[RuleAction.APPROVE],
                "block_id": "rule_actions",
                "value": "RUL-1001",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def view_submission(callback_id: str, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": {"id": "T0001", "domain": "fake"},
        "user": {"id": ADMIN_USER, "username": "uadmin", "team_id": "T0001"},
        "api_app_id": "A0001",
        "token": "legacy",
        "trigger_id": "trigger-2",
        "view": {
            "id": "V0001",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": json.dumps({"channel": "CGENERAL"}),
            "hash": "h1",
            "state": {
                "values": {
                    "query": {"query": {"type": "plain_text_input", "value": "áo mưa"}},
                    "feedback_text": {"feedback_text": {"type": "plain_text_input", "value": "gợi ý sai"}},
                    "feedback_type": {"feedback_type": {"type": "static_select", "selected_option": {"value": "bug"}}},
                }
            },
        },
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


BLOCK_ACTIONS = {
    "no actions": block_actions(actions=[]),
    "actions not a list": block_actions(actions={"action_id": "approve_rule"}),
    "action without action_id": block_actions(actions=[{"type": "button", "value": "RUL-1001"}]),
    "action not an object": block_actions(actions=["approve_rule"]),
    "no user": block_actions(user=None),
    "user without id": block_actions(user={"name": "x"}),
    "user not an object": block_actions(user="UADMIN"),
    # Bolt reads `"id" in channel` while it builds the request, before any middleware or listener
    "channel not an object": block_actions(channel=7),
    "container not an object": block_actions(container=REVIEW_CHANNEL),
}

VIEWS = {
    "feedback form without user": view_submission("feedback_submit", user=None),
    "feedback form, user without id": view_submission("feedback_submit", user={"name": "x"}),
    "edit form without user": view_submission("rule_edit_submit", user=None),
    "no view": view_submission("feedback_submit", view=None),
    "view without callback_id": view_submission("feedback_submit", view={"id": "V1", "state": {}}),
    "view state not an object": view_submission(
        "feedback_submit", view={"callback_id": "feedback_submit", "state": "x", "private_metadata": 7}
    ),
}


@pytest.mark.parametrize("payload", BLOCK_ACTIONS.values(), ids=BLOCK_ACTIONS.keys())
async def test_malformed_block_actions_are_not_a_server_error(slack: SlackSimulator, payload: dict[str, Any]) -> None:
    response = await slack.interaction(payload)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("payload", VIEWS.values(), ids=VIEWS.keys())
async def test_malformed_view_submissions_are_not_a_server_error(
    slack: SlackSimulator, payload: dict[str, Any]
) -> None:
    response = await slack.interaction(payload)
    assert response.status_code == 200, response.text


async def test_a_block_action_without_a_user_changes_nothing(slack: SlackSimulator) -> None:
    """A click that Bolt cannot attribute to anyone is dropped: no rule is touched, no reply is posted."""
    response = await slack.interaction(block_actions(user=None))
    assert response.status_code == 200
    assert not [call for call in slack.api.calls if call.method.startswith("chat.")]
    # the shape check lets real payloads through: a click on an unknown rule gets the polite private reply
    response = await slack.interaction(block_actions())
    assert response.status_code == 200
    for _ in range(250):  # the reply follows the ack (within moments; longer on a loaded machine)
        if [call for call in slack.api.calls if call.method in ("chat.postEphemeral", "chat.postMessage")]:
            break
        await asyncio.sleep(0.02)
    assert [call for call in slack.api.calls if call.method in ("chat.postEphemeral", "chat.postMessage")]
