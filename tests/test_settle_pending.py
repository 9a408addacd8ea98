"""A deployment left pending by a process that stopped mid-change is settled while the service runs (the
scheduler's `settle_pending` job calls `settle_left_pending`), not only at the next start or the next change of
its file; one whose change is still under way (the file's lock held) is waited for, never settled under it.

Over two `autotrain serve` processes on PostgreSQL, one SIGKILLed mid-deploy: tests/test_two_instances_postgres.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from autotrain.models import RuleStatus
from autotrain.service import PipelineService
from bot.runtime import Runtime
from tests.conftest import ADMIN, read_rule_lines
from tests.reliability_support import interrupted_deploy

MODULE = "fashion_rules.json"


@pytest.mark.both_backends
async def test_a_deploy_left_pending_without_its_file_is_aborted_while_running(
    runtime: Runtime, service: PipelineService, rules_dir: Path
) -> None:
    rule_id, deployment_id = await interrupted_deploy(runtime, write_file=False)
    assert (await service.get_rule(rule_id)).status is RuleStatus.DEPLOYED  # what a stopped process leaves

    assert await service.settle_left_pending() == ([], [deployment_id])
    rule = await service.get_rule(rule_id)
    assert rule.status is RuleStatus.APPROVED
    assert rule.new_rule not in read_rule_lines(rules_dir)
    assert await runtime.store.pending_deployments() == []
    assert await service.settle_left_pending() == ([], [])  # nothing more to do
    # and the rule can be deployed as usual
    assert (await service.deploy(rule_id, ADMIN)).rule.status is RuleStatus.DEPLOYED


# SQLite only: on PostgreSQL a file written without a stored version is no change (the database is the truth)
async def test_a_deploy_left_pending_with_its_file_written_is_completed(
    runtime: Runtime, service: PipelineService, rules_dir: Path
) -> None:
    rule_id, deployment_id = await interrupted_deploy(runtime, write_file=True)
    assert await service.settle_left_pending() == ([deployment_id], [])
    rule = await service.get_rule(rule_id)
    assert rule.status is RuleStatus.DEPLOYED
    assert read_rule_lines(rules_dir).count(rule.new_rule) == 1
    assert [d.deployment_id for d in (await service.list_deployments()).items] == [deployment_id]


# (the file's lock taken as another process takes it: flock on SQLite; on PostgreSQL the two-instance SIGKILL
# test of tests/test_two_instances_postgres.py settles only once the killed instance's lock is gone)
async def test_a_change_under_way_is_waited_for_not_settled(runtime: Runtime, service: PipelineService) -> None:
    rule_id, deployment_id = await interrupted_deploy(runtime, write_file=False)
    handle = runtime.rule_files.acquire(MODULE)  # the file's lock, as the process making the change holds it
    try:
        settling = asyncio.create_task(service.settle_left_pending())
        await asyncio.sleep(0.5)
        assert not settling.done()
        assert [d.deployment_id for d in await runtime.store.pending_deployments()] == [deployment_id]
        assert (await service.get_rule(rule_id)).status is RuleStatus.DEPLOYED
    finally:
        runtime.rule_files.release(handle)
    assert await asyncio.wait_for(settling, timeout=10) == ([], [deployment_id])
    assert (await service.get_rule(rule_id)).status is RuleStatus.APPROVED
