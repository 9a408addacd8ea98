"""The `autotrain_report` message shortcut: the feedback modal opens at once with the message as the AI
response; for a thread reply the query is filled in from the thread's parent when the bot can read it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.slack_support import (
    OTHER_USER,
    SlackSimulator,
    ok,
)

CHANNEL = "CBOT"
PARENT_TS = "1700000050.000100"
REPLY_TS = "1700000060.000200"


def inputs(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}


async def test_shortcut_on_a_top_level_message_opens_the_feedback_modal(slack: SlackSimulator) -> None:
    text = "Mình gợi ý áo khoác nỉ này, rất hợp trời 35 độ!"
    response = await slack.shortcut(text, ts="1700000100.000100")
    assert response.status_code == 200

    opened = (await slack.api.wait_for("views.open"))[0]
    assert ok(opened)
    view = opened.params["view"]
    assert view["type"] == "modal"
    assert view["callback_id"] == "feedback_submit"
    fields = inputs(view)
    assert set(fields) == {"query", "ai_response", "feedback_text", "feedback_type"}
    assert fields["ai_response"]["initial_value"] == text
    assert not fields["query"].get("initial_value")
    assert fields["feedback_type"]["action_id"] == "feedback_type"
    metadata = json.loads(view["private_metadata"])
    assert metadata["channel"] == CHANNEL
    assert metadata["message_ts"] == "1700000100.000100"

    await asyncio.sleep(0.2)
    assert slack.api.calls_to("conversations.replies") == []  # not in a thread: nothing to look up
    assert slack.api.calls_to("views.update") == []


async def test_shortcut_on_a_thread_parent_is_treated_as_top_level(slack: SlackSimulator) -> None:
    await slack.shortcut("câu trả lời gốc", ts=PARENT_TS, thread_ts=PARENT_TS)
    await slack.api.wait_for("views.open")
    await asyncio.sleep(0.2)
    assert slack.api.calls_to("conversations.replies") == []
    assert slack.api.calls_to("views.update") == []


async def test_shortcut_on_a_thread_reply_fills_the_query_from_the_parent(slack: SlackSimulator) -> None:
    slack.api.set_replies(CHANNEL, PARENT_TS, [{"text": "parent question", "ts": PARENT_TS}])
    reply = "Bạn thử đầm maxi dài này nhé"
    await slack.shortcut(reply, ts=REPLY_TS, thread_ts=PARENT_TS)

    opened = (await slack.api.wait_for("views.open"))[0]
    assert ok(opened)
    # the modal opens first (trigger_id lives 3 s), without waiting for the thread
    assert not inputs(opened.params["view"])["query"].get("initial_value")

    lookups = await slack.api.wait_for("conversations.replies")
    assert lookups[0].params["channel"] == CHANNEL
    assert lookups[0].params["ts"] == PARENT_TS

    update = (await slack.api.wait_for("views.update"))[0]
    assert ok(update)
    assert update.params["view_id"] == opened.response["view"]["id"]
    assert update.params["hash"] == opened.response["view"]["hash"]
    assert update.at >= opened.at
    view = update.params["view"]
    assert view["callback_id"] == "feedback_submit"
    fields = inputs(view)
    assert fields["query"]["initial_value"] == "parent question"
    assert fields["ai_response"]["initial_value"] == reply
    assert json.loads(view["private_metadata"]) == json.loads(opened.params["view"]["private_metadata"])


async def test_unreadable_thread_leaves_the_query_empty_without_an_error(slack: SlackSimulator) -> None:
    slack.api.fail_next("conversations.replies", status=200, error="not_in_channel")
    await slack.shortcut("một câu trả lời trong thread", ts=REPLY_TS, thread_ts=PARENT_TS)
    await slack.api.wait_for("views.open")
    lookups = await slack.api.wait_for("conversations.replies")
    assert lookups[0].response["error"] == "not_in_channel"
    await asyncio.sleep(0.3)
    assert slack.api.calls_to("views.update") == []
    assert slack.api.calls_to("chat.postEphemeral") == []
    assert slack.api.calls_to("chat.postMessage") == []


async def test_thread_without_a_readable_parent_text_leaves_the_query_empty(slack: SlackSimulator) -> None:
    slack.api.set_replies(CHANNEL, PARENT_TS, [])  # e.g. the parent was deleted
    await slack.shortcut("trả lời", ts=REPLY_TS, thread_ts=PARENT_TS)
    await slack.api.wait_for("conversations.replies")
    await asyncio.sleep(0.3)
    assert slack.api.calls_to("views.update") == []


async def test_long_message_is_clipped_to_fit_the_input(slack: SlackSimulator) -> None:
    long_text = "Áo khoác nỉ dày. " * 300  # 5,100 chars
    assert len(long_text) > 3000
    await slack.shortcut(long_text, ts="1700000200.000100")
    opened = (await slack.api.wait_for("views.open"))[0]
    assert ok(opened), opened.response
    element = inputs(opened.params["view"])["ai_response"]
    initial = element["initial_value"]
    assert len(initial) <= 3000
    assert len(initial) <= element.get("max_length", 3000)
    assert len(initial) > 2900  # clipped, not dropped
    assert long_text.startswith(initial.rstrip("…").rstrip())
    assert slack.api.violations == []


async def test_long_thread_parent_is_clipped_to_the_query_limit(slack: SlackSimulator) -> None:
    parent = "Tìm giúp mình áo cho trời nóng " * 100  # 3,100 chars; a query holds at most 2,000
    slack.api.set_replies(CHANNEL, PARENT_TS, [{"text": parent, "ts": PARENT_TS}])
    await slack.shortcut("Áo khoác nỉ nhé", ts=REPLY_TS, thread_ts=PARENT_TS)
    update = (await slack.api.wait_for("views.update"))[0]
    assert ok(update), update.response
    query = inputs(update.params["view"])["query"]
    assert len(query["initial_value"]) <= min(2000, query.get("max_length", 3000))
    assert slack.api.violations == []


async def test_report_from_the_shortcut_modal_is_stored_with_its_message(slack: SlackSimulator) -> None:
    """The whole path: shortcut → modal → submit with the modal's private_metadata → stored feedback."""
    slack.api.set_replies(CHANNEL, PARENT_TS, [{"text": "tìm áo khoác cho trời 35 độ", "ts": PARENT_TS}])
    reply = "Mình gợi ý áo khoác nỉ này..."
    await slack.shortcut(reply, ts=REPLY_TS, thread_ts=PARENT_TS, user=OTHER_USER)
    update = (await slack.api.wait_for("views.update"))[0]
    view = update.params["view"]
    fields = inputs(view)
    values = {
        "query": {"query": {"type": "plain_text_input", "value": fields["query"]["initial_value"]}},
        "ai_response": {"ai_response": {"type": "plain_text_input", "value": fields["ai_response"]["initial_value"]}},
        "feedback_text": {"feedback_text": {"type": "plain_text_input", "value": "Trời nóng quá, AI còn tư vấn"}},
        "feedback_type": {"feedback_type": {"type": "static_select", "selected_option": {"value": "bug"}}},
    }
    response = await slack.submit_view(
        "feedback_submit", values, user=OTHER_USER, private_metadata=view["private_metadata"]
    )
    assert response.status_code == 200
    confirmation = (await slack.api.wait_for("chat.postEphemeral"))[0]
    assert confirmation.params["channel"] == CHANNEL
    assert confirmation.params["user"] == OTHER_USER
    feedback = await slack.service.get_feedback("FB-1001")
    assert feedback.ai_response == reply
    assert feedback.query == "tìm áo khoác cho trời 35 độ"
    assert feedback.user_id == OTHER_USER
    assert feedback.source == "slack"
    assert feedback.metadata is not None
    assert feedback.metadata.get("slack_channel") == CHANNEL
    assert feedback.metadata.get("slack_message_ts") == REPLY_TS
