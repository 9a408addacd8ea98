"""Replay before deploy (issue 14) with the real SDK against the fake Messages API: Claude plays the chatbot
(its system prompt holds the rule files with the candidate applied) and judges each new answer; the fake
answers both by content (tests/fakes/anthropic_api.py `evaluation_responders`). Rules come from the offline
generator, so that what is evaluated is known; the weather rule "- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác
dày" takes the jacket out of the simulated chatbot's answer to a hot-weather question."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotrain.evaluation import EvaluationStatus
from autotrain.generators.heuristic import HeuristicRuleGenerator
from autotrain.models import FeedbackIn, RuleStatus
from bot.api import create_app
from bot.runtime import Runtime, open_runtime
from tests.conftest import ADMIN, NEW_WEATHER_RULE, OLD_WEATHER_RULE, REPORTER, WEATHER_FEEDBACK, make_settings
from tests.fakes.anthropic_api import (
    FakeMessagesApi,
    answer_text,
    evaluation_responders,
    rate_limited,
    server_error,
)
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import SlackSimulator, block_texts, ok, slack_settings

HOT = {**WEATHER_FEEDBACK, "query": "Tìm áo cho trời 35 độ"}
PRAISE = {
    "query": "Tìm áo đi biển trời nóng",
    "ai_response": "Mình gợi ý:\n• Áo sơ mi linen: thoáng mát",
    "feedback_text": "Gợi ý áo sơ mi linen rất hợp, cảm ơn",
    "feedback_type": "praise",
}


def claude_settings(tmp_path: Path, rules_dir: Path, api: FakeMessagesApi, **overrides: Any) -> dict[str, Any]:
    return {
        "anthropic_api_key": "sk-ant-test",
        "anthropic_base_url": api.base_url,
        "claude_max_retries": 0,
        "claude_output_retries": 0,
        "evaluate": "auto",
        **overrides,
    }


@pytest.fixture
async def opened(tmp_path: Path, rules_dir: Path, messages_api: FakeMessagesApi) -> AsyncIterator[Callable[..., Any]]:
    runtimes: list[Runtime] = []

    async def opener(**overrides: Any) -> Runtime:
        settings = make_settings(tmp_path, rules_dir, **claude_settings(tmp_path, rules_dir, messages_api, **overrides))
        # rules from the offline generator; replay and judgment through Claude (the fake)
        runtime = await open_runtime(settings, generator=HeuristicRuleGenerator(settings.allowed_modules))
        runtimes.append(runtime)
        return runtime

    yield opener
    for runtime in runtimes:
        await runtime.close()


async def rule_for(runtime: Runtime, payload: dict[str, Any], **edit: Any) -> str:
    feedback = await runtime.service.submit(FeedbackIn(**payload), REPORTER)
    rule = await runtime.service.generate(feedback.feedback_id, REPORTER)
    if edit:
        await runtime.service.edit(rule.rule_id, ADMIN, module_name="fashion_rules.json", **edit)
    await runtime.service.drain()
    return rule.rule_id


async def test_a_rule_that_fixes_the_complaint_passes(opened: Any, messages_api: FakeMessagesApi) -> None:
    messages_api.respond(*evaluation_responders())
    runtime = await opened()
    rule_id = await rule_for(runtime, HOT)
    detail = await runtime.service.rule_detail(rule_id)
    assert detail.new_rule == NEW_WEATHER_RULE
    evaluation = detail.evaluation
    assert evaluation is not None and evaluation.status is EvaluationStatus.PASSED, evaluation
    assert evaluation.fixes_complaint is True and evaluation.regressions == 0
    assert evaluation.summary == "Replayed: fixes the complaint"
    [case] = (await runtime.service.evaluation(rule_id)).detail
    assert "áo khoác" in (case.answer_before or "") and "Áo khoác" not in (case.answer_after or "")
    assert case.holds is True and case.tokens > 0


async def test_a_rule_that_does_not_fix_it_is_revised_once_and_the_better_one_proposed(
    opened: Any, messages_api: FakeMessagesApi
) -> None:
    messages_api.respond(*evaluation_responders(revised_rule=NEW_WEATHER_RULE))
    runtime = await opened()
    weak = "- Gợi ý thêm phụ kiện cho trời nắng"
    rule_id = await rule_for(runtime, HOT, new_rule=weak, old_rule="")
    evaluation = await runtime.service.evaluation(rule_id)
    assert evaluation.status is EvaluationStatus.PASSED
    assert (evaluation.revised_from, evaluation.new_rule) == (weak, NEW_WEATHER_RULE)
    assert evaluation.summary.endswith("(after one revision of the line)")
    rule = await runtime.service.get_rule(rule_id)
    assert rule.new_rule == NEW_WEATHER_RULE and rule.edited_by == "auto-revise"
    revisions = [r for r in messages_api.requests if r.answer_fields == {"new_rule", "reasoning"}]
    assert len(revisions) == 1  # one round


async def test_a_rule_that_breaks_an_earlier_fix_fails_naming_it(opened: Any, messages_api: FakeMessagesApi) -> None:
    messages_api.respond(*evaluation_responders())
    runtime = await opened()
    earlier = await rule_for(runtime, HOT)
    await runtime.service.approve(earlier, ADMIN)
    await runtime.service.deploy(earlier, ADMIN)
    earlier_rule = await runtime.service.get_rule(earlier)
    # a new complaint, answered by a line that takes the weather fix out again
    other = {**WEATHER_FEEDBACK, "query": "Áo đi làm văn phòng", "feedback_text": "Bot không hỏi dịp mặc trước"}
    rule_id = await rule_for(runtime, other, new_rule=OLD_WEATHER_RULE, old_rule=NEW_WEATHER_RULE)
    evaluation = await runtime.service.evaluation(rule_id)
    assert evaluation.status is EvaluationStatus.FAILED and evaluation.regressions == 1
    [broken] = [c for c in evaluation.detail if c.kind.value == "regression"]
    assert broken.feedback_id == earlier_rule.feedback_id and broken.holds is False
    assert "1 of 1 earlier fixes broken" in evaluation.summary


async def test_praise_kept_and_lost_is_reported(opened: Any, messages_api: FakeMessagesApi) -> None:
    messages_api.respond(*evaluation_responders())
    runtime = await opened()
    await runtime.service.submit(FeedbackIn(**PRAISE), REPORTER)
    kept = await rule_for(runtime, HOT)
    assert "1 of 1 praised answers kept" in (await runtime.service.evaluation(kept)).summary
    lost_rule = "- Khi trời nóng: KHÔNG gợi ý áo sơ mi linen"
    lost = await rule_for(
        runtime, {**HOT, "feedback_text": "Trời nóng mà vẫn gợi ý áo khoác, chán"}, new_rule=lost_rule, old_rule=""
    )
    evaluation = await runtime.service.evaluation(lost)
    assert evaluation.praise_lost == 1 and "0 of 1 praised answers kept" in evaluation.summary


@pytest.mark.parametrize(
    "failure",
    [rate_limited(retry_after=0), server_error(), answer_text("this is not json")],
    ids=["429", "500", "malformed"],
)
async def test_judge_failures_end_in_error_without_blocking_review_and_a_retry_works(
    opened: Any, messages_api: FakeMessagesApi, failure: Any
) -> None:
    runtime = await opened()
    messages_api.respond(*evaluation_responders())
    # the replay answers, then the judge fails
    calls = {"n": 0}

    def failing_judge(request: Any) -> Any:
        if request.answer_fields == {"holds", "reason"} and calls["n"] == 0:
            calls["n"] += 1
            return failure
        return None

    messages_api.responders.insert(0, failing_judge)
    rule_id = await rule_for(runtime, HOT)
    evaluation = await runtime.service.evaluation(rule_id)
    assert evaluation.status is EvaluationStatus.ERROR and evaluation.summary.startswith("Replay failed:")
    approved = await runtime.service.approve(rule_id, ADMIN)  # review goes on
    assert approved.status is RuleStatus.APPROVED
    retried = await runtime.service.evaluate(rule_id, ADMIN)
    assert retried.status is EvaluationStatus.PASSED


async def test_no_case_is_replayed_twice_for_one_rule_version(opened: Any, messages_api: FakeMessagesApi) -> None:
    messages_api.respond(*evaluation_responders())
    runtime = await opened()
    rule_id = await rule_for(runtime, HOT)
    sent = len(messages_api.requests)
    again = await runtime.service.evaluate(rule_id, ADMIN)
    assert again.status is EvaluationStatus.PASSED and len(messages_api.requests) == sent
    await runtime.service.edit(rule_id, ADMIN, new_rule=NEW_WEATHER_RULE + " nhé", module_name="fashion_rules.json")
    await runtime.service.drain()  # another line: another version, replayed once
    assert len(messages_api.requests) > sent


async def test_the_token_budget_stops_a_large_regression_set(opened: Any, messages_api: FakeMessagesApi) -> None:
    messages_api.respond(*evaluation_responders())
    runtime = await opened(eval_regressions=20, eval_concurrency=1, eval_token_budget=3_000)
    for n in range(20):  # 20 deployed rules of the file, each made from its own complaint
        rule_id = await rule_for(
            runtime, {**HOT, "feedback_text": f"Góp ý {n}: áo khoác"}, new_rule=f"- Quy tắc số {n}", old_rule=""
        )
        await runtime.service.approve(rule_id, ADMIN)
        await runtime.service.deploy(rule_id, ADMIN)
    sent = len(messages_api.requests)
    rule_id = await rule_for(runtime, HOT)
    evaluation = await runtime.service.evaluation(rule_id)
    replays = len(messages_api.requests) - sent
    assert evaluation.cases < 21 and replays < 2 * 21  # stopped by the budget, not run to the end
    assert evaluation.tokens <= 3_000 + 1_250  # at most one case past the budget (one replay and one judgment)


async def test_auto_approve_refuses_a_rule_whose_replay_failed(opened: Any, messages_api: FakeMessagesApi) -> None:
    messages_api.respond(*evaluation_responders())
    runtime = await opened(auto_approve_confidence=0.5)
    # the budget pattern: an additive rule (auto-approve's only kind), confident, that does not take the jacket out
    feedback = await runtime.service.submit(
        FeedbackIn(**{**HOT, "query": "Tìm áo đi làm", "feedback_text": "Gợi ý áo khoác đắt quá"}), REPORTER
    )
    rule = await runtime.service.generate(feedback.feedback_id, REPORTER)
    assert rule.old_rule is None and rule.confidence > 0.5  # would be auto-approved but for its replay
    evaluation = await runtime.service.evaluation(rule.rule_id)  # made before auto-approve looked at it
    assert evaluation.status is EvaluationStatus.FAILED and evaluation.fixes_complaint is False
    assert (await runtime.service.get_rule(rule.rule_id)).status is RuleStatus.PENDING


async def test_the_card_line_and_the_modal_pass_block_kit_checks(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi, messages_api: FakeMessagesApi
) -> None:
    messages_api.respond(*evaluation_responders())
    settings = slack_settings(tmp_path, rules_dir, slack_api, **claude_settings(tmp_path, rules_dir, messages_api))
    app = create_app(
        settings, open_runtime_fn=lambda s: open_runtime(s, generator=HeuristicRuleGenerator(s.allowed_modules))
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://autotrain.test") as http:
            slack = SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)
            feedback = await slack.service.submit(FeedbackIn(**HOT), REPORTER)
            await slack.service.drain()
            rule = await slack.store.get_rule_for_feedback(feedback.feedback_id)
            assert rule is not None
            updates = [c for c in slack_api.calls_to("chat.update") if ok(c) and rule.rule_id in c.params["text"]]
            card = updates[-1].params["blocks"]
            assert "🧪✅ Replayed: fixes the complaint" in block_texts(card)
            await slack.click("rule_show_replays", rule.rule_id)
            [opened_view] = await slack_api.wait_for("views.open")
            modal = opened_view.params["view"]
            assert modal["type"] == "modal" and "Before" in block_texts(modal["blocks"])
    assert slack_api.violations == []


async def test_replayed_by_the_reference_chatbot_and_judged_by_claude(
    opened: Any, messages_api: FakeMessagesApi
) -> None:
    """AUTOTRAIN_CHATBOT_REPLAY_URL: the chatbot itself answers with exactly the candidate's rules."""
    from tests.test_reference_chatbot import a_chatbot, running

    messages_api.respond(*evaluation_responders())
    with running(a_chatbot()) as chatbot_url:
        runtime = await opened(chatbot_replay_url=f"{chatbot_url}/replay")
        rule_id = await rule_for(runtime, HOT)
        evaluation = await runtime.service.evaluation(rule_id)
    assert evaluation.status is EvaluationStatus.PASSED, evaluation.summary
    [case] = evaluation.detail
    assert "Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày" in (case.answer_after or "")  # the rule it followed
    # Claude was asked to judge, never to play the chatbot
    assert all(r.schema is not None for r in messages_api.requests)
