"""Modal submissions (view_submission): the feedback form and the rule edit form, with Slack's
`response_action: errors` answer for invalid input."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from autotrain.models import FeedbackIn, FeedbackStatus, RuleStatus
from tests.conftest import ADMIN, NEW_WEATHER_RULE, OLD_WEATHER_RULE, REPORTER, WEATHER_FEEDBACK
from tests.fakes.slack_api import SlackCall
from tests.slack_support import (
    ADMIN_USER,
    OTHER_USER,
    REVIEW_CHANNEL,
    SlackSimulator,
    ok,
)

# ---------------------------------------------------------------------- helpers


async def wait_until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def messages_to(slack: SlackSimulator, channel: str) -> list[SlackCall]:
    return [c for c in slack.api.calls_to("chat.postMessage") if c.params.get("channel") == channel]


def assert_errors(response: httpx.Response, *block_ids: str) -> dict[str, str]:
    assert response.status_code == 200
    body = response.json()
    assert body["response_action"] == "errors"
    errors = body["errors"]
    assert isinstance(errors, dict)
    for block_id in block_ids:
        assert block_id in errors, f"no error on {block_id}: {errors}"
        assert isinstance(errors[block_id], str) and errors[block_id]
    return errors


def edit_values(new_rule: str | None, module: str = "fashion_rules.json", old_rule: str | None = None) -> dict:
    return {
        "new_rule": {"new_rule": {"type": "plain_text_input", "value": new_rule}},
        "module_name": {
            "module_name": {
                "type": "static_select",
                "selected_option": {"value": module, "text": {"type": "plain_text", "text": module}},
            }
        },
        "old_rule": {"old_rule": {"type": "plain_text_input", "value": old_rule}},
    }


async def pending_rule(slack: SlackSimulator, payload: dict[str, Any] | None = None) -> str:
    feedback = await slack.service.submit(FeedbackIn(**(payload or WEATHER_FEEDBACK)), REPORTER)
    await slack.service.drain()
    rule = await slack.store.get_rule_for_feedback(feedback.feedback_id)
    assert rule is not None
    return rule.rule_id


# ---------------------------------------------------------------------- feedback form


async def test_feedback_submission_is_stored_as_the_slack_user_and_confirmed(slack: SlackSimulator) -> None:
    response = await slack.submit_feedback(
        query=WEATHER_FEEDBACK["query"],
        ai_response=WEATHER_FEEDBACK["ai_response"],
        feedback_text=WEATHER_FEEDBACK["feedback_text"],
        feedback_type="suggestion",
        user=OTHER_USER,
        channel="CFORM",
    )
    assert response.status_code == 200
    assert not response.content or "response_action" not in response.json()

    confirmations = await slack.api.wait_for("chat.postEphemeral")
    confirmation = confirmations[0]
    assert ok(confirmation)
    assert confirmation.params["channel"] == "CFORM"
    assert confirmation.params["user"] == OTHER_USER
    assert "FB-1001" in confirmation.params["text"]

    feedback = await slack.service.get_feedback("FB-1001")
    assert feedback.user_id == OTHER_USER
    assert feedback.source == "slack"
    assert feedback.query == WEATHER_FEEDBACK["query"]
    assert feedback.ai_response == WEATHER_FEEDBACK["ai_response"]
    assert feedback.feedback_text == WEATHER_FEEDBACK["feedback_text"]
    assert feedback.feedback_type.value == "suggestion"
    assert (feedback.metadata or {}).get("slack_channel") == "CFORM"

    # auto-generate is on: the rule gets a card in the review channel
    await slack.api.wait_for("chat.postMessage")
    await wait_until(lambda: bool(messages_to(slack, REVIEW_CHANNEL)), what="a card")
    assert messages_to(slack, OTHER_USER) == []  # the ephemeral worked: no DM as well


async def test_confirmation_falls_back_to_a_dm_when_the_ephemeral_fails(slack: SlackSimulator) -> None:
    slack.api.fail_next("chat.postEphemeral", status=200, error="channel_not_found")
    response = await slack.submit_feedback(
        query="gợi ý đầm đi tiệc", feedback_text="Mình dáng lùn, mặc maxi bị chìm", user=OTHER_USER, channel="CGONE"
    )
    assert response.status_code == 200
    await wait_until(lambda: bool(messages_to(slack, OTHER_USER)), what="a DM to the reporter")
    dm = messages_to(slack, OTHER_USER)
    assert len(dm) == 1
    assert ok(dm[0])
    assert "FB-1001" in dm[0].params["text"]
    ephemeral = slack.api.calls_to("chat.postEphemeral")
    assert len(ephemeral) == 1 and ephemeral[0].response["error"] == "channel_not_found"
    assert (await slack.service.get_feedback("FB-1001")).user_id == OTHER_USER


async def test_empty_feedback_text_is_answered_with_field_errors_and_not_stored(slack: SlackSimulator) -> None:
    response = await slack.submit_feedback(query="tìm áo", feedback_text="")
    errors = assert_errors(response, "feedback_text")
    assert set(errors) <= {"query", "ai_response", "feedback_text", "feedback_type"}

    response = await slack.submit_feedback(query="tìm áo", feedback_text="   \n  ")
    assert_errors(response, "feedback_text")

    await asyncio.sleep(0.2)
    assert (await slack.service.list_feedback()).total == 0
    assert slack.api.calls_to("chat.postEphemeral") == []
    assert slack.api.calls_to("chat.postMessage") == []


async def test_query_over_2000_chars_is_answered_with_field_errors_and_not_stored(slack: SlackSimulator) -> None:
    response = await slack.submit_feedback(query="a" * 2001, feedback_text="AI trả lời sai")
    errors = assert_errors(response, "query")
    assert "feedback_text" not in errors

    # exactly at the limit is fine
    response = await slack.submit_feedback(query="a" * 2000, feedback_text="AI trả lời sai")
    assert response.status_code == 200
    assert not response.content or "response_action" not in response.json()
    await slack.api.wait_for("chat.postEphemeral")
    page = await slack.service.list_feedback()
    assert page.total == 1 and len(page.items[0].query) == 2000


async def test_missing_feedback_type_is_a_field_error(slack: SlackSimulator) -> None:
    values = {
        "query": {"query": {"type": "plain_text_input", "value": "tìm áo"}},
        "ai_response": {"ai_response": {"type": "plain_text_input", "value": None}},
        "feedback_text": {"feedback_text": {"type": "plain_text_input", "value": "sai"}},
        "feedback_type": {"feedback_type": {"type": "static_select", "selected_option": None}},
    }
    response = await slack.submit_view(
        "feedback_submit", values, user=OTHER_USER, private_metadata=json.dumps({"channel": "C1"})
    )
    assert_errors(response, "feedback_type")
    await asyncio.sleep(0.1)
    assert (await slack.service.list_feedback()).total == 0


# ---------------------------------------------------------------------- edit form


async def test_edit_by_a_non_admin_is_refused_on_the_form(slack: SlackSimulator) -> None:
    rule_id = await pending_rule(slack)
    response = await slack.submit_view(
        "rule_edit_submit",
        edit_values("- Một quy tắc khác hẳn", old_rule=OLD_WEATHER_RULE),
        user=OTHER_USER,
        private_metadata=rule_id,
    )
    errors = assert_errors(response, "new_rule")
    assert "admin" in errors["new_rule"].lower()
    rule = await slack.service.get_rule(rule_id)
    assert rule.new_rule == NEW_WEATHER_RULE
    assert rule.edited_by is None
    assert slack.api.calls_to("chat.update") == []
    audit = await slack.store.list_audit(subject_id=rule_id, limit=50, offset=0)
    assert "rule_edited" not in [entry.action for entry in audit.items]


async def test_edit_of_a_rule_no_longer_pending_is_refused(slack: SlackSimulator) -> None:
    rule_id = await pending_rule(slack)
    await slack.service.approve(rule_id, ADMIN)  # approved while the modal was open
    await slack.service.drain()  # its card update delivered
    updates = len(slack.api.calls_to("chat.update"))
    response = await slack.submit_view(
        "rule_edit_submit", edit_values("- Một quy tắc khác hẳn"), user=ADMIN_USER, private_metadata=rule_id
    )
    errors = assert_errors(response, "new_rule")
    assert "approved" in errors["new_rule"]
    assert len(errors["new_rule"]) <= 150
    rule = await slack.service.get_rule(rule_id)
    assert rule.status is RuleStatus.APPROVED and rule.new_rule == NEW_WEATHER_RULE and rule.edited_by is None
    assert len(slack.api.calls_to("chat.update")) == updates


async def test_edit_with_an_empty_new_rule_is_refused(slack: SlackSimulator) -> None:
    rule_id = await pending_rule(slack)
    for empty in (None, "", "- ", "   "):
        response = await slack.submit_view(
            "rule_edit_submit", edit_values(empty), user=ADMIN_USER, private_metadata=rule_id
        )
        assert_errors(response, "new_rule")
    rule = await slack.service.get_rule(rule_id)
    assert rule.new_rule == NEW_WEATHER_RULE and rule.edited_by is None
    assert slack.api.calls_to("chat.update") == []


async def test_edit_to_a_module_outside_the_allowed_list_is_refused(slack: SlackSimulator) -> None:
    """The select only offers allowed files; a forged value is still checked by the service."""
    rule_id = await pending_rule(slack)
    response = await slack.submit_view(
        "rule_edit_submit",
        edit_values("- Quy tắc mới", module="../../etc/passwd"),
        user=ADMIN_USER,
        private_metadata=rule_id,
    )
    errors = assert_errors(response, "module_name")  # on the field it is about
    assert "not an allowed rule file" in errors["module_name"]
    rule = await slack.service.get_rule(rule_id)
    assert rule.module_name == "fashion_rules.json" and rule.new_rule == NEW_WEATHER_RULE


async def test_edit_of_an_unknown_rule_is_a_form_error(slack: SlackSimulator) -> None:
    response = await slack.submit_view(
        "rule_edit_submit", edit_values("- Quy tắc mới"), user=ADMIN_USER, private_metadata="RUL-9999"
    )
    errors = assert_errors(response, "new_rule")
    assert "RUL-9999" in errors["new_rule"]


async def test_edit_by_an_admin_changes_module_and_clears_old_rule(slack: SlackSimulator) -> None:
    rule_id = await pending_rule(slack)
    response = await slack.submit_view(
        "rule_edit_submit",
        edit_values("Trả lời ngắn gọn, tối đa 5 câu", module="prompt_v2.txt", old_rule=None),
        user=ADMIN_USER,
        private_metadata=rule_id,
    )
    assert response.status_code == 200
    assert not response.content or "response_action" not in response.json()
    rule = await slack.service.get_rule(rule_id)
    assert rule.module_name == "prompt_v2.txt"
    assert rule.new_rule == "- Trả lời ngắn gọn, tối đa 5 câu"
    assert rule.old_rule is None
    assert rule.edited_by == ADMIN_USER
    feedback = await slack.service.get_feedback(rule.feedback_id)
    assert feedback.status is FeedbackStatus.PROCESSED
    update = (await slack.api.wait_for("chat.update"))[-1]
    fields = "\n".join(f["text"] for b in update.params["blocks"] for f in b.get("fields") or [])
    assert "prompt_v2.txt" in fields
