"""Single-step interruptions of the pipeline, each stopped where a crash would stop it, and what the next
reconcile makes of it (moved here from tests/test_service.py; the SIGKILLed processes are in
tests/test_crash_safety.py). The ones that mean the same on PostgreSQL run on both backends: a deploy claimed in
the database whose change never reached the truth (the file on SQLite, a stored version on PostgreSQL) is aborted,
and a generation whose lease ran out is requeued.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from autotrain.models import FeedbackStatus, RuleStatus
from autotrain.service import PipelineService
from bot.runtime import Runtime
from tests.conftest import ADMIN, NEW_WEATHER_RULE, OLD_WEATHER_RULE, approved_rule, read_rule_lines, submit
from tests.reliability_support import interrupted_deploy, on_postgres, stored_versions


# SQLite only: on PostgreSQL a version is stored in the transaction that completes its deployment, so there is
# no change made but not recorded (the folder is a copy, and a copy written without a stored version is a hand edit)
async def test_reconcile_completes_a_deploy_whose_file_was_written(
    runtime: Runtime, service: PipelineService, rules_dir: Path
) -> None:
    rule_id, deployment_id = await interrupted_deploy(runtime, write_file=True)
    report = await service.reconcile()
    assert report.deployments_completed == [deployment_id]
    assert (await service.get_rule(rule_id)).status is RuleStatus.DEPLOYED
    assert (await service.list_deployments()).total == 1
    await service.rollback(rule_id, ADMIN)  # the repaired deployment can be rolled back
    assert OLD_WEATHER_RULE in read_rule_lines(rules_dir)


@pytest.mark.both_backends
async def test_reconcile_aborts_a_deploy_whose_file_was_not_written(
    runtime: Runtime, service: PipelineService, rules_dir: Path
) -> None:
    rule_id, deployment_id = await interrupted_deploy(runtime, write_file=False)
    report = await service.reconcile()
    assert report.deployments_aborted == [deployment_id]
    if on_postgres():  # the truth there: nothing stored for the claim
        assert len(await stored_versions(runtime.settings.database_url, "fashion_rules.json")) == 1
    rule = await service.get_rule(rule_id)
    assert rule.status is RuleStatus.APPROVED and rule.deployed_by is None
    assert (await service.list_deployments()).total == 0
    await service.deploy(rule_id, ADMIN)  # and it can be deployed again
    assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)


@pytest.mark.both_backends
async def test_reconcile_requeues_feedback_left_processing(runtime: Runtime, service: PipelineService) -> None:
    feedback = await submit(service)
    # a generation whose process stopped five minutes ago: its one-minute lease has run out
    assert await runtime.store.claim_feedback(
        feedback.feedback_id, now=runtime.clock() - timedelta(minutes=5), lease_seconds=60
    )
    report = await service.reconcile()
    assert report.feedback_requeued == [feedback.feedback_id]
    stored = await service.get_feedback(feedback.feedback_id)
    assert stored.status is FeedbackStatus.PENDING and "interrupted" in (stored.last_error or "")


# SQLite only: the backup is written before the file there; PostgreSQL writes none (the versions are the history)
async def test_failed_write_leaves_rule_approved_and_file_intact(
    runtime: Runtime, service: PipelineService, rules_dir: Path
) -> None:
    rule = await approved_rule(service)
    path = rules_dir / "fashion_rules.json"
    before = path.read_bytes()
    backups = rules_dir / ".autotrain" / "backups"
    backups.mkdir(parents=True)
    (backups / "fashion_rules.json").write_text("a file where the backup folder should be")
    with pytest.raises(Exception, match="could not write"):
        await service.deploy(rule.rule_id, ADMIN)
    assert path.read_bytes() == before
    assert (await service.get_rule(rule.rule_id)).status is RuleStatus.APPROVED
    assert (await service.list_deployments()).total == 0
    audit = await runtime.store.list_audit(subject_id=rule.rule_id, limit=50, offset=0)
    assert "deploy_failed" in [entry.action for entry in audit.items]
