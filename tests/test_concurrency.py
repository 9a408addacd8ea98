"""The cookbook's "Concurrent deploy → no race conditions", in one process and across processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autotrain.errors import TransitionRefused
from autotrain.service import PipelineService
from bot.runtime import open_runtime
from tests.conftest import ADMIN, JWT_SECRET, REPO_ROOT, approved_rule, make_settings, read_rule_lines

pytestmark = pytest.mark.both_backends  # concurrent deploys on SQLite and on PostgreSQL


def size_complaint(n: int) -> dict[str, str]:
    """Feedback that matches no pattern and targets fashion_rules.json, each giving a different rule."""
    return {
        "query": f"gợi ý quần jean size {n}",
        "ai_response": "Bạn thử mẫu này nhé",
        "feedback_text": f"Sản phẩm mẫu số {n} không còn size",
        "feedback_type": "bug",
    }


async def test_many_concurrent_deploys_to_one_file(service: PipelineService, rules_dir: Path) -> None:
    rules = [await approved_rule(service, size_complaint(n)) for n in range(20)]
    assert {rule.module_name for rule in rules} == {"fashion_rules.json"}
    version_before = json.loads((rules_dir / "fashion_rules.json").read_text(encoding="utf-8"))["version"]

    results = await asyncio.gather(*(service.deploy(rule.rule_id, ADMIN) for rule in rules))

    data = json.loads((rules_dir / "fashion_rules.json").read_text(encoding="utf-8"))
    lines = [entry["rule"] for entry in data["rules"]]
    for rule in rules:
        assert lines.count(rule.new_rule) == 1
    assert len(lines) == len(set(lines))
    assert data["version"] == version_before + 20
    assert {result.rule.status.value for result in results} == {"deployed"}
    assert (await service.list_deployments(limit=200)).total == 20


async def test_two_concurrent_deploys_of_one_rule_make_one_deployment(
    service: PipelineService, rules_dir: Path
) -> None:
    rule = await approved_rule(service)
    outcomes = await asyncio.gather(*(service.deploy(rule.rule_id, ADMIN) for _ in range(2)), return_exceptions=True)
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert sum(isinstance(o, TransitionRefused) for o in outcomes) == 1
    assert (await service.list_deployments()).total == 1
    assert read_rule_lines(rules_dir).count(rule.new_rule) == 1


async def test_concurrent_approve_and_reject_one_wins(service: PipelineService) -> None:
    feedback_rule = await approved_rule(service)
    outcomes = await asyncio.gather(
        service.deploy(feedback_rule.rule_id, ADMIN),
        service.reject(feedback_rule.rule_id, ADMIN),
        return_exceptions=True,
    )
    assert sum(isinstance(o, TransitionRefused) for o in outcomes) == 1
    final = await service.get_rule(feedback_rule.rule_id)
    deployments = (await service.list_deployments()).total
    assert (final.status.value, deployments) in {("deployed", 1), ("rejected", 0)}


DEPLOY_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from autotrain.errors import TransitionRefused
    from autotrain.policy import Actor, Role
    from autotrain.settings import Settings
    from bot.runtime import open_runtime

    async def main(rule_ids):
        runtime = await open_runtime(Settings())
        deployed, refused = [], []
        try:
            async def one(rule_id):
                try:
                    await runtime.service.deploy(rule_id, Actor("proc", Role.ADMIN))
                    deployed.append(rule_id)
                except TransitionRefused:
                    refused.append(rule_id)
            await asyncio.gather(*(one(r) for r in rule_ids))
        finally:
            await runtime.close()
        print(json.dumps({"deployed": deployed, "refused": refused}))

    asyncio.run(main(sys.argv[1:]))
    """
)


async def test_two_processes_deploying_to_one_file(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir)
    runtime = await open_runtime(settings)
    try:
        rules = [await approved_rule(runtime.service, size_complaint(n)) for n in range(10)]
    finally:
        await runtime.close()
    shared = rules[0].rule_id  # both processes try this one
    first_half = [shared] + [r.rule_id for r in rules[1:5]]
    second_half = [shared] + [r.rule_id for r in rules[5:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        AUTOTRAIN_DATABASE_URL=settings.database_url,
        AUTOTRAIN_RULES_DIR=str(rules_dir),
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_AUTO_GENERATE="false",
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", DEPLOY_SCRIPT, *ids], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
        )
        for ids in (first_half, second_half)
    ]
    reports = [json.loads(process.communicate(timeout=120)[0]) for process in processes]
    assert all(process.returncode == 0 for process in processes)

    deployed = reports[0]["deployed"] + reports[1]["deployed"]
    assert sorted(deployed) == sorted(r.rule_id for r in rules)  # the shared rule exactly once
    assert reports[0]["refused"] + reports[1]["refused"] == [shared]
    lines = read_rule_lines(rules_dir)
    for rule in rules:
        assert lines.count(rule.new_rule) == 1
    runtime = await open_runtime(settings)
    try:
        assert (await runtime.service.list_deployments(limit=200)).total == 10
    finally:
        await runtime.close()
