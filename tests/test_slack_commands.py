"""`/autotrain` subcommands driven through signed slash-command requests to the real Bolt app."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from autotrain.models import FeedbackIn, FeedbackStatus, RuleStatus
from autotrain.policy import Actor, Role
from tests.conftest import (
    HEIGHT_FEEDBACK,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    REPORTER,
    WEATHER_FEEDBACK,
    approved_rule,
    read_rule_lines,
    submit,
)
from tests.slack_support import ADMIN_USER, OTHER_USER, SlackSimulator

SLACK_ADMIN = Actor(ADMIN_USER, Role.ADMIN)
THIRD_FEEDBACK = {
    "query": "gợi ý giày đi làm",
    "ai_response": "Bạn thử giày cao gót 12cm nhé",
    "feedback_text": "Đi làm cả ngày mà gợi ý gót 12cm thì đau chân lắm",
    "feedback_type": "suggestion",
}


async def command_reply(slack: SlackSimulator, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
    """The `count`-th reply posted to a command's response_url (waits for the work after the ack)."""
    deadline = time.monotonic() + timeout
    while True:
        replies = slack.command_replies()
        if len(replies) >= count:
            return replies[count - 1]
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} command replies, got {len(replies)}: {replies}")
        await asyncio.sleep(0.02)


def all_text(reply: dict[str, Any]) -> str:
    """The reply's text plus every string inside its blocks."""
    parts = [reply.get("text") or ""]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            parts.append(node)

    walk(reply.get("blocks") or [])
    return "\n".join(parts)


def as_object(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def pending_feedback(slack: SlackSimulator, payloads: list[dict[str, str]]) -> list[str]:
    """Feedback stored as it arrives, without the background generation of `service.submit`."""
    ids = []
    for payload in payloads:
        feedback = await slack.store.create_feedback(
            FeedbackIn(**payload), user_id=OTHER_USER, source="slack", actor_id=OTHER_USER, now=slack.runtime.clock()
        )
        ids.append(feedback.feedback_id)
    return ids


async def deployed_weather_rule(slack: SlackSimulator) -> str:
    rule = await approved_rule(slack.service)
    await slack.service.drain()
    await slack.service.deploy(rule.rule_id, SLACK_ADMIN)
    await slack.service.drain()  # its card update delivered
    return rule.rule_id


# ---------------------------------------------------------------------- help


@pytest.mark.parametrize("text", ["", "help", "  HELP  "])
async def test_help_is_ephemeral(slack: SlackSimulator, text: str) -> None:
    response = await slack.command(text)
    assert response.status_code == 200
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert "/autotrain feedback" in reply["text"]
    assert "/autotrain rollback RUL-1234" in reply["text"]
    assert "I don't know" not in reply["text"]


async def test_unknown_subcommand_gets_help_naming_the_word(slack: SlackSimulator) -> None:
    await slack.command("frobnicate now")
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert "`frobnicate`" in reply["text"]
    assert "/autotrain status" in reply["text"]


async def test_unknown_subcommand_is_escaped(slack: SlackSimulator) -> None:
    await slack.command("<!channel>&co")
    reply = await command_reply(slack)
    assert "&lt;!channel&gt;&amp;co" in reply["text"]
    assert "<!channel>" not in reply["text"]


# ---------------------------------------------------------------------- feedback


async def test_feedback_opens_the_modal_prefilled(slack: SlackSimulator) -> None:
    trigger_id = slack.api.new_trigger_id()
    response = await slack.form(
        {
            "team_id": "T0001",
            "channel_id": "CHELP",
            "user_id": OTHER_USER,
            "user_name": "member",
            "command": "/autotrain",
            "text": "feedback some text",
            "api_app_id": "A0001",
            "response_url": slack.api.response_url("command-feedback"),
            "trigger_id": trigger_id,
        }
    )
    assert response.status_code == 200
    (call,) = await slack.api.wait_for("views.open")
    assert call.params["trigger_id"] == trigger_id
    assert call.response["ok"] is True
    view = as_object(call.params["view"])
    assert view["type"] == "modal"
    assert view["callback_id"] == "feedback_submit"
    inputs = {block["block_id"]: block for block in view["blocks"] if block["type"] == "input"}
    assert list(inputs) == ["query", "ai_response", "feedback_text", "feedback_type"]
    for block_id, block in inputs.items():
        assert block["element"]["action_id"] == block_id
    assert inputs["feedback_text"]["element"]["initial_value"] == "some text"
    assert "initial_value" not in inputs["query"]["element"]
    values = {option["value"] for option in inputs["feedback_type"]["element"]["options"]}
    assert values == {"bug", "suggestion", "praise"}
    assert json.loads(view["private_metadata"]) == {"channel": "CHELP"}
    assert slack.command_replies() == []  # the modal is the answer: no error reply


async def test_feedback_without_text_opens_an_empty_modal(slack: SlackSimulator) -> None:
    await slack.command("feedback")
    (call,) = await slack.api.wait_for("views.open")
    view = as_object(call.params["view"])
    feedback_text = next(block for block in view["blocks"] if block.get("block_id") == "feedback_text")
    assert "initial_value" not in feedback_text["element"]


# ---------------------------------------------------------------------- status and rules


async def test_status_shows_the_counts(slack: SlackSimulator) -> None:
    await submit(slack.service, WEATHER_FEEDBACK)
    await submit(slack.service, {**HEIGHT_FEEDBACK, "feedback_type": "praise"})
    await slack.service.drain()
    await slack.command("status")
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert reply["blocks"], "status answers with blocks"
    text = all_text(reply)
    assert "*Feedback* pending *0* · processing *0* · processed *2*" in text  # praise: processed at once, no rule
    assert "bug *1*" in text and "praise *1*" in text
    assert "*Rules* pending *1* · approved *0*" in text  # RUL-1001 waits for review
    assert "0 in all" in text


async def test_rules_defaults_to_pending(slack: SlackSimulator) -> None:
    await submit(slack.service, WEATHER_FEEDBACK)
    await submit(slack.service, HEIGHT_FEEDBACK)
    await slack.service.drain()
    await slack.service.approve("RUL-1002", SLACK_ADMIN)
    await slack.service.drain()  # its card update delivered
    await slack.command("rules")
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    text = all_text(reply)
    assert "Rules: pending (1)" in text
    assert "RUL-1001" in text
    assert "RUL-1002" not in text


async def test_rules_deployed(slack: SlackSimulator) -> None:
    rule_id = await deployed_weather_rule(slack)
    await submit(slack.service, HEIGHT_FEEDBACK)  # RUL-1002, pending
    await slack.service.drain()
    await slack.command("rules deployed")
    reply = await command_reply(slack)
    text = all_text(reply)
    assert "Rules: deployed (1)" in text
    assert rule_id in text
    assert "RUL-1002" not in text


async def test_rules_with_an_unknown_status_lists_the_statuses(slack: SlackSimulator) -> None:
    await slack.command("rules bogus")
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert "`bogus`" in reply["text"]
    for status in RuleStatus:
        assert f"`{status.value}`" in reply["text"]
    assert "`all`" in reply["text"]


# ---------------------------------------------------------------------- run-all


async def test_run_all_posts_progress_then_a_summary(slack: SlackSimulator) -> None:
    ids = await pending_feedback(slack, [WEATHER_FEEDBACK, HEIGHT_FEEDBACK, THIRD_FEEDBACK])
    await slack.command("run-all", channel="COPS")
    # three rule cards go to the review channel, one progress message to the command's channel
    await slack.api.wait_for("chat.postMessage", 4)
    deadline = time.monotonic() + 5
    while True:
        updates = slack.api.calls_to("chat.update")
        if updates and "finished" in (updates[-1].params.get("text") or ""):
            break
        assert time.monotonic() < deadline, f"no run-all summary: {[u.params for u in updates]}"
        await asyncio.sleep(0.02)

    progress = [call for call in slack.api.calls_to("chat.postMessage") if call.params["channel"] == "COPS"]
    assert len(progress) == 1
    assert "Run-all started by <@UADMIN>" in progress[0].params["text"]
    assert "3 pending feedback" in progress[0].params["text"]
    ts = progress[0].response["ts"]
    updates = slack.api.calls_to("chat.update")
    assert len(updates) >= 2
    assert all(update.params["channel"] == "COPS" and update.params["ts"] == ts for update in updates)
    assert all(update.response["ok"] for update in updates)
    assert any("/ 3 feedback processed" in (update.params.get("text") or "") for update in updates[:-1])
    summary = updates[-1]
    assert "3 feedbacks, 3 rules created" in summary.params["text"]
    summary_text = all_text(summary.params)
    for rule_id in ("RUL-1001", "RUL-1002", "RUL-1003"):
        assert rule_id in summary_text
    for feedback_id in ids:
        feedback = await slack.service.get_feedback(feedback_id)
        assert feedback.status is FeedbackStatus.PROCESSED
    assert slack.command_replies() == []


async def test_run_all_falls_back_to_a_dm_when_the_bot_is_not_in_the_channel(slack: SlackSimulator) -> None:
    await pending_feedback(slack, [WEATHER_FEEDBACK])
    slack.api.fail_next("chat.postMessage", status=200, error="not_in_channel")
    await slack.command("run-all", channel="CPRIVATE")
    deadline = time.monotonic() + 5
    while not any("finished" in (u.params.get("text") or "") for u in slack.api.calls_to("chat.update")):
        assert time.monotonic() < deadline, "no run-all summary"
        await asyncio.sleep(0.02)
    posts = slack.api.calls_to("chat.postMessage")
    assert posts[0].params["channel"] == "CPRIVATE"
    assert posts[0].response["error"] == "not_in_channel"
    assert posts[1].params["channel"] == ADMIN_USER
    assert "Run-all started" in posts[1].params["text"]
    dm_ts = posts[1].response["ts"]
    updates = slack.api.calls_to("chat.update")
    assert updates and all(u.params["channel"] == ADMIN_USER and u.params["ts"] == dm_ts for u in updates)
    assert "1 feedback, 1 rule created" in updates[-1].params["text"]
    assert (await slack.service.get_feedback("FB-1001")).status is FeedbackStatus.PROCESSED


async def test_run_all_by_a_non_admin_is_refused(slack: SlackSimulator) -> None:
    ids = await pending_feedback(slack, [WEATHER_FEEDBACK, HEIGHT_FEEDBACK])
    await slack.command("run-all", user=OTHER_USER)
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert "Only Auto-Train admins" in reply["text"]
    assert "<@UADMIN>" in reply["text"]
    await asyncio.sleep(0.2)
    assert slack.api.calls_to("chat.postMessage") == []
    assert slack.api.calls_to("chat.update") == []
    for feedback_id in ids:
        assert (await slack.service.get_feedback(feedback_id)).status is FeedbackStatus.PENDING
    assert (await slack.service.list_rules()).total == 0


# ---------------------------------------------------------------------- rollback


async def test_rollback_by_an_admin(slack: SlackSimulator, rules_dir: Path) -> None:
    before = read_rule_lines(rules_dir)
    assert OLD_WEATHER_RULE in before
    rule_id = await deployed_weather_rule(slack)
    assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)
    await slack.command(f"rollback {rule_id.lower()}")
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert f"{rule_id} rolled back" in reply["text"]
    assert "fashion_rules.json" in reply["text"]
    rule = await slack.service.get_rule(rule_id)
    assert rule.status is RuleStatus.ROLLED_BACK
    assert rule.rolled_back_by == ADMIN_USER
    assert read_rule_lines(rules_dir) == before
    deployments = await slack.service.list_deployments(rule_id=rule_id)
    assert deployments.total == 2


@pytest.mark.parametrize("argument", ["", "RUL-", "FB-1001", "RUL-12", "RUL-1001; rm -rf"])
async def test_rollback_with_a_bad_id_shows_usage(slack: SlackSimulator, argument: str) -> None:
    await slack.command(f"rollback {argument}")
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert reply["text"] == "Usage: `/autotrain rollback RUL-1234`"


async def test_rollback_of_an_unknown_rule(slack: SlackSimulator) -> None:
    await slack.command("rollback RUL-9999")
    reply = await command_reply(slack)
    assert "No rule RUL-9999" in reply["text"]
    assert "Traceback" not in reply["text"]


async def test_rollback_by_a_non_admin_changes_nothing(slack: SlackSimulator, rules_dir: Path) -> None:
    rule_id = await deployed_weather_rule(slack)
    deployed = read_rule_lines(rules_dir)
    await slack.command(f"rollback {rule_id}", user=OTHER_USER)
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert "Only Auto-Train admins" in reply["text"]
    assert (await slack.service.get_rule(rule_id)).status is RuleStatus.DEPLOYED
    assert read_rule_lines(rules_dir) == deployed
    assert (await slack.service.list_deployments(rule_id=rule_id)).total == 1


async def test_rollback_of_a_pending_rule_is_refused_politely(slack: SlackSimulator, rules_dir: Path) -> None:
    before = read_rule_lines(rules_dir)
    await submit(slack.service, WEATHER_FEEDBACK, REPORTER)
    await slack.service.drain()
    await slack.command("rollback RUL-1001")
    reply = await command_reply(slack)
    assert reply["response_type"] == "ephemeral"
    assert "Nothing was changed" in reply["text"]
    assert "RUL-1001" in reply["text"]
    assert "Traceback" not in reply["text"] and "Something went wrong" not in reply["text"]
    assert (await slack.service.get_rule("RUL-1001")).status is RuleStatus.PENDING
    assert read_rule_lines(rules_dir) == before


async def test_run_all_with_nothing_pending_posts_one_message(slack: SlackSimulator) -> None:
    await slack.command("run-all", channel="COPS")
    deadline = time.monotonic() + 5
    while True:
        posts = [call for call in slack.api.calls_to("chat.postMessage") if call.params["channel"] == "COPS"]
        updates = slack.api.calls_to("chat.update")
        final = [*(p.params.get("text") or "" for p in posts), *(u.params.get("text") or "" for u in updates)]
        if any("no pending feedback" in text for text in final):
            break
        assert time.monotonic() < deadline, f"no run-all summary: {final}"
        await asyncio.sleep(0.02)
    assert len(posts) == 1
    assert all(u.params["channel"] == "COPS" and u.params["ts"] == posts[0].response["ts"] for u in updates)
    assert slack.command_replies() == []
