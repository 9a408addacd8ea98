"""The rule files' truth in the database (PostgreSQL, several instances): two runtimes on one fresh database,
each with a rules folder of its own, as two instances behind a load balancer with ephemeral disks.

- a deploy through one appears byte-identical in the other's folder within a second (LISTEN/NOTIFY);
- concurrent deploys (and a rollback, a canary and its promote) of different rules to one file through both:
  every line at most once, exactly the expected deployments, both folders identical and equal to the newest
  stored version, both rule-set ETags equal, one git commit per change, the same history in both folders;
- a hand edit of a materialized file is reported (WARNING, /status) and the database wins, the edited copy kept;
- an instance restarted with an empty folder converges at start;
- the same with two `autotrain serve` processes over HTTP, one of them SIGKILLed and restarted on an empty disk.

Skipped (failed in CI) without a PostgreSQL server: tests/services.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from autotrain.errors import TransitionRefused
from autotrain.i18n import Language, speaking
from autotrain.policy import Role
from autotrain.rulefiles import content_version
from bot.runtime import Runtime, open_runtime
from bot.slack import blocks
from tests.conftest import (
    ADMIN,
    JWT_SECRET,
    SHIPPED_RULES,
    approved_rule,
    bearer,
    make_settings,
    read_rule_lines,
)
from tests.postgres_support import fresh_database
from tests.serve_process import serving, subprocess_environment
from tests.services import service_url
from tests.test_concurrency import size_complaint

MODULE = "fashion_rules.json"
CONVERGE_SECONDS = 1.0


@dataclass
class Instances:
    url: str
    a: Runtime
    b: Runtime
    folders: tuple[Path, Path]
    open_b: Callable[[], Awaitable[Runtime]]


def folder_copy(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(SHIPPED_RULES, folder, ignore=shutil.ignore_patterns(".autotrain"))
    return folder


@pytest.fixture
async def postgres_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    server = service_url("PostgreSQL", "AUTOTRAIN_TEST_POSTGRES_URL", request)
    async with fresh_database(server) as url:
        yield url


@contextlib.asynccontextmanager
async def open_instances(tmp_path: Path, url: str, **overrides: object) -> AsyncIterator[Instances]:
    folders = (folder_copy(tmp_path, "rules-a"), folder_copy(tmp_path, "rules-b"))

    async def instance(folder: Path) -> Runtime:
        runtime = await open_runtime(make_settings(tmp_path, folder, database_url=url, **overrides))
        await runtime.start()  # follows the database (as `autotrain serve` does)
        return runtime

    a = await instance(folders[0])
    b = await instance(folders[1])
    instances = Instances(url, a, b, folders, lambda: instance(folders[1]))
    try:
        yield instances
    finally:
        await instances.b.close()
        await instances.a.close()


@pytest.fixture
async def two(tmp_path: Path, postgres_url: str) -> AsyncIterator[Instances]:
    async with open_instances(tmp_path, postgres_url) as instances:
        yield instances


async def stored_content(url: str, module_name: str = MODULE) -> bytes:
    db = await asyncpg.connect(url)
    try:
        return bytes(
            await db.fetchval(
                "SELECT content FROM rule_file_versions WHERE module_name = $1 ORDER BY version DESC LIMIT 1",
                module_name,
            )
        )
    finally:
        await db.close()


async def converged(folders: tuple[Path, ...], expected: bytes, *, within: float = CONVERGE_SECONDS) -> float:
    """Seconds until every folder's file has exactly `expected` (fails after `within`)."""
    start = time.monotonic()
    while True:
        contents = [(folder / MODULE).read_bytes() for folder in folders]
        if all(content == expected for content in contents):
            return time.monotonic() - start
        if time.monotonic() - start > within:
            pytest.fail(f"not converged within {within} s: {[content_version(c) for c in contents]}")
        await asyncio.sleep(0.01)


async def test_a_deploy_through_one_instance_appears_in_the_others_folder(two: Instances) -> None:
    rule = await approved_rule(two.a.service, size_complaint(1))
    await two.a.service.deploy(rule.rule_id, ADMIN)

    stored = await stored_content(two.url)
    assert (two.folders[0] / MODULE).read_bytes() == stored  # the deploying instance's folder at once
    await converged(two.folders, stored)
    assert rule.new_rule in read_rule_lines(two.folders[1])
    etags = [await runtime.service.ruleset_etag(MODULE, ADMIN) for runtime in (two.a, two.b)]
    assert etags == [f'"{content_version(stored)}"'] * 2
    served = await two.b.service.ruleset(MODULE, ADMIN)
    assert served.content.encode() == stored


async def test_concurrent_changes_of_one_file_through_both_instances(tmp_path: Path, postgres_url: str) -> None:
    async with open_instances(tmp_path, postgres_url, git_history=True) as two:
        rules = [await approved_rule(two.a.service, size_complaint(n)) for n in range(20)]
        shared = rules[0]  # deployed through both at once: one wins, one is refused
        through = [(two.a, [r.rule_id for r in rules[1:10]]), (two.b, [r.rule_id for r in rules[10:]])]

        async def deploy(runtime: Runtime, rule_id: str, canary: bool = False) -> object:
            try:
                if canary:
                    return await runtime.service.canary(rule_id, ADMIN)
                return await runtime.service.deploy(rule_id, ADMIN)
            except TransitionRefused as exc:
                return exc

        first = await asyncio.gather(
            deploy(two.a, shared.rule_id),
            deploy(two.b, shared.rule_id),
            *(
                deploy(runtime, rule_id, canary=rule_id == rules[19].rule_id)
                for runtime, ids in through
                for rule_id in ids
            ),
        )
        assert sum(isinstance(outcome, TransitionRefused) for outcome in first) == 1
        # then, through both at once: two rollbacks (one through each) and the canary's promote
        second = await asyncio.gather(
            two.b.service.rollback(rules[1].rule_id, ADMIN),
            two.a.service.rollback(rules[10].rule_id, ADMIN),
            two.a.service.promote(rules[19].rule_id, ADMIN),
        )
        assert [result.rule.status.value for result in second] == ["rolled_back", "rolled_back", "deployed"]

        stored = await stored_content(two.url)
        await converged(two.folders, stored)
        lines = read_rule_lines(two.folders[0])
        for rule in rules:
            expected = 0 if rule in (rules[1], rules[10]) else 1
            assert lines.count(rule.new_rule) == expected, rule.rule_id
        assert len(lines) == len(set(lines))
        deployments = await two.b.service.list_deployments(limit=200)
        assert deployments.total == 20 + 2 + 1  # 20 deploys (the shared one once), 2 rollbacks, 1 promote
        etags = {await runtime.service.ruleset_etag(MODULE, ADMIN) for runtime in (two.a, two.b)}
        assert etags == {f'"{content_version(stored)}"'}

        # one git commit per change, made once: both folders' branches hold the same 23 change commits
        logs = [
            subprocess.run(
                ["git", "-C", str(folder), "log", "--format=%H %s", "main"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
            for folder in two.folders
        ]
        for _ in range(100):  # b follows a's last commits within moments (the notification)
            if logs[0] == logs[1]:
                break
            await asyncio.sleep(0.01)
            logs[1] = subprocess.run(
                ["git", "-C", str(two.folders[1]), "log", "--format=%H %s", "main"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
        assert logs[0] == logs[1]
        made = [
            line for line in logs[0] if line.split(" ", 1)[1].startswith(("Deploy", "Roll back", "Canary", "Promote"))
        ]
        assert len(made) == 23
        assert len(set(made)) == 23
        shas = {d.commit_sha for d in deployments.items}
        assert shas == {line.split(" ", 1)[0] for line in made}
        assert None not in shas and len(shas) == 23


async def test_a_hand_edit_is_reported_and_the_database_wins(two: Instances, caplog: pytest.LogCaptureFixture) -> None:
    rule = await approved_rule(two.a.service, size_complaint(2))
    await two.a.service.deploy(rule.rule_id, ADMIN)
    stored = await stored_content(two.url)
    await converged(two.folders, stored)

    edited = stored.replace(b'"rules": [', b'"rules": [\n    {"rule": "- a line typed by hand"},', 1)
    (two.folders[1] / MODULE).write_bytes(edited)
    assert two.b.materializer is not None
    with caplog.at_level(logging.WARNING, logger="autotrain.rulefiles"):
        assert await two.b.materializer.check() == [MODULE]  # (the periodic check, without waiting for it)

    assert (two.folders[1] / MODULE).read_bytes() == stored  # the database wins, for the chatbot's sake
    warning = next(record for record in caplog.records if "edited by hand" in record.getMessage())
    assert str(two.folders[1] / MODULE) in warning.getMessage()
    status = await two.b.service.status()
    [found] = status.hand_edited_rule_files
    assert found.module_name == MODULE
    assert found.kept_at in warning.getMessage()
    assert Path(found.kept_at).read_bytes() == edited  # the hand-edited copy, kept beside the folder's files
    assert Path(found.kept_at).is_relative_to(two.folders[1])
    assert found.instance == two.b.monitor.holder  # whose folder it was
    # recorded in the database: every instance reports it (a load balancer sends /status to either), it is in
    # the audit log, and the alert fires (from whichever instance evaluates alerts)
    assert (await two.a.service.status()).hand_edited_rule_files == [found]
    audit = (await two.a.store.list_audit(subject_id=MODULE, limit=50, offset=0)).items
    [entry] = [e for e in audit if e.action == "rule_file_hand_edited"]
    assert entry.detail is not None and entry.detail["kept_at"] == found.kept_at
    [alert] = [e for e in await two.a.monitor.check_alerts() if e.name == "rule_file_hand_edited"]
    assert alert.kind.value == "fired" and alert.value == 1
    # /autotrain status in Slack says which file, on which instance, and where its copy is (in either language)
    shown = str(blocks.status_blocks(await two.a.service.status()))
    assert "1 rule file was changed by hand in an instance's folder; the database won" in shown
    assert found.kept_at in shown and str(found.instance) in shown
    with speaking(Language.VI):
        assert "Sửa tay" in str(blocks.status_blocks(await two.a.service.status()))

    # an older stored version in the folder is no hand edit: brought up to date, nothing reported
    caplog.clear()
    (two.folders[1] / MODULE).write_bytes((SHIPPED_RULES / MODULE).read_bytes())
    assert await two.b.materializer.check() == [MODULE]
    assert (two.folders[1] / MODULE).read_bytes() == stored
    assert not [r for r in caplog.records if "edited by hand" in r.getMessage()]


async def test_a_restarted_instance_with_an_empty_folder_converges(two: Instances) -> None:
    rules = [await approved_rule(two.a.service, size_complaint(n)) for n in range(3)]
    await two.b.close()
    for rule in rules:  # changes while b is down
        await two.a.service.deploy(rule.rule_id, ADMIN)
    shutil.rmtree(two.folders[1])
    two.folders[1].mkdir()  # an ephemeral disk: the folder comes back empty

    two.b = await two.open_b()

    stored = await stored_content(two.url)
    assert (two.folders[1] / MODULE).read_bytes() == stored  # at start, before any request
    for module_name in two.b.settings.allowed_modules:
        assert (two.folders[1] / module_name).read_bytes() == (two.folders[0] / module_name).read_bytes()
    assert two.b.materializer is not None
    assert (await two.b.service.status()).hand_edited_rule_files == []
    rule = await approved_rule(two.b.service, size_complaint(9))
    await two.b.service.deploy(rule.rule_id, ADMIN)
    await converged(two.folders, await stored_content(two.url))


# ---------------------------------------------------------------------- two `autotrain serve` processes


def serve_environment(url: str, folder: Path) -> dict[str, str]:
    return subprocess_environment(
        AUTOTRAIN_DATABASE_URL=url,
        AUTOTRAIN_RULES_DIR=str(folder),
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_AUTO_GENERATE="false",
        AUTOTRAIN_SCHEDULER="false",
        AUTOTRAIN_GIT="false",
        AUTOTRAIN_CLUSTER_THRESHOLD="",
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="100000/minute",
    )


def http_deploy(base_url: str, n: int) -> str:
    """A rule made, approved and deployed through this instance; its line."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        feedback = http.post("/autotrain/feedback", json=size_complaint(n), headers=bearer(Role.REPORTER, "chatbot"))
        assert feedback.status_code == 201, feedback.text
        rule = http.post(f"/autotrain/generate/{feedback.json()['feedback_id']}", headers=bearer(Role.REPORTER, "c"))
        assert rule.status_code in (200, 201), rule.text
        rule_id = rule.json()["rule_id"]
        assert http.post(f"/autotrain/rules/{rule_id}/approve", headers=bearer()).status_code == 200
        deployed = http.post(f"/autotrain/rules/{rule_id}/deploy", headers=bearer())
        assert deployed.status_code == 200, deployed.text
        return str(rule.json()["new_rule"])


def etag_of_ruleset(base_url: str) -> str:
    response = httpx.get(f"{base_url}/autotrain/rulesets/{MODULE}", headers=bearer(), timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


async def test_two_served_instances_converge_and_one_killed_converges_after_restart(
    tmp_path: Path, postgres_url: str
) -> None:
    folders = (folder_copy(tmp_path, "rules-a"), folder_copy(tmp_path, "rules-b"))
    workdirs = (tmp_path / "a", tmp_path / "b")
    for workdir in workdirs:
        workdir.mkdir()
    with serving(workdirs[0], serve_environment(postgres_url, folders[0])) as (a_url, _):
        with serving(workdirs[1], serve_environment(postgres_url, folders[1])) as (b_url, b_process):
            line = await asyncio.to_thread(http_deploy, a_url, 1)
            stored = await stored_content(postgres_url)
            await converged(folders, stored)
            assert line in read_rule_lines(folders[1])
            assert etag_of_ruleset(a_url) == etag_of_ruleset(b_url) == f'"{content_version(stored)}"'
            b_process.send_signal(signal.SIGKILL)
            b_process.wait(timeout=10)
        # b is gone; changes go on through a, and b comes back on an empty disk
        await asyncio.to_thread(http_deploy, a_url, 2)
        shutil.rmtree(folders[1])
        folders[1].mkdir()
        with serving(workdirs[1], serve_environment(postgres_url, folders[1])) as (b_url, _):
            stored = await stored_content(postgres_url)
            assert (folders[1] / MODULE).read_bytes() == stored  # written at start
            await asyncio.to_thread(http_deploy, b_url, 3)
            stored = await stored_content(postgres_url)
            await converged(folders, stored)
            assert etag_of_ruleset(a_url) == etag_of_ruleset(b_url) == f'"{content_version(stored)}"'
    for workdir in workdirs:
        log = (workdir / "serve.log").read_text(errors="replace")
        assert "Traceback" not in log and "edited by hand" not in log, log
