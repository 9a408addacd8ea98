"""Rule cards in the review channel: every new rule gets exactly one, whatever brought its feedback in;
Slack's rate limits and outages delay a card but never lose it or post it twice; a card fits Slack's limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from autotrain.models import FeedbackIn, RuleStatus
from autotrain.policy import Role, RuleAction, rule_actions
from autotrain.service import PipelineService
from bot.api import create_app
from bot.slack import blocks as slack_blocks
from bot.slack.cards import RuleCardPublisher
from storage.sqlite import SqliteStore
from tests.conftest import ADMIN, HEIGHT_FEEDBACK, REPORTER, WEATHER_FEEDBACK, a_rule, bearer, rule_of
from tests.fakes.slack_api import FakeSlackApi, SlackCall
from tests.slack_support import REVIEW_CHANNEL, SlackSimulator, action_ids, block_texts, ok, slack_settings

# ---------------------------------------------------------------------- helpers


def card_posts(api: FakeSlackApi, rule_id: str) -> list[SlackCall]:
    """Successful chat.postMessage calls that posted the card of `rule_id`."""
    return [
        call
        for call in api.calls_to("chat.postMessage")
        if ok(call)
        and call.params.get("channel") == REVIEW_CHANNEL
        and str(call.params.get("text", "")).startswith(f"{rule_id} ")
    ]


async def wait_until(predicate, timeout: float = 8.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def submit_and_generate(service: PipelineService, payload: dict[str, Any]) -> str:
    feedback = await service.submit(FeedbackIn(**payload), REPORTER)
    await service.drain()
    rule = await rule_of(service, feedback.feedback_id)
    assert rule is not None
    return rule.rule_id


@dataclass
class OwnApp:
    app: FastAPI
    service: PipelineService
    store: SqliteStore
    cards: RuleCardPublisher


@pytest.fixture
async def own_app(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> AsyncIterator[OwnApp]:
    """The server with a short card retry interval, and a handle on its card publisher. The background
    retry loop is stopped so that each test decides when a retry happens."""
    app = create_app(slack_settings(tmp_path, rules_dir, slack_api, card_retry_seconds=0.01))
    async with app.router.lifespan_context(app):
        cards = app.state.runtime.slack.deps.cards
        await cards.stop()
        yield OwnApp(app=app, service=app.state.runtime.service, store=app.state.runtime.store, cards=cards)


# ---------------------------------------------------------------------- every rule gets a card


async def test_rule_from_the_api_path_gets_a_card(slack: SlackSimulator) -> None:
    rule_id = await submit_and_generate(slack.service, HEIGHT_FEEDBACK)
    posts = card_posts(slack.api, rule_id)
    assert len(posts) == 1
    blocks = posts[0].params["blocks"]
    assert rule_id in blocks[0]["text"]["text"]
    assert "`chatbot`" in block_texts(blocks)  # the reporter is not a Slack user: shown as code, no mention
    card = await slack.store.get_card(rule_id)
    assert card is not None
    assert card.state == "posted"
    assert card.channel == REVIEW_CHANNEL
    assert card.message_ts == posts[0].response["ts"]


async def test_rule_from_the_rest_api_over_http_gets_a_card(slack: SlackSimulator) -> None:
    payload = {**WEATHER_FEEDBACK, "user_id": "shopper-42"}
    response = await slack.http.post("/autotrain/feedback", json=payload, headers=bearer(Role.REPORTER, "chatbot"))
    assert response.status_code == 201, response.text
    feedback_id = response.json()["feedback_id"]
    await slack.service.drain()
    rule = await slack.store.get_rule_for_feedback(feedback_id)
    assert rule is not None
    posts = card_posts(slack.api, rule.rule_id)
    assert len(posts) == 1
    assert "`shopper-42`" in block_texts(posts[0].params["blocks"])


async def test_praise_gets_no_rule_and_no_card(slack: SlackSimulator) -> None:
    await slack.service.submit(FeedbackIn(**{**HEIGHT_FEEDBACK, "feedback_type": "praise"}), REPORTER)
    await slack.service.drain()
    await asyncio.sleep(0.1)
    assert slack.api.calls_to("chat.postMessage") == []


# ---------------------------------------------------------------------- rate limits and outages


async def test_rate_limited_card_is_posted_after_retry_after(slack: SlackSimulator) -> None:
    slack.api.fail_next("chat.postMessage", status=429, retry_after=1)
    rule_id = await submit_and_generate(slack.service, WEATHER_FEEDBACK)

    calls = slack.api.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.9  # Retry-After was respected
    posts = card_posts(slack.api, rule_id)
    assert len(posts) == 1
    card = await slack.store.get_card(rule_id)
    assert card is not None
    assert card.state == "posted"
    assert card.message_ts == posts[0].response["ts"]
    assert card.last_error is None


async def test_card_failing_past_the_client_retries_is_marked_failed_then_posted(
    own_app: OwnApp, slack_api: FakeSlackApi
) -> None:
    slack_api.fail_next("chat.postMessage", status=500, times=5)
    rule_id = await submit_and_generate(own_app.service, WEATHER_FEEDBACK)

    assert card_posts(slack_api, rule_id) == []
    assert all(c.status == 500 for c in slack_api.calls_to("chat.postMessage"))
    card = await own_app.store.get_card(rule_id)
    assert card is not None
    assert card.state == "failed"
    assert card.message_ts is None
    assert card.last_error

    await asyncio.sleep(0.05)  # older than the retry interval
    posted = await own_app.cards.retry_missing()
    assert posted == 1
    posts = card_posts(slack_api, rule_id)
    assert len(posts) == 1
    card = await own_app.store.get_card(rule_id)
    assert card is not None
    assert card.state == "posted"
    assert card.message_ts == posts[0].response["ts"]
    assert card.last_error is None

    # and the card is live: later changes update it in place
    await own_app.service.approve(rule_id, ADMIN)
    updates = await slack_api.wait_for("chat.update")
    assert updates[-1].params["ts"] == card.message_ts


async def test_retry_missing_never_posts_a_card_twice(own_app: OwnApp, slack_api: FakeSlackApi) -> None:
    rule_id = await submit_and_generate(own_app.service, WEATHER_FEEDBACK)
    assert len(card_posts(slack_api, rule_id)) == 1
    await asyncio.sleep(0.05)
    assert await own_app.cards.retry_missing() == 0
    assert await own_app.cards.retry_missing() == 0
    results = await asyncio.gather(own_app.cards.retry_missing(), own_app.cards.post_card(rule_id))
    assert results == [0, False]
    assert len(card_posts(slack_api, rule_id)) == 1
    assert len(slack_api.calls_to("chat.postMessage")) == 1


async def test_retry_while_the_first_post_is_still_in_flight_does_not_post_twice(
    own_app: OwnApp, slack_api: FakeSlackApi
) -> None:
    """The first post waits out a 429; the retry pass meanwhile must not take the card for a lost one."""
    slack_api.fail_next("chat.postMessage", status=429, retry_after=1)
    feedback = await own_app.service.submit(FeedbackIn(**WEATHER_FEEDBACK), REPORTER)
    await slack_api.wait_for("chat.postMessage")  # the 429: the client is now waiting Retry-After
    await asyncio.sleep(0.1)
    await own_app.cards.retry_missing()
    await own_app.service.drain()
    rule = await own_app.store.get_rule_for_feedback(feedback.feedback_id)
    assert rule is not None
    assert len(card_posts(slack_api, rule.rule_id)) == 1


async def test_background_loop_posts_a_card_that_failed(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    """Nobody calls retry_missing: the server's own loop brings the card in once Slack is back."""
    app = create_app(slack_settings(tmp_path, rules_dir, slack_api, card_retry_seconds=0.2))
    async with app.router.lifespan_context(app):
        service: PipelineService = app.state.runtime.service
        slack_api.fail_next("chat.postMessage", status=200, error="channel_not_found")
        rule_id = await submit_and_generate(service, WEATHER_FEEDBACK)
        card = await app.state.runtime.store.get_card(rule_id)
        assert card is not None and card.state == "failed" and "channel_not_found" in (card.last_error or "")
        await wait_until(lambda: bool(card_posts(slack_api, rule_id)), what="the loop to post the card")
        await asyncio.sleep(0.5)  # a few more loop turns
        assert len(card_posts(slack_api, rule_id)) == 1
        card = await app.state.runtime.store.get_card(rule_id)
        assert card is not None and card.state == "posted"


# ---------------------------------------------------------------------- Slack's limits


LONG_FEEDBACK = {
    "query": "Tìm áo khoác cho trời 35 độ, đi làm văn phòng, ngân sách vừa phải. " * 29,  # ~1,970 chars
    "ai_response": ("Mình gợi ý áo khoác nỉ này, rất ấm áp và hợp thời trang cho mọi dịp. " * 120)[:8000],
    "feedback_text": ("Trời nóng quá, AI còn tư vấn áo khoác dày, không hợp chút nào. " * 70)[:4000],
    "feedback_type": "bug",
}


async def test_card_of_a_huge_feedback_fits_slacks_limits(slack: SlackSimulator) -> None:
    assert len(LONG_FEEDBACK["ai_response"]) == 8000 and len(LONG_FEEDBACK["feedback_text"]) == 4000
    rule_id = await submit_and_generate(slack.service, LONG_FEEDBACK)
    posts = card_posts(slack.api, rule_id)
    assert len(posts) == 1
    blocks = posts[0].params["blocks"]
    assert len(blocks) <= 50
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
    assert len(posts[0].params["text"]) <= 40_000
    text = block_texts(blocks)
    # each part of the source feedback is there, quoted and shortened
    assert ">Tìm áo khoác cho trời 35 độ" in text
    assert ">Mình gợi ý áo khoác nỉ này" in text
    assert ">Trời nóng quá, AI còn tư vấn áo khoác dày" in text
    assert "…" in text
    assert slack.api.violations == []


async def test_card_with_markup_heavy_text_still_shows_the_feedback(slack: SlackSimulator) -> None:
    """Escaping (`<` → `&lt;`) lengthens text: the clipping must budget for it, so the reviewer still sees
    the feedback itself, not only the bot's answer."""
    payload = {
        "query": "<b>áo</b> & <i>quần</i> " * 80,
        "ai_response": ("<p>Áo khoác &amp; quần <br/> <a href='x'>xem</a></p>\n" * 200)[:8000],
        # a known complaint (the price pattern): a draft would decline to quote markup
        "feedback_text": "Đắt quá. " + "Bot trả lời toàn mã HTML, không đọc được. " * 20,
        "feedback_type": "bug",
    }
    rule_id = await submit_and_generate(slack.service, payload)
    posts = card_posts(slack.api, rule_id)
    assert len(posts) == 1
    blocks = posts[0].params["blocks"]
    assert len(blocks) <= 50
    text = block_texts(blocks)
    # the feedback (840 chars, under the card's own 900-char budget for it) is shown whole
    assert f">{payload['feedback_text'].strip()}" in text
    assert "<b>" not in text and "<a href" not in text  # escaped, never live markup
    assert slack.api.violations == []


async def test_card_survives_an_ai_response_that_is_all_special_characters(slack: SlackSimulator) -> None:
    payload = {
        "query": "&" * 2000,
        "ai_response": "<" * 8000,
        "feedback_text": ">" * 4000,
        "feedback_type": "bug",
    }
    rule_id = await submit_and_generate(slack.service, payload)
    posts = card_posts(slack.api, rule_id)
    assert len(posts) == 1
    assert len(posts[0].params["blocks"]) <= 50
    assert slack.api.violations == []


# ---------------------------------------------------------------------- the buttons are the policy's


@pytest.mark.parametrize("module_name", ["fashion_rules.json", "prompt_v2.txt", "stylist_guidelines.md"])
@pytest.mark.parametrize("rollout_percent", [None, 100, 10])
@pytest.mark.parametrize("status", list(RuleStatus), ids=str)
def test_a_card_shows_one_button_for_each_action_the_policy_allows(
    status: RuleStatus, module_name: str, rollout_percent: int | None
) -> None:
    rule = a_rule(status, module_name, rollout_percent)
    _, rendered = slack_blocks.rule_card(rule, None, canary_percent=30)
    expected = [slack_blocks.RULE_ACTION_IDS[action] for action in rule_actions(rule)]
    assert action_ids(rendered) == expected
    assert all(button["value"] == "RUL-1001" for b in rendered if b["type"] == "actions" for button in b["elements"])


def test_the_canary_button_shows_the_share_it_is_given() -> None:
    rule = a_rule(RuleStatus.APPROVED, "fashion_rules.json")
    assert RuleAction.CANARY in rule_actions(rule)
    [canary] = [b for b in slack_blocks.rule_buttons(rule, canary_percent=30) if b["action_id"] == "rule_deploy_canary"]
    assert canary["text"]["text"] == "Canary 30 %"
    assert (
        canary["confirm"]["text"]["text"] == "30 % of users get the new rule first; the others keep the current rules."
    )
