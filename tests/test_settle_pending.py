"""A deployment left pending by a process that stopped mid-change is settled while the service runs (the
scheduler's `settle_pending` job calls `settle_left_pending`), not only at the next start or the next change of
its file; one whose change is still under way (the file's lock held) is waited for, never settled under it.

Over two `autotrain serve` processes on PostgreSQL, one SIGKILLed mid-deploy: tests/test_two_instances_postgres.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from autotrain.models import RuleStatus
from autotrain.ports import NewDeployment
from autotrain.rulefiles import content_version
from autotrain.service import PipelineService
from bot.runtime import Runtime
from tests.conftest import ADMIN, approved_rule, read_rule_lines

MODULE = "fashion_rules.json"


async def begin_only(runtime: Runtime, service: PipelineService, *, write_file: bool) -> tuple[str, int]:
    """The first steps of a deploy, by the store itself (the pending row; the file written or not), as a process
    killed just after them leaves it."""
    rule = await approved_rule(service)
    previous, document = runtime.rule_files.read(rule.module_name)
    change = document.apply(new_rule=rule.new_rule, old_rule=rule.old_rule, entry={"rule_id": rule.rule_id})
    deployment_id = await runtime.store.begin_deployment(
        NewDeployment(
            rule_id=rule.rule_id,
            module_name=rule.module_name,
            deployed_by=ADMIN.id,
            version_before=content_version(previous),
            version_after=content_version(change.content),
            outcome=change.outcome,
            change=change.detail,
        ),
        expected=RuleStatus.APPROVED,
        target=RuleStatus.DEPLOYED,
        now=runtime.clock(),
    )
    assert deployment_id is not None
    if write_file:
        runtime.rule_files.write(rule.module_name, change.content, previous, rule.rule_id)
    return rule.rule_id, deployment_id


async def test_a_deploy_left_pending_without_its_file_is_aborted_while_running(
    runtime: Runtime, service: PipelineService, rules_dir: Path
) -> None:
    rule_id, deployment_id = await begin_only(runtime, service, write_file=False)
    assert (await service.get_rule(rule_id)).status is RuleStatus.DEPLOYED  # what a stopped process leaves

    assert await service.settle_left_pending() == ([], [deployment_id])
    rule = await service.get_rule(rule_id)
    assert rule.status is RuleStatus.APPROVED
    assert rule.new_rule not in read_rule_lines(rules_dir)
    assert await runtime.store.pending_deployments() == []
    assert await service.settle_left_pending() == ([], [])  # nothing more to do
    # and the rule can be deployed as usual
    assert (await service.deploy(rule_id, ADMIN)).rule.status is RuleStatus.DEPLOYED


async def test_a_deploy_left_pending_with_its_file_written_is_completed(
    runtime: Runtime, service: PipelineService, rules_dir: Path
) -> None:
    rule_id, deployment_id = await begin_only(runtime, service, write_file=True)
    assert await service.settle_left_pending() == ([deployment_id], [])
    rule = await service.get_rule(rule_id)
    assert rule.status is RuleStatus.DEPLOYED
    assert read_rule_lines(rules_dir).count(rule.new_rule) == 1
    assert [d.deployment_id for d in (await service.list_deployments()).items] == [deployment_id]


async def test_a_change_under_way_is_waited_for_not_settled(runtime: Runtime, service: PipelineService) -> None:
    rule_id, deployment_id = await begin_only(runtime, service, write_file=False)
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
