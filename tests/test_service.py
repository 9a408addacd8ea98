"""The pipeline service on a real SQLite file and real rule files: flows, rollback, reconcile, failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from autotrain.errors import GenerationFailed, InvalidInput, PermissionDenied, TransitionRefused
from autotrain.models import (
    DeployOutcome,
    Feedback,
    FeedbackStatus,
    PipelineEvent,
    Rule,
    RuleStatus,
    RuleWarning,
)
from autotrain.notifications import EventDispatcher
from autotrain.ports import GenerationResult
from autotrain.rulefiles import content_version
from autotrain.service import PipelineService
from bot.runtime import Runtime, open_runtime
from tests.conftest import (
    ADMIN,
    HEIGHT_FEEDBACK,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    REPORTER,
    WEATHER_FEEDBACK,
    approved_rule,
    make_settings,
    read_rule_lines,
    submit,
)
from tests.fakes.generators import SwitchableGenerator

HEIGHT_OLD = "- Gợi ý đầm maxi cho mọi khách"
HEIGHT_NEW = "- Dưới 1m55: gợi ý đầm ngắn (midi, knee-length)"


class RecordingNotifier:
    def __init__(self) -> None:
        self.events: list[PipelineEvent] = []

    async def notify(self, event: PipelineEvent) -> None:
        self.events.append(event)


class FailingGenerator:
    """A rule generator that fails like an upstream outage (the Claude issue tests the real client)."""

    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(
        self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]], *, recurrence: Rule | None = None
    ) -> GenerationResult:
        self.calls += 1
        raise ConnectionError("upstream unavailable")


async def test_submit_stores_feedback_with_ids_from_1001(service: PipelineService) -> None:
    first = await submit(service)
    second = await submit(service, HEIGHT_FEEDBACK)
    assert (first.feedback_id, second.feedback_id) == ("FB-1001", "FB-1002")
    stored = await service.get_feedback("FB-1001")
    assert stored.query == WEATHER_FEEDBACK["query"]
    assert stored.feedback_text == WEATHER_FEEDBACK["feedback_text"]
    assert stored.status is FeedbackStatus.PENDING
    assert stored.user_id == REPORTER.id  # no user_id in the body: the submitter


async def test_auto_generate_creates_rule_after_submit(tmp_path: Path, rules_dir: Path) -> None:
    runtime = await open_runtime(make_settings(tmp_path, rules_dir, auto_generate=True))
    try:
        feedback = await submit(runtime.service)
        await runtime.generation.drain()  # the background generation, not yet the delivery of its events
        rule = await runtime.store.get_rule_for_feedback(feedback.feedback_id)
        assert rule is not None and rule.rule_id == "RUL-1001"
        # the events it recorded, delivered to a notifier of the test's own
        notifier = RecordingNotifier()
        dispatcher = EventDispatcher(
            outbox=runtime.store, deployments=runtime.store, notifiers=[notifier], clock=runtime.clock, holder="test"
        )
        await dispatcher.drain()
        assert [e.kind.value for e in notifier.events] == ["rule_created"]
        assert (await runtime.service.get_feedback(feedback.feedback_id)).status is FeedbackStatus.PROCESSED
    finally:
        await runtime.close()


async def test_concurrent_generate_of_one_feedback_makes_one_rule(runtime: Runtime, service: PipelineService) -> None:
    feedback = await submit(service)
    rules = await asyncio.gather(*(service.generate(feedback.feedback_id, REPORTER) for _ in range(10)))
    assert {rule.rule_id for rule in rules} == {"RUL-1001"}
    audit = await runtime.store.list_audit(subject_id=feedback.feedback_id, limit=50, offset=0)
    assert [entry.action for entry in audit.items].count("generation_started") == 1
    assert (await service.list_rules()).total == 1


async def test_failed_generation_returns_feedback_to_pending_with_error(
    service: PipelineService, generator: SwitchableGenerator
) -> None:
    feedback = await submit(service)
    working = generator.inner
    generator.inner = FailingGenerator()
    with pytest.raises(GenerationFailed, match="upstream unavailable"):
        await service.generate(feedback.feedback_id, REPORTER)
    stored = await service.get_feedback(feedback.feedback_id)
    assert stored.status is FeedbackStatus.PENDING
    assert stored.error_count == 1
    assert "upstream unavailable" in (stored.last_error or "")
    assert (await service.list_rules()).total == 0

    generator.inner = working
    rule = await service.generate(feedback.feedback_id, REPORTER)
    assert rule.new_rule == NEW_WEATHER_RULE
    assert (await service.get_feedback(feedback.feedback_id)).error_count == 1


async def test_run_all_reports_progress_and_errors(service: PipelineService) -> None:
    for payload in (WEATHER_FEEDBACK, HEIGHT_FEEDBACK, {**WEATHER_FEEDBACK, "feedback_type": "praise"}):
        await submit(service, payload)
    progress: list[tuple[int, int]] = []

    async def on_progress(done: int, total: int, errors: list[dict[str, str]]) -> None:
        progress.append((done, total))

    assert (await service.get_feedback("FB-1003")).status is FeedbackStatus.PROCESSED  # praise: at once
    summary = await service.run_all(ADMIN, on_progress=on_progress)
    assert summary.total == 2
    assert summary.rules_created == ["RUL-1001", "RUL-1002"]
    assert summary.skipped == []
    assert summary.errors == []
    assert sorted(progress) == [(1, 2), (2, 2)]

    again = await service.run_all(ADMIN)
    assert again.total == 0


async def test_run_all_with_failing_generator_keeps_feedback_pending(
    service: PipelineService, generator: SwitchableGenerator
) -> None:
    await submit(service)
    await submit(service, HEIGHT_FEEDBACK)
    generator.inner = FailingGenerator()
    summary = await service.run_all(ADMIN)
    assert [error["feedback_id"] for error in summary.errors] == ["FB-1001", "FB-1002"]
    assert (await service.status()).pending_feedback == 2


async def test_run_all_needs_admin(service: PipelineService) -> None:
    await submit(service)
    with pytest.raises(PermissionDenied):
        await service.run_all(REPORTER)
    assert (await service.get_feedback("FB-1001")).status is FeedbackStatus.PENDING


async def test_deploy_replaces_old_rule_and_records_versions(service: PipelineService, rules_dir: Path) -> None:
    before = (rules_dir / "fashion_rules.json").read_bytes()
    rule = await approved_rule(service)
    result = await service.deploy(rule.rule_id, ADMIN)
    after = (rules_dir / "fashion_rules.json").read_bytes()
    assert result.rule.status is RuleStatus.DEPLOYED
    assert result.rule.deployed_by == ADMIN.id
    assert result.deployment.outcome is DeployOutcome.REPLACED
    assert result.deployment.version_before == content_version(before)
    assert result.deployment.version_after == content_version(after)
    lines = read_rule_lines(rules_dir)
    assert NEW_WEATHER_RULE in lines and OLD_WEATHER_RULE not in lines
    entry = next(e for e in json.loads(after)["rules"] if e["rule"] == NEW_WEATHER_RULE)
    assert entry["rule_id"] == rule.rule_id and entry["added_from"] == rule.feedback_id
    assert Path(result.deployment.backup_path or "").read_bytes() == before


async def test_rollback_reverts_one_change_and_keeps_later_deploys(service: PipelineService, rules_dir: Path) -> None:
    original = read_rule_lines(rules_dir)
    weather = await approved_rule(service)
    height = await approved_rule(service, HEIGHT_FEEDBACK)
    await service.deploy(weather.rule_id, ADMIN)
    await service.deploy(height.rule_id, ADMIN)

    result = await service.rollback(weather.rule_id, ADMIN)
    assert result.rule.status is RuleStatus.ROLLED_BACK
    assert result.deployment.rollback_of is not None
    lines = read_rule_lines(rules_dir)
    assert lines.index(OLD_WEATHER_RULE) == original.index(OLD_WEATHER_RULE)  # back in its place
    assert NEW_WEATHER_RULE not in lines
    assert HEIGHT_NEW in lines and HEIGHT_OLD not in lines  # the later deploy stays

    with pytest.raises(TransitionRefused):
        await service.rollback(weather.rule_id, ADMIN)
    deployments = await service.list_deployments()
    assert deployments.total == 3


async def test_rollback_keeps_a_line_another_deployed_rule_asks_for(service: PipelineService, rules_dir: Path) -> None:
    first = await approved_rule(service)
    second = await approved_rule(service, {**WEATHER_FEEDBACK, "feedback_text": "Nóng thế mà còn gợi ý áo khoác"})
    assert first.new_rule == second.new_rule
    await service.deploy(first.rule_id, ADMIN)
    noop = await service.deploy(second.rule_id, ADMIN)
    assert noop.deployment.outcome is DeployOutcome.NOOP
    assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1

    await service.rollback(first.rule_id, ADMIN)
    assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)  # second still deployed and asks for it
    await service.rollback(second.rule_id, ADMIN)
    lines = read_rule_lines(rules_dir)
    assert NEW_WEATHER_RULE not in lines
    assert lines.count(OLD_WEATHER_RULE) == 1


async def test_deploy_appends_with_warning_when_old_rule_is_gone(service: PipelineService, rules_dir: Path) -> None:
    rule = await approved_rule(service)
    path = rules_dir / "fashion_rules.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["rules"] = [e for e in data["rules"] if e["rule"] != OLD_WEATHER_RULE]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    result = await service.deploy(rule.rule_id, ADMIN)
    assert result.deployment.outcome is DeployOutcome.APPENDED
    assert result.deployment.change["warning"] == "old_rule_not_found"
    assert read_rule_lines(rules_dir)[-1] == NEW_WEATHER_RULE


async def test_edit_changes_pending_rule_and_is_audited(
    runtime: Runtime, service: PipelineService, rules_dir: Path
) -> None:
    feedback = await submit(service)
    rule = await service.generate(feedback.feedback_id, REPORTER)
    # the line it replaces is in fashion_rules.json, not in prompt_v2.txt: refused, never turned into an append
    with pytest.raises(InvalidInput, match="the rule to replace") as refused:
        await service.edit(
            rule.rule_id, ADMIN, new_rule="Khi trời trên 30 độ: gợi ý áo thun, váy mỏng", module_name="prompt_v2.txt"
        )
    assert refused.value.params["field"] == "old_rule"
    assert (await service.get_rule(rule.rule_id)).new_rule == NEW_WEATHER_RULE
    edited = await service.edit(
        rule.rule_id,
        ADMIN,
        new_rule="Khi trời trên 30 độ: gợi ý áo thun, váy mỏng",
        module_name="prompt_v2.txt",
        old_rule="",  # append
    )
    assert edited.new_rule == "- Khi trời trên 30 độ: gợi ý áo thun, váy mỏng"
    assert edited.module_name == "prompt_v2.txt"
    assert edited.old_rule is None
    assert RuleWarning.OLD_RULE_NOT_FOUND not in edited.warnings
    assert edited.edited_by == ADMIN.id
    audit = await runtime.store.list_audit(subject_id=rule.rule_id, limit=50, offset=0)
    edit_entry = next(entry for entry in audit.items if entry.action == "rule_edited")
    assert edit_entry.detail["before"]["new_rule"] == NEW_WEATHER_RULE

    await service.approve(rule.rule_id, ADMIN)
    with pytest.raises(TransitionRefused, match="only pending"):
        await service.edit(rule.rule_id, ADMIN, new_rule="- khác")
    await service.deploy(rule.rule_id, ADMIN)
    assert edited.new_rule in read_rule_lines(rules_dir, "prompt_v2.txt")


async def test_reject_closes_rule_and_feedback(service: PipelineService) -> None:
    rule = await approved_rule(service)
    rejected = await service.reject(rule.rule_id, ADMIN, reason="trùng với quy tắc khác")
    assert rejected.status is RuleStatus.REJECTED
    assert rejected.reject_reason == "trùng với quy tắc khác"
    assert (await service.get_feedback(rule.feedback_id)).status is FeedbackStatus.REJECTED
    with pytest.raises(TransitionRefused):
        await service.deploy(rule.rule_id, ADMIN)


async def test_every_transition_is_audited(runtime: Runtime, service: PipelineService) -> None:
    rule = await approved_rule(service)
    await service.deploy(rule.rule_id, ADMIN)
    await service.rollback(rule.rule_id, ADMIN)
    audit = await runtime.store.list_audit(subject_id=rule.rule_id, limit=50, offset=0)
    moves = [(e.action, e.from_state, e.to_state, e.actor) for e in audit.items if e.to_state]
    assert moves == [
        ("rule_created", None, "pending", "system"),
        ("rule_approved", "pending", "approved", ADMIN.id),
        ("rule_deployed", "approved", "deployed", ADMIN.id),
        ("rule_rolled_back", "deployed", "rolled_back", ADMIN.id),
    ]


async def test_status_counts(service: PipelineService) -> None:
    rule = await approved_rule(service)
    await submit(service, HEIGHT_FEEDBACK)
    await service.deploy(rule.rule_id, ADMIN)
    report = await service.status()
    assert report.feedback_by_status == {"pending": 1, "processing": 0, "processed": 1, "rejected": 0}
    assert report.feedback_by_type["bug"] == 2
    assert report.rules_by_status["deployed"] == 1
    assert (report.deployments_total, report.deployed_today, report.rollbacks_total) == (1, 1, 0)
    assert report.last_deployments[0].rule_id == rule.rule_id
    assert report.generator == "heuristic"


async def test_rollback_of_noop_keeps_a_line_that_was_there_before(service: PipelineService, rules_dir: Path) -> None:
    existing = "- Không gợi ý sản phẩm đã hết hàng"
    feedback = await submit(service)
    rule = await service.generate(feedback.feedback_id, REPORTER)
    await service.edit(rule.rule_id, ADMIN, new_rule=existing, old_rule="")
    await service.approve(rule.rule_id, ADMIN)
    before = (rules_dir / "fashion_rules.json").read_bytes()
    deployed = await service.deploy(rule.rule_id, ADMIN)
    assert deployed.deployment.outcome is DeployOutcome.NOOP
    assert deployed.deployment.reload_status == "skipped"
    await service.rollback(rule.rule_id, ADMIN)
    assert (rules_dir / "fashion_rules.json").read_bytes() == before


async def test_status_counts_events_not_yet_delivered(service: PipelineService) -> None:
    rule = await approved_rule(service)  # created and approved: two events in the outbox
    assert (await service.status()).events_undelivered == 2
    await service.drain()
    assert (await service.status()).events_undelivered == 0
    await service.deploy(rule.rule_id, ADMIN)
    assert (await service.status()).events_undelivered == 1
