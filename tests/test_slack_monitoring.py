"""Alerts to the alert channel, digests to the digest channel, the buttons on an alert and `/autotrain digest`,
through the real Bolt app against the fake Slack Web API (which fails the test on any Slack-limit violation).
Time comes from a controlled clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotrain.i18n import Language, set_default_language
from autotrain.models import FeedbackIn, FeedbackStatus
from autotrain.monitoring import Monitor
from bot.api import create_app
from bot.runtime import open_runtime
from tests.conftest import ADMIN, HEIGHT_FEEDBACK, REPORTER, WEATHER_FEEDBACK
from tests.fakes.clock import FakeClock
from tests.fakes.slack_api import FakeSlackApi, SlackCall
from tests.slack_support import ADMIN_USER, OTHER_USER, REVIEW_CHANNEL, SlackSimulator, slack_settings

ALERTS = "CALERTS"
DIGESTS = "CDIGEST"
START = datetime(2025, 6, 2, 8, 0, 0, tzinfo=UTC)
SHOES_FEEDBACK = {
    "query": "gợi ý giày đi làm",
    "ai_response": "Bạn thử giày cao gót 12cm nhé",
    "feedback_text": "Đi làm cả ngày mà gợi ý gót 12cm thì đau chân lắm",
    "feedback_type": "suggestion",
}


@dataclass
class Harness:
    slack: SlackSimulator
    api: FakeSlackApi
    monitor: Monitor
    clock: FakeClock

    @property
    def service(self):
        return self.slack.service


@asynccontextmanager
async def slack_app(
    tmp_path: Path, rules_dir: Path, api: FakeSlackApi, clock: FakeClock | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    """The whole server with Slack on, the alert and digest channels set, and a controlled clock."""
    clock = clock or FakeClock(START)
    values: dict[str, Any] = {"alert_channel": ALERTS, "digest_channel": DIGESTS, "auto_generate": False}
    values.update(overrides)
    app = create_app(
        slack_settings(tmp_path, rules_dir, api, **values),
        open_runtime_fn=lambda s: open_runtime(s, clock=clock),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            runtime = app.state.runtime
            yield Harness(SlackSimulator(http=http, api=api, runtime=runtime), api, runtime.monitor, clock)


def posts_to(api: FakeSlackApi, channel: str) -> list[SlackCall]:
    return [call for call in api.calls_to("chat.postMessage") if call.params.get("channel") == channel]


def as_object(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def all_text(params: dict[str, Any]) -> str:
    """The message text plus every string inside its blocks."""
    parts = [params.get("text") or ""]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            parts.append(node)

    walk(as_object(params.get("blocks")) or [])
    return "\n".join(parts)


def buttons(params: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = as_object(params.get("blocks")) or []
    return [element for block in blocks if block["type"] == "actions" for element in block["elements"]]


async def pending(harness: Harness, *payloads: dict[str, str]) -> list[str]:
    ids = []
    for payload in payloads:
        feedback = await harness.service.submit(FeedbackIn(**payload), REPORTER)
        ids.append(feedback.feedback_id)
    return ids


async def click_alert(
    slack: SlackSimulator, action_id: str, *, ts: str, value: str, user: str = ADMIN_USER, channel: str = ALERTS
) -> httpx.Response:
    """A click on a button of an alert message, as Slack sends it."""
    response = await slack.press(action_id, value, channel=channel, ts=ts, block_id="alert_actions", user=user)
    assert response.status_code == 200, response.text
    return response


async def wait_until(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def fire_backlog_alert(harness: Harness) -> SlackCall:
    await pending(harness, WEATHER_FEEDBACK, HEIGHT_FEEDBACK)
    events = await harness.monitor.check_alerts()
    assert [(e.name, e.kind.value) for e in events] == [("pending_feedback", "fired")]
    [post] = posts_to(harness.api, ALERTS)
    assert post.response["ok"], post.response
    return post


# ---------------------------------------------------------------------- alerts


async def test_backlog_alert_fires_with_run_all_button_repeats_after_cooldown_and_resolves(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_pending_max=1, alert_cooldown_seconds=3600) as h:
        post = await fire_backlog_alert(h)
        assert post.params["channel"] == ALERTS
        assert "Pending feedback backlog is 2, above the threshold of 1" in post.params["text"]
        assert "Warning" in post.params["text"]
        text = all_text(post.params)
        assert "run-all" in text  # what to do
        [button] = buttons(post.params)
        assert button["action_id"] == "alert_run_all"
        assert button["value"] == "pending_feedback"
        assert button["confirm"]["confirm"]["text"]
        assert button["confirm"]["deny"]["text"]

        # still crossed, inside the cool-down: nothing; after it: one reminder
        h.clock.advance(1800)
        assert await h.monitor.check_alerts() == []
        assert len(posts_to(slack_api, ALERTS)) == 1
        h.clock.advance(1800)
        assert [e.kind.value for e in await h.monitor.check_alerts()] == ["repeated"]
        posts = posts_to(slack_api, ALERTS)
        assert len(posts) == 2
        assert "(still)" in posts[1].params["text"]
        assert "is 2, above the threshold of 1" in posts[1].params["text"]

        # cleared: one "Resolved" message, no button
        await h.service.run_all(ADMIN)
        h.clock.advance(60)
        assert [e.kind.value for e in await h.monitor.check_alerts()] == ["resolved"]
        posts = posts_to(slack_api, ALERTS)
        assert len(posts) == 3
        resolved = posts[2]
        assert resolved.response["ok"]
        assert "Resolved" in resolved.params["text"]
        assert "Pending feedback backlog is back to normal: 0 (threshold 1)" in resolved.params["text"]
        assert buttons(resolved.params) == []
        h.clock.advance(7200)
        assert await h.monitor.check_alerts() == []
        assert len(posts_to(slack_api, ALERTS)) == 3


async def test_approval_time_alert_offers_the_pending_list(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_approval_hours_max=1) as h:
        first, second = await pending(h, WEATHER_FEEDBACK, HEIGHT_FEEDBACK)
        rule = await h.service.generate(first, REPORTER)
        await h.service.generate(second, REPORTER)
        h.clock.advance(2 * 3600)
        await h.service.approve(rule.rule_id, ADMIN)
        events = await h.monitor.check_alerts()
        assert [(e.name, e.kind.value) for e in events] == [("approval_time", "fired")]
        [post] = posts_to(slack_api, ALERTS)
        assert "Average time to approve a rule is 2 h, above the threshold of 1 h" in post.params["text"]
        [button] = buttons(post.params)
        assert button["action_id"] == "alert_show_pending"
        assert button["value"] == "approval_time"
        assert "confirm" not in button


async def test_no_alert_channel_no_post(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_channel=None, alert_pending_max=0) as h:
        await pending(h, WEATHER_FEEDBACK)
        events = await h.monitor.check_alerts()
        assert [e.name for e in events] == ["pending_feedback"]  # evaluated and recorded, just not posted
        assert slack_api.calls_to("chat.postMessage") == []
        assert slack_api.calls_to("chat.postEphemeral") == []


# ---------------------------------------------------------------------- the buttons on an alert


async def test_run_all_button_runs_run_all_for_an_admin(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_pending_max=1) as h:
        alert = await fire_backlog_alert(h)
        ids = [f.feedback_id for f in (await h.service.list_feedback(status=FeedbackStatus.PENDING)).items]
        assert len(ids) == 2
        await click_alert(h.slack, "alert_run_all", ts=alert.response["ts"], value="pending_feedback")

        def finished() -> bool:
            return any("finished" in (u.params.get("text") or "") for u in slack_api.calls_to("chat.update"))

        await wait_until(finished, "the run-all summary")
        progress = [p for p in posts_to(slack_api, ALERTS) if "Run-all started" in p.params["text"]]
        assert len(progress) == 1
        assert "Run-all started by <@UADMIN>: 2 pending feedback" in progress[0].params["text"]
        ts = progress[0].response["ts"]
        updates = slack_api.calls_to("chat.update")
        assert all(u.params["channel"] == ALERTS and u.params["ts"] == ts for u in updates)
        assert all(u.response["ok"] for u in updates)
        assert "2 feedbacks, 2 rules created" in updates[-1].params["text"]
        for feedback_id in ids:
            assert (await h.service.get_feedback(feedback_id)).status is FeedbackStatus.PROCESSED
        assert (await h.service.list_rules()).total == 2
        assert slack_api.calls_to("chat.postEphemeral") == []


async def test_run_all_button_is_refused_to_a_non_admin(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_pending_max=1) as h:
        alert = await fire_backlog_alert(h)
        await click_alert(h.slack, "alert_run_all", ts=alert.response["ts"], value="pending_feedback", user=OTHER_USER)
        [note] = await slack_api.wait_for("chat.postEphemeral")
        assert note.params["channel"] == ALERTS
        assert note.params["user"] == OTHER_USER
        assert "Only Auto-Train admins" in note.params["text"]
        assert "<@UADMIN>" in note.params["text"]
        await asyncio.sleep(0.2)
        assert len(posts_to(slack_api, ALERTS)) == 1  # the alert itself; no progress message
        assert slack_api.calls_to("chat.update") == []
        assert (await h.service.list_feedback(status=FeedbackStatus.PENDING)).total == 2
        assert (await h.service.list_rules()).total == 0


async def test_show_pending_button_lists_the_pending_rules_privately(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_approval_hours_max=1) as h:
        ids = await pending(h, WEATHER_FEEDBACK, HEIGHT_FEEDBACK, SHOES_FEEDBACK)
        approved = await h.service.generate(ids[0], REPORTER)
        waiting = [(await h.service.generate(i, REPORTER)).rule_id for i in ids[1:]]
        h.clock.advance(3 * 3600)
        await h.service.approve(approved.rule_id, ADMIN)
        await h.monitor.check_alerts()
        [alert] = posts_to(slack_api, ALERTS)
        await click_alert(h.slack, "alert_show_pending", ts=alert.response["ts"], value="approval_time")
        [note] = await slack_api.wait_for("chat.postEphemeral")
        assert note.params["channel"] == ALERTS
        assert note.params["user"] == ADMIN_USER
        assert note.response["ok"]
        assert note.params["text"] == "Rules: pending (2)"
        text = all_text(note.params)
        for rule_id in waiting:
            assert rule_id in text
        assert approved.rule_id not in text
        assert len(posts_to(slack_api, ALERTS)) == 1  # nothing public


async def test_show_status_and_show_deployed_buttons(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api) as h:
        [feedback_id] = await pending(h, WEATHER_FEEDBACK)
        rule = await h.service.generate(feedback_id, REPORTER)
        await h.service.approve(rule.rule_id, ADMIN)
        await h.service.deploy(rule.rule_id, ADMIN)
        ts = slack_api.register_message(ALERTS)
        await click_alert(h.slack, "alert_show_deployed", ts=ts, value="deploys_per_day", user=OTHER_USER)
        [deployed] = await slack_api.wait_for("chat.postEphemeral")
        assert deployed.params["user"] == OTHER_USER
        assert deployed.params["text"] == "Rules: deployed (1)"
        assert rule.rule_id in all_text(deployed.params)
        await click_alert(h.slack, "alert_show_status", ts=ts, value="generation_error_rate")
        status = (await slack_api.wait_for("chat.postEphemeral", 2))[1]
        assert status.params["user"] == ADMIN_USER
        assert status.params["channel"] == ALERTS
        assert status.response["ok"]
        assert "status" in status.params["text"].lower()


# ---------------------------------------------------------------------- the digest


async def test_digest_goes_to_the_digest_channel_with_links_to_the_cards(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api) as h:
        weather, height, _shoes = await pending(h, WEATHER_FEEDBACK, HEIGHT_FEEDBACK, SHOES_FEEDBACK)
        deployed = await h.service.generate(weather, REPORTER)
        rejected = await h.service.generate(height, REPORTER)
        h.clock.advance(1800)
        await h.service.approve(deployed.rule_id, ADMIN)
        await h.service.deploy(deployed.rule_id, ADMIN)
        await h.service.reject(rejected.rule_id, ADMIN)
        card = await h.slack.store.get_card(deployed.rule_id)
        assert card is not None and card.channel == REVIEW_CHANNEL and card.message_ts
        h.clock.advance(3600)

        digest = await h.monitor.post_digest()
        assert digest is not None
        assert (digest.feedback_received, digest.rules_generated, digest.rules_deployed) == (3, 2, 1)

        [link] = slack_api.calls_to("chat.getPermalink")
        assert (link.params["channel"], str(link.params["message_ts"])) == (REVIEW_CHANNEL, card.message_ts)
        permalink = link.response["permalink"]
        [post] = posts_to(slack_api, DIGESTS)
        assert post.response["ok"], post.response
        assert "3 feedback, 2 rules generated, 1 deployed" in post.params["text"]
        text = all_text(post.params)
        assert f"<{permalink}|{deployed.rule_id}>" in text
        assert "*Feedback received* 3 (bug 2, suggestion 1)" in text
        assert "generated 2 · approved 1 · rejected 1 · deployed 1 · rolled back 0" in text
        assert "*Backlog* 1 pending feedback (oldest FB-1003" in text
        assert "0 rules to review" in text
        assert "average 30 min" in text
        assert "quiet" not in text
        assert posts_to(slack_api, ALERTS) == []


async def test_digest_without_a_permalink_still_posts(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api) as h:
        [feedback_id] = await pending(h, WEATHER_FEEDBACK)
        rule = await h.service.generate(feedback_id, REPORTER)
        await h.service.approve(rule.rule_id, ADMIN)
        await h.service.deploy(rule.rule_id, ADMIN)
        slack_api.fail_next("chat.getPermalink", status=200, error="message_not_found")
        h.clock.advance(60)
        await h.monitor.post_digest()
        assert len(slack_api.calls_to("chat.getPermalink")) == 1
        [post] = posts_to(slack_api, DIGESTS)
        assert post.response["ok"]
        text = all_text(post.params)
        assert f"• {rule.rule_id} →" in text
        assert "|RUL-" not in text


async def test_a_quiet_day_is_one_line(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api) as h:
        await pending(h, WEATHER_FEEDBACK)  # yesterday's feedback, still waiting
        h.clock.advance(2 * 86400)
        digest = await h.monitor.post_digest()
        assert digest is not None and digest.quiet
        [post] = posts_to(slack_api, DIGESTS)
        assert post.response["ok"]
        blocks = as_object(post.params["blocks"])
        assert len(blocks) == 1
        assert blocks[0]["type"] == "section"
        assert "quiet" in post.params["text"]
        assert "1 pending feedback" in post.params["text"]
        assert slack_api.calls_to("chat.getPermalink") == []


async def test_digest_command_posts_to_the_digest_channel(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api) as h:
        await pending(h, WEATHER_FEEDBACK, SHOES_FEEDBACK)
        h.clock.advance(60)
        await h.slack.command("digest", user=OTHER_USER)
        [post] = await slack_api.wait_for("chat.postMessage")
        assert post.params["channel"] == DIGESTS
        assert "2 feedback" in post.params["text"]
        await wait_until(lambda: h.slack.command_replies(), "the command's reply")
        [reply] = h.slack.command_replies()
        assert reply["response_type"] == "ephemeral"
        assert f"<#{DIGESTS}>" in reply["text"]


async def test_digest_command_does_not_claim_a_post_that_failed(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    """The bot is not in the digest channel: the asker must not be told the digest was posted there."""
    async with slack_app(tmp_path, rules_dir, slack_api) as h:
        await pending(h, WEATHER_FEEDBACK)
        h.clock.advance(60)
        slack_api.fail_next("chat.postMessage", status=200, error="not_in_channel")
        await h.slack.command("digest")
        [post] = await slack_api.wait_for("chat.postMessage")
        assert post.params["channel"] == DIGESTS
        assert post.response["error"] == "not_in_channel"
        await wait_until(lambda: h.slack.command_replies(), "the command's reply")
        [reply] = h.slack.command_replies()
        assert reply["response_type"] == "ephemeral"
        assert "Digest posted to" not in reply["text"], reply["text"]


async def test_digest_command_without_a_digest_channel_answers_privately(slack: SlackSimulator) -> None:
    await slack.store.create_feedback(
        FeedbackIn(**WEATHER_FEEDBACK),
        user_id=OTHER_USER,
        source="slack",
        actor_id=OTHER_USER,
        now=slack.runtime.clock(),
    )
    await slack.command("digest")
    await wait_until(lambda: slack.command_replies(), "the command's reply")
    [reply] = slack.command_replies()
    assert reply["response_type"] == "ephemeral"
    assert "Auto-Train digest" in reply["text"]
    assert "1 feedback" in reply["text"]
    assert "*Feedback received* 1 (bug 1)" in all_text(reply)
    assert slack.api.calls_to("chat.postMessage") == []


async def test_a_button_reply_the_bot_cannot_post_ephemerally_comes_as_a_dm(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_pending_max=1) as h:
        alert = await fire_backlog_alert(h)
        slack_api.fail_next("chat.postEphemeral", status=200, error="channel_not_found")
        await click_alert(h.slack, "alert_show_status", ts=alert.response["ts"], value="pending_feedback")
        await wait_until(
            lambda: any(p.params["channel"] == ADMIN_USER for p in slack_api.calls_to("chat.postMessage")), "the DM"
        )
        [failed] = slack_api.calls_to("chat.postEphemeral")
        assert failed.params["channel"] == ALERTS and failed.response["error"] == "channel_not_found"
        [dm] = posts_to(slack_api, ADMIN_USER)
        assert dm.response["ok"]
        assert dm.params["text"] == "Auto-Train status"
        assert "Feedback" in all_text(dm.params)  # the same status blocks the ephemeral would have had


# ---------------------------------------------------------------------- in the workspace's language


@pytest.fixture
def vietnamese(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AUTOTRAIN_LANGUAGE=vi for the server the test starts; English again for whatever runs after it."""
    monkeypatch.setenv("AUTOTRAIN_LANGUAGE", "vi")
    yield
    set_default_language(Language.EN)


async def test_an_alert_is_posted_in_vietnamese_with_autotrain_language_vi(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi, vietnamese: None
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_pending_max=1) as h:
        post = await fire_backlog_alert(h)
        assert post.params["text"] == "🟠 Cảnh báo: Góp ý tồn đọng chờ xử lý đang ở mức 2, vượt ngưỡng 1."
        blocks = as_object(post.params["blocks"])
        assert blocks[0]["text"]["text"].startswith("*🟠 Cảnh báo: Góp ý tồn đọng chờ xử lý*\n")
        assert blocks[1]["elements"][0]["text"].startswith("*Cần làm gì:* Tạo quy tắc cho phần tồn đọng (run-all)")
        [button] = buttons(post.params)
        assert button["action_id"] == "alert_run_all"  # what the listener reads stays as it was
        assert button["text"]["text"] == "Xử lý mọi góp ý đang chờ"
        assert button["confirm"]["title"]["text"] == "Xử lý mọi góp ý đang chờ?"
        assert button["confirm"]["confirm"]["text"] == "Chạy"

        h.clock.advance(3600)
        await pending(h, SHOES_FEEDBACK)
        assert [e.kind.value for e in await h.monitor.check_alerts()] == ["repeated"]
        again = posts_to(slack_api, ALERTS)[-1]
        assert again.params["text"] == (
            "🟠 Cảnh báo (vẫn tiếp diễn): Góp ý tồn đọng chờ xử lý đang ở mức 3, vượt ngưỡng 1."
        )
        assert "· vượt ngưỡng từ <!date^" in all_text(again.params)  # Slack shows the date in the reader's locale

        await h.service.run_all(ADMIN)
        assert [e.kind.value for e in await h.monitor.check_alerts()] == ["resolved"]
        resolved = posts_to(slack_api, ALERTS)[-1]
        assert resolved.params["text"] == (
            "✅ Đã được giải quyết: Góp ý tồn đọng chờ xử lý đã trở lại bình thường: 0 (ngưỡng 1)."
        )
        # webhooks and the store keep the language-free record
        events = await h.monitor.check_alerts()
        assert events == []


async def test_the_digest_is_posted_in_vietnamese_with_autotrain_language_vi(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi, vietnamese: None
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api) as h:
        weather, height, _shoes = await pending(h, WEATHER_FEEDBACK, HEIGHT_FEEDBACK, SHOES_FEEDBACK)
        await h.service.submit(
            FeedbackIn(
                query="áo khoác mỏng",
                ai_response="Bạn thử áo khoác dạ nhé",
                feedback_text="troi nong ma goi y ao khoac, khong hop",
                feedback_type="bug",
            ),
            REPORTER,
        )
        deployed = await h.service.generate(weather, REPORTER)
        rejected = await h.service.generate(height, REPORTER)
        h.clock.advance(1800)
        await h.service.approve(deployed.rule_id, ADMIN)
        await h.service.deploy(deployed.rule_id, ADMIN)
        await h.service.reject(rejected.rule_id, ADMIN)
        h.clock.advance(3600)

        await h.monitor.post_digest()
        [post] = posts_to(slack_api, DIGESTS)
        assert post.response["ok"], post.response
        assert post.params["text"] == ("Bản tin Auto-Train 2 thg 6 2025: 4 góp ý, 2 quy tắc được tạo, 1 đã triển khai")
        blocks = as_object(post.params["blocks"])
        assert blocks[0]["text"]["text"] == "Bản tin Auto-Train · 2 thg 6 2025"
        summary = blocks[1]["text"]["text"].splitlines()
        assert summary[0] == "*Góp ý nhận được* 4 (lỗi 3, đề xuất 1)"
        assert summary[1] == "*Quy tắc* đã tạo 2 · đã duyệt 1 · đã từ chối 1 · đã triển khai 1 · đã hoàn tác 0"
        assert summary[2].startswith("*Tồn đọng* 2 góp ý đang chờ (cũ nhất là FB-1003, từ <!date^")
        assert summary[2].endswith(" · 0 quy tắc cần duyệt")
        text = all_text(post.params)
        assert "*Chủ đề lặp lại* “áo khoác” ×2 · “trời nóng” ×2" in text  # as spelled, accents kept
        assert "*Đã triển khai*\n• <https://" in text and f"|{deployed.rule_id}> → `fashion_rules.json`: " in text


async def test_alerts_and_the_digest_are_in_english_by_default(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    async with slack_app(tmp_path, rules_dir, slack_api, alert_pending_max=1) as h:
        post = await fire_backlog_alert(h)
        assert post.params["text"] == "🟠 Warning: Pending feedback backlog is 2, above the threshold of 1."
        [button] = buttons(post.params)
        assert button["text"]["text"] == "Run all pending"
        h.clock.advance(60)
        await h.monitor.post_digest()
        [digest] = posts_to(slack_api, DIGESTS)
        assert digest.params["text"] == "Auto-Train digest 2 Jun 2025: 2 feedback, 0 rules generated, 0 deployed"
        text = all_text(digest.params)
        assert "*Feedback received* 2 (bug 2)" in text
        assert "*Backlog* 2 pending feedback (oldest FB-1001, since <!date^" in text
        assert "0 rules to review" in text
