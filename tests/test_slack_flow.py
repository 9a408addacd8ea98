"""Smoke: feedback through the modal, a card in the review channel, approve and deploy from the card."""

from __future__ import annotations

from tests.conftest import NEW_WEATHER_RULE, read_rule_lines
from tests.slack_support import REVIEW_CHANNEL, SlackSimulator


async def test_feedback_to_card_to_deploy(slack: SlackSimulator, rules_dir) -> None:
    response = await slack.submit_feedback(
        query="tìm áo khoác cho trời 35 độ", feedback_text="Trời nóng quá, AI còn tư vấn áo khoác"
    )
    assert response.status_code == 200
    posts = await slack.api.wait_for("chat.postMessage")
    card = posts[0].params
    assert card["channel"] == REVIEW_CHANNEL
    buttons = [e["action_id"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["rule_approve", "rule_edit", "rule_reject"]
    await slack.click("rule_approve", "RUL-1001")
    await slack.api.wait_for("chat.update")
    await slack.click("rule_deploy", "RUL-1001")
    await slack.api.wait_for("chat.update", 2)
    assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)
