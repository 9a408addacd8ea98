"""Request verification, double clicks, Slack-off mode and escaping of user text on cards."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from autotrain.models import RuleStatus
from bot.api import create_app
from tests.conftest import NEW_WEATHER_RULE, approved_rule, make_settings, read_rule_lines
from tests.slack_support import REVIEW_CHANNEL, SIGNING_SECRET, SlackSimulator, sign

EVIL = "<!channel> <@U123> & <https://evil.example|click>"


def feedback_view_body() -> str:
    values = {
        "query": {"query": {"type": "plain_text_input", "value": "áo khoác trời 35 độ"}},
        "ai_response": {"ai_response": {"type": "plain_text_input", "value": None}},
        "feedback_text": {"feedback_text": {"type": "plain_text_input", "value": "trời nóng mà gợi ý áo khoác"}},
        "feedback_type": {"feedback_type": {"type": "static_select", "selected_option": {"value": "bug"}}},
    }
    payload = {
        "type": "view_submission",
        "team": {"id": "T0001", "domain": "fake"},
        "user": {"id": "UMEMBER", "username": "umember", "team_id": "T0001"},
        "api_app_id": "A0001",
        "token": "legacy",
        "trigger_id": "1.2.3",
        "view": {
            "id": "V0001",
            "type": "modal",
            "callback_id": "feedback_submit",
            "private_metadata": json.dumps({"channel": "CGENERAL"}),
            "hash": "h1",
            "state": {"values": values},
        },
    }
    return urlencode({"payload": json.dumps(payload)})


FORM = "application/x-www-form-urlencoded"


async def assert_no_effect(slack: SlackSimulator) -> None:
    await asyncio.sleep(0.3)  # time for a listener to have run, had one been called
    assert (await slack.service.list_feedback()).total == 0
    assert slack.api.calls == []


# ---------------------------------------------------------------------- request verification


async def test_wrong_signature_is_rejected(slack: SlackSimulator) -> None:
    body = feedback_view_body()
    timestamp = int(time.time())
    forged = sign(body, timestamp, secret="not-the-signing-secret")
    response = await slack.send(body, FORM, timestamp=timestamp, signature=forged)
    assert response.status_code == 401
    await assert_no_effect(slack)


async def test_tampered_body_is_rejected(slack: SlackSimulator) -> None:
    body = feedback_view_body()
    timestamp = int(time.time())
    signature = sign(body.replace("CGENERAL", "CTAMPER"), timestamp)
    response = await slack.send(body, FORM, timestamp=timestamp, signature=signature)
    assert response.status_code == 401
    await assert_no_effect(slack)


async def test_stale_timestamp_is_rejected(slack: SlackSimulator) -> None:
    body = feedback_view_body()
    stale = int(time.time()) - 6 * 60
    response = await slack.send(body, FORM, timestamp=stale, signature=sign(body, stale, SIGNING_SECRET))
    assert response.status_code == 401
    await assert_no_effect(slack)


async def test_missing_signature_is_rejected(slack: SlackSimulator) -> None:
    body = feedback_view_body()
    response = await slack.http.post(
        "/slack/events",
        content=body.encode(),
        headers={"Content-Type": FORM, "X-Slack-Request-Timestamp": str(int(time.time()))},
    )
    assert response.status_code == 401
    await assert_no_effect(slack)


async def test_missing_timestamp_is_rejected(slack: SlackSimulator) -> None:
    body = feedback_view_body()
    response = await slack.http.post(
        "/slack/events",
        content=body.encode(),
        headers={"Content-Type": FORM, "X-Slack-Signature": sign(body, int(time.time()))},
    )
    assert response.status_code == 401
    await assert_no_effect(slack)


async def test_valid_signature_is_accepted(slack: SlackSimulator) -> None:
    """The control for the tests above: the same body, correctly signed, stores the feedback."""
    response = await slack.send(feedback_view_body(), FORM)
    assert response.status_code == 200
    await slack.api.wait_for("chat.postEphemeral")
    assert (await slack.service.list_feedback()).total == 1


# ---------------------------------------------------------------------- double clicks


async def test_double_deploy_click_deploys_once(slack: SlackSimulator, rules_dir: Path) -> None:
    rule = await approved_rule(slack.service)
    await slack.service.drain()
    await slack.api.wait_for("chat.postMessage")  # the card
    first, second = await asyncio.gather(
        slack.click("rule_deploy", rule.rule_id), slack.click("rule_deploy", rule.rule_id)
    )
    assert first.status_code == second.status_code == 200
    notes = await slack.api.wait_for("chat.postEphemeral", 2)
    texts = sorted(note.params["text"] for note in notes)
    assert any(f"{rule.rule_id} deployed to `fashion_rules.json`" in text for text in texts), texts
    assert any("Nothing was changed" in text for text in texts), texts
    assert all(note.params["channel"] == REVIEW_CHANNEL for note in notes)
    await asyncio.sleep(0.2)
    assert len(slack.api.calls_to("chat.postEphemeral")) == 2
    assert (await slack.service.list_deployments(rule_id=rule.rule_id)).total == 1
    assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
    assert (await slack.service.get_rule(rule.rule_id)).status is RuleStatus.DEPLOYED


async def test_second_deploy_click_after_the_first_finished(slack: SlackSimulator, rules_dir: Path) -> None:
    rule = await approved_rule(slack.service)
    await slack.service.drain()
    await slack.api.wait_for("chat.postMessage")
    await slack.click("rule_deploy", rule.rule_id)
    (done,) = await slack.api.wait_for("chat.postEphemeral")
    assert "deployed" in done.params["text"]
    updates_before = len(slack.api.calls_to("chat.update"))
    await slack.click("rule_deploy", rule.rule_id)
    notes = await slack.api.wait_for("chat.postEphemeral", 2)
    assert "Nothing was changed" in notes[1].params["text"]
    assert notes[1].params["user"] == "UADMIN"
    # the card is shown as it is now: deployed, with only Roll back
    updates = await slack.api.wait_for("chat.update", updates_before + 1)
    card = updates[-1].params
    buttons = [e["action_id"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["rule_rollback"]
    assert (await slack.service.list_deployments(rule_id=rule.rule_id)).total == 1
    assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
    assert max(slack.ack_seconds) < 3
    assert len(slack.ack_seconds) == 2


# ---------------------------------------------------------------------- Slack off


async def test_without_slack_settings_there_is_no_slack_endpoint(tmp_path: Path, rules_dir: Path) -> None:
    app = create_app(make_settings(tmp_path, rules_dir))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            body = feedback_view_body()
            timestamp = int(time.time())
            response = await http.post(
                "/slack/events",
                content=body.encode(),
                headers={
                    "Content-Type": FORM,
                    "X-Slack-Request-Timestamp": str(timestamp),
                    "X-Slack-Signature": sign(body, timestamp),
                },
            )
            assert response.status_code == 404
            assert (await http.get("/healthz")).status_code == 200
            assert (await app.state.runtime.service.list_feedback()).total == 0


# ---------------------------------------------------------------------- escaping


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


async def test_user_text_on_a_card_is_escaped(slack: SlackSimulator) -> None:
    # a known complaint (the price pattern), so a rule and its card come of it: a draft would decline to quote it
    response = await slack.submit_feedback(
        query=f"hỏi {EVIL}", feedback_text=f"Đắt quá, bot sai: {EVIL}", ai_response=EVIL
    )
    assert response.status_code == 200
    posts = await slack.api.wait_for("chat.postMessage")
    card = posts[0].params
    assert card["channel"] == REVIEW_CHANNEL
    block_text = "\n".join(strings(card["blocks"]))
    assert "&lt;!channel&gt;" in block_text
    assert "&lt;@U123&gt; &amp; &lt;https://evil.example|click&gt;" in block_text
    for raw in ("<!channel>", "<@U123>", "<https://evil.example"):
        assert raw not in block_text
    # the fallback text is shown in notifications and parsed as mrkdwn too
    for raw in ("<!channel>", "<@U123>", "<https://evil.example"):
        assert raw not in card["text"], card["text"]
    # the database keeps what the user typed; only the rendering escapes it
    stored = await slack.service.get_feedback("FB-1001")
    assert EVIL in stored.feedback_text
