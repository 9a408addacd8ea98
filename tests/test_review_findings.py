"""Findings of a hostile review of one complaint one card, the rule's effect, and replay before deploy: each
test pins a defect a user would hit (it failed before its fix)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from autotrain.clustering import DEFAULT_THRESHOLD
from autotrain.effect import CanaryDecision, EffectVerdict
from autotrain.errors import EvaluationRequired
from autotrain.evaluation import (
    EvalCase,
    Evaluation,
    EvaluationLimits,
    EvaluationStatus,
    Judgment,
    ReplayAnswer,
    Revision,
    candidate_version,
)
from autotrain.models import FeedbackIn, FeedbackStatus, RuleStatus
from autotrain.rollout import in_rollout
from autotrain.usecases.evaluate import EvaluateRules
from bot.runtime import Runtime, open_runtime
from storage.migrations import MIGRATIONS, SCHEMA_VERSION
from storage.sqlite.connection import statements
from tests.conftest import ADMIN, REPORTER, make_settings
from tests.fakes.clock import FakeClock

ANSWER = "Mình gợi ý áo khoác nỉ này nhé"
JACKET = [
    ("Trời nóng quá mà AI còn tư vấn áo khoác", "tìm áo cho trời 35 độ"),
    ("troi nong 35 do ma bot goi y ao khoac", "ao mac di choi troi nong"),
    ("Trời nóng thế này mà bot vẫn tư vấn áo khoác", "áo cho trời nóng 35 độ"),
]
OTHER = [
    ("Giao hàng chậm quá", "khi nào nhận được hàng"),
    ("Mã giảm giá không áp dụng được", "mã giảm giá tháng này"),
    ("Ảnh sản phẩm bị mờ", "xem ảnh váy lụa"),
    ("Size giày nên có bảng quy đổi", "size giày 39"),
    ("Không tìm thấy nút thanh toán", "thanh toán thế nào"),
    ("Bot trả lời bằng tiếng Anh", "tư vấn quần jean"),
]


def feedback(text: str, query: str, user_id: str = "u-1") -> FeedbackIn:
    return FeedbackIn(query=query, ai_response=ANSWER, feedback_text=text, feedback_type="bug", user_id=user_id)


@pytest.fixture
async def world(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Runtime] = []

    async def opener(clock: FakeClock | None = None, **overrides: Any) -> Runtime:
        values: dict[str, Any] = {"cluster_threshold": DEFAULT_THRESHOLD, "effect_min_sample": 10}
        settings = make_settings(tmp_path, rules_dir, **{**values, **overrides})
        runtime = await open_runtime(settings, clock=clock or FakeClock())
        opened.append(runtime)
        return runtime

    yield opener
    for runtime in opened:
        await runtime.close()


# ---------------------------------------------------------------------- one complaint, one card


async def test_a_rule_rejected_while_a_feedback_is_matched_to_it_does_not_swallow_that_feedback(
    world: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intake matches (a read), then attaches (a write): an admin who rejects the rule in between must not
    leave the new feedback `processed` under a rejected rule, with no rule of its own ever."""
    runtime: Runtime = await world()
    service = runtime.service
    first = await service.submit(feedback(*JACKET[0]), REPORTER)
    rule = await service.generate(first.feedback_id, REPORTER)

    complaints = runtime.service._intake.generation.complaints  # type: ignore[attr-defined]
    match = complaints.match

    async def match_then_reject(*args: Any, **kwargs: Any) -> Any:
        found = await match(*args, **kwargs)
        if found.under_review is not None:
            await service.reject(found.under_review.rule_id, ADMIN, "not like this")
        return found

    monkeypatch.setattr(complaints, "match", match_then_reject)
    second = await service.submit(feedback(*JACKET[1], user_id="u-2"), REPORTER)
    assert (await service.get_rule(rule.rule_id)).status is RuleStatus.REJECTED
    assert second.status is FeedbackStatus.PENDING, second
    assert second.rule_id is None
    assert (await service.get_rule(rule.rule_id)).cluster_size == 1


@pytest.mark.parametrize("status", [RuleStatus.REJECTED, RuleStatus.ROLLED_BACK])
async def test_the_store_attaches_no_feedback_to_a_rejected_or_rolled_back_rule(
    world: Callable[..., Any], status: RuleStatus
) -> None:
    runtime: Runtime = await world(cluster_threshold=None)
    service = runtime.service
    first = await service.submit(feedback(*JACKET[0]), REPORTER)
    rule = await service.generate(first.feedback_id, REPORTER)
    if status is RuleStatus.REJECTED:
        await service.reject(rule.rule_id, ADMIN)
    else:
        await service.approve(rule.rule_id, ADMIN)
        await service.deploy(rule.rule_id, ADMIN)
        await service.rollback(rule.rule_id, ADMIN)
    other = await service.submit(feedback(*JACKET[1], user_id="u-2"), REPORTER)
    clock = runtime.service._intake.clock  # type: ignore[attr-defined]
    assert await runtime.store.attach_feedback(rule.rule_id, [other.feedback_id], actor_id="system", now=clock()) == []
    assert (await service.get_feedback(other.feedback_id)).status is FeedbackStatus.PENDING


async def test_rejecting_a_rule_rejects_the_feedback_attached_to_it_too(world: Callable[..., Any]) -> None:
    """README, Concepts: 'the feedback of a rejected rule becomes rejected' — attached feedback is the rule's
    feedback as much as the one it was made from (its rule_id names the rule)."""
    runtime: Runtime = await world()
    service = runtime.service
    first = await service.submit(feedback(*JACKET[0]), REPORTER)
    rule = await service.generate(first.feedback_id, REPORTER)
    second = await service.submit(feedback(*JACKET[1], user_id="u-2"), REPORTER)
    assert second.rule_id == rule.rule_id and second.status is FeedbackStatus.PROCESSED

    await service.reject(rule.rule_id, ADMIN, "not like this")
    assert (await service.get_feedback(first.feedback_id)).status is FeedbackStatus.REJECTED
    assert (await service.get_feedback(second.feedback_id)).status is FeedbackStatus.REJECTED
    audit = await runtime.store.list_audit(subject_id=second.feedback_id, limit=50, offset=0)
    assert "feedback_rejected" in [e.action for e in audit.items]


async def test_a_fold_that_cannot_attach_records_its_generation_once(
    world: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proposal's line is already proposed by a rule under review, which is rejected before the fold
    attaches to it: the feedback gets its own rule, and the one generation is counted once (tokens, cost)."""
    runtime: Runtime = await world()
    service = runtime.service
    first = await service.submit(feedback(*JACKET[0]), REPORTER)
    rule = await service.generate(first.feedback_id, REPORTER)
    second = await service.submit(feedback(*OTHER[0], user_id="u-2"), REPORTER)  # another complaint

    generation = runtime.service._generation  # type: ignore[attr-defined]

    async def proposing_then_rejected(proposal: Any) -> Any:
        await service.reject(rule.rule_id, ADMIN)
        return await service.get_rule(rule.rule_id)

    monkeypatch.setattr(generation.complaints, "rule_proposing", proposing_then_rejected)
    own = await service.generate(second.feedback_id, REPORTER)
    assert own.rule_id != rule.rule_id and own.feedback_id == second.feedback_id
    assert (await runtime.store.generation_totals()).attempts == 2


# ---------------------------------------------------------------------- did the rule work?


async def test_a_working_canary_is_not_called_not_working(world: Callable[..., Any]) -> None:
    """A 10 % canary whose users stopped complaining while the 90 % without the rule go on: the evidence says
    promote, so the verdict must not say not_working and the alert must not ask to roll it back."""
    clock = FakeClock()
    runtime: Runtime = await world(clock)
    service = runtime.service
    first = await service.submit(feedback(*JACKET[0]), REPORTER)
    for n, (text, query) in enumerate(OTHER + OTHER[:3]):
        clock.advance(hours=1)
        await service.submit(feedback(f"{text} ({n})", query, user_id=f"u-{n + 3}"), REPORTER)
    rule = await service.generate(first.feedback_id, REPORTER)
    await service.approve(rule.rule_id, ADMIN)
    await service.deploy(rule.rule_id, ADMIN, rollout_percent=10)
    clock.advance(minutes=5)

    users = [f"user-{n}" for n in range(3000)]
    inside = [u for u in users if in_rollout(rule.rule_id, u, 10)][:12]
    outside = [u for u in users if not in_rollout(rule.rule_id, u, 10)][:12]
    for n, user in enumerate(outside):  # without the rule, the complaint goes on
        clock.advance(minutes=1)
        text, query = JACKET[n % len(JACKET)] if n < 8 else OTHER[n % len(OTHER)]
        await service.submit(feedback(text if n < 8 else f"{text} [{n}]", query, user_id=user), REPORTER)
    for n, user in enumerate(inside):  # with it, never again
        clock.advance(minutes=1)
        text, query = OTHER[n % len(OTHER)]
        await service.submit(feedback(f"{text} <{n}>", query, user_id=user), REPORTER)

    effect = (await service.rule_detail(rule.rule_id)).effect
    assert effect is not None and effect.canary is not None
    assert effect.canary.decision is CanaryDecision.PROMOTE
    assert effect.verdict is not EffectVerdict.NOT_WORKING, effect
    assert rule.rule_id not in (await runtime.monitor.metrics()).rules_not_working


# ---------------------------------------------------------------------- replay before deploy


async def test_the_replay_gate_looks_at_the_evaluation_of_the_line_being_deployed(world: Callable[..., Any]) -> None:
    """A replay passed for the line as generated; the admin then rewrites the line. The rewritten line was
    never replayed: with AUTOTRAIN_REQUIRE_EVALUATION it must not deploy on the old line's pass."""
    clock = FakeClock()
    runtime: Runtime = await world(clock, cluster_threshold=None, require_evaluation=True)
    service = runtime.service
    first = await service.submit(feedback(*JACKET[0]), REPORTER)
    rule = await service.generate(first.feedback_id, REPORTER)
    await runtime.store.save_evaluation(
        Evaluation(
            rule_id=rule.rule_id,
            rule_version=candidate_version(rule.module_name, rule.old_rule, rule.new_rule),
            status=EvaluationStatus.PASSED,
            fixes_complaint=True,
            regressions=0,
            praise_lost=0,
            cases=1,
            summary="passed",
            at=clock(),
            new_rule=rule.new_rule,
        )
    )
    await service.edit(rule.rule_id, ADMIN, new_rule="- Luôn gợi ý áo khoác dày, kể cả khi trời nóng")
    await service.approve(rule.rule_id, ADMIN)
    with pytest.raises(EvaluationRequired):
        await service.deploy(rule.rule_id, ADMIN)
    assert (await service.get_rule(rule.rule_id)).status is RuleStatus.APPROVED


class RevisingJudge:
    """Fails the first line, and while it thinks of a better one the admin rewrites the rule (the edit the
    reviewer makes on the card meanwhile); every other line passes."""

    name = "test-judge"

    def __init__(self, first_line: str, admin_edit: Callable[[], Any]) -> None:
        self.first_line = first_line
        self.admin_edit = admin_edit

    async def judge(self, case: EvalCase, *, candidate: str) -> Judgment:
        return Judgment(holds=candidate != self.first_line, reason="still suggests a jacket")

    async def revise(self, candidate: str, case: EvalCase, reason: str) -> Revision:
        await self.admin_edit()
        return Revision(rule="- Khi trời nóng: chỉ gợi ý áo thun mỏng")


class EchoReplay:
    name = "test-replay"

    async def replay(self, query: str, files: Any, *, user_id: str | None) -> ReplayAnswer:
        return ReplayAnswer(answer="an answer")


async def test_a_revision_never_overwrites_the_line_an_admin_wrote_meanwhile(world: Callable[..., Any]) -> None:
    clock = FakeClock()
    runtime: Runtime = await world(clock, cluster_threshold=None)
    service = runtime.service
    first = await service.submit(feedback(*JACKET[0]), REPORTER)
    rule = await service.generate(first.feedback_id, REPORTER)
    admins_line = "- Khi trời trên 30°: không gợi ý áo khoác, gợi ý đồ thoáng mát"

    after_edit: list[asyncio.Task[Evaluation]] = []

    async def admin_edit() -> None:
        await service.edit(rule.rule_id, ADMIN, new_rule=admins_line)
        after_edit.append(asyncio.create_task(evaluations.evaluate(rule.rule_id)))  # what the edit's event starts

    evaluations = EvaluateRules(
        rules=runtime.store,
        evaluations=runtime.store,
        rule_files=runtime.rule_files,
        replay=EchoReplay(),
        judge=RevisingJudge(rule.new_rule, admin_edit),
        clock=clock,
        limits=EvaluationLimits(),
        enabled=True,
        wake=lambda: None,
    )
    await evaluations.evaluate(rule.rule_id)
    edited = await service.get_rule(rule.rule_id)
    assert edited.new_rule == admins_line
    # and the admin's line is replayed itself, not answered with the replay of the line it replaced
    [task] = after_edit
    replayed = await task
    assert replayed.rule_version == candidate_version(edited.module_name, edited.old_rule, admins_line)
    assert replayed.new_rule == admins_line and replayed.status is EvaluationStatus.PASSED


# ---------------------------------------------------------------------- migrations


def v8_database(path: Path) -> None:
    """A database as the previous release left it (schema 8): feedback, a rule with attached feedback, one
    deployed with its deployment and a failed reload, a pending one with its card and events."""
    at = "2025-06-01T09:00:00.000000+00:00"
    deployed_at = "2025-06-01T12:00:00.000000+00:00"
    with sqlite3.connect(path) as db:
        for version, script in enumerate(MIGRATIONS[:8], start=1):
            for statement in statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
        texts = [*JACKET, *OTHER[:3]]
        for n, (text, query) in enumerate(texts, start=1):
            db.execute(
                "INSERT INTO feedbacks (feedback_id, user_id, query, ai_response, feedback_text, feedback_type,"
                " status, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'bug', ?, 'api', ?, ?)",
                (f"FB-{1000 + n}", f"u-{n}", query, ANSWER, text, "processed" if n <= 3 else "pending", at, at),
            )
        db.execute(
            "INSERT INTO feedbacks (feedback_id, user_id, query, ai_response, feedback_text, feedback_type,"
            " status, source, created_at, updated_at) VALUES ('FB-1100', 'u-9', 'áo đi biển', 'Áo linen',"
            " 'Bot gợi ý đúng ý mình', 'praise', 'processed', 'api', ?, ?)",
            (at, at),
        )
        db.execute(
            "INSERT INTO generated_rules (rule_id, feedback_id, module_name, rule_type, old_rule, new_rule,"
            " reasoning, confidence, status, warnings, generator, created_at, updated_at, approved_by,"
            " approved_at, deployed_by, deployed_at, cluster_size) VALUES ('RUL-1001', 'FB-1001',"
            " 'fashion_rules.json', 'prompt_update', NULL, '- Khi trời nóng: không gợi ý áo khoác', 'why', 0.8,"
            " 'deployed', '[]', 'heuristic', ?, ?, 'U_ADMIN', ?, 'U_ADMIN', ?, 2)",
            (at, at, at, deployed_at),
        )
        db.execute("INSERT INTO rule_feedbacks (rule_id, feedback_id) VALUES ('RUL-1001', 'FB-1002')")
        db.execute(
            "INSERT INTO deployments (rule_id, module_name, deployed_by, deployed_at, version_before,"
            " version_after, outcome, state, previous_status, reload_status, reload_error) VALUES ('RUL-1001',"
            " 'fashion_rules.json', 'U_ADMIN', ?, 'a', 'b', 'appended', 'applied', 'approved', 'failed', 'down')",
            (deployed_at,),
        )
        db.execute(
            "INSERT INTO generated_rules (rule_id, feedback_id, module_name, rule_type, old_rule, new_rule,"
            " reasoning, confidence, status, warnings, generator, created_at, updated_at) VALUES ('RUL-1002',"
            " 'FB-1003', 'fashion_rules.json', 'prompt_update', NULL, '- Hỏi thời tiết trước', 'why', 0.7,"
            " 'pending', '[]', 'heuristic', ?, ?)",
            (at, at),
        )
        db.execute(
            "INSERT INTO events (kind, rule_id, actor_id, rule_snapshot, created_at, ready_at, delivered_at)"
            " VALUES ('rule_created', 'RUL-1002', 'system', '{}', ?, ?, ?)",
            (at, at, at),
        )


async def test_a_schema_8_database_with_data_opens_and_works(tmp_path: Path, rules_dir: Path) -> None:
    path = tmp_path / "autotrain.db"
    v8_database(path)
    clock = FakeClock()
    settings = make_settings(tmp_path, rules_dir, cluster_threshold=DEFAULT_THRESHOLD)
    runtime = await open_runtime(settings, clock=clock)
    try:
        assert await runtime.store.schema_version() == SCHEMA_VERSION
        service = runtime.service
        status = await service.status()
        assert status is not None
        deployed = await service.rule_detail("RUL-1001")
        assert deployed.effect is not None and deployed.recurrences == 0
        assert (deployed.effect.before.feedback, deployed.effect.before.complaints) == (7, 2)
        assert (await service.rule_detail("RUL-1002")).evaluation is None
        # the corpus of the old feedback is counted once, and matching works on it
        again = await service.submit(feedback(*JACKET[0], user_id="u-20"), REPORTER)
        assert again.recurrence_of == "RUL-1001"
        assert again.rule_id == "RUL-1002" and again.status is FeedbackStatus.PROCESSED
        assert (await runtime.store.document_frequencies([])).documents == 8
        unrelated = await service.submit(feedback(*OTHER[4], user_id="u-21"), REPORTER)
        assert unrelated.recurrence_of is None and unrelated.status is FeedbackStatus.PENDING
        assert (await runtime.store.document_frequencies([])).documents == 9
        assert await runtime.store.reloads_due(now=clock()) == []  # no retry was scheduled before schema 12
        await service.reject("RUL-1002", ADMIN)
        await service.rollback("RUL-1001", ADMIN)
        await service.drain()
    finally:
        await runtime.close()
