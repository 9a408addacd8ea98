"""Crash safety (issue 6): a deploying process killed with SIGKILL, again and again, never leaves a partial or
duplicated rule file, and the next start (`open_runtime(..., reconcile=True)`, what `autotrain serve` does)
makes the database agree with the file. Backups are bounded by AUTOTRAIN_BACKUP_KEEP and restorable.

On both backends (`both_backends`). On PostgreSQL the rule file's truth is its newest stored version and the
folder a copy: after each kill the folder holds a whole stored version, every stored version is whole (no line
twice) and was made by an applied deployment, and after the next start the folder is the newest version, one
stored per file-changing deployment. Backups are SQLite's (the folder is the truth there); on PostgreSQL the
stored versions are the history, each one the file before its next deploy, byte for byte.

Single-step interruptions (a pending row with or without the file written) are in
tests/test_reliability_interruptions.py;
here real processes are killed at random points of a real deploy / rollback loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from autotrain.models import Deployment, Rule, RuleStatus
from autotrain.rulefiles import JsonRuleDocument, content_version
from autotrain.settings import Settings
from bot.runtime import Runtime, open_runtime, open_store
from tests.conftest import (
    ADMIN,
    JWT_SECRET,
    OLD_WEATHER_RULE,
    REPO_ROOT,
    WEATHER_FEEDBACK,
    approved_rule,
    make_settings,
    read_rule_lines,
)
from tests.reliability_support import stored_versions

MODULE = "fashion_rules.json"
KILLS = 18
# PostgreSQL: fewer (each start connects, checks the schema and materializes the folder); half still aimed
KILLS_POSTGRES = 10
BACKUP_KEEP = 5
SEED = 20_240_606

# Deploys and rolls back rules for as long as it lives, creating new approved rules when it runs short.
# It prints "ready" once its runtime is open, so the kill lands inside the work, not inside the imports.
CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, random, sys, time
    from autotrain.models import FeedbackIn, RuleStatus
    from autotrain.policy import Actor, Role
    from autotrain.settings import Settings
    from bot.runtime import open_runtime

    ADMIN = Actor("crash-admin", Role.ADMIN)

    async def main(seed):
        rng = random.Random(seed)
        runtime = await open_runtime(Settings())
        service = runtime.service
        print("ready", flush=True)
        created = 0
        deadline = time.monotonic() + 20  # never outlives a broken test by much
        while time.monotonic() < deadline:
            approved = (await service.list_rules(status=RuleStatus.APPROVED, limit=500)).items
            if not approved or rng.random() < 0.15:
                created += 1
                tag = f"{seed}-{created}"
                feedback = await service.submit(
                    FeedbackIn(
                        query=f"gợi ý quần jean mẫu {tag}",
                        ai_response="Bạn thử mẫu này nhé",
                        feedback_text=f"Sản phẩm mẫu {tag} không còn size",
                        feedback_type="bug",
                    ),
                    ADMIN,
                )
                rule = await service.generate(feedback.feedback_id, ADMIN)
                if rule.status is RuleStatus.PENDING:  # not a rule it was attached to (the same complaint)
                    await service.approve(rule.rule_id, ADMIN)
            else:
                await service.deploy(rng.choice(approved).rule_id, ADMIN)
                print("deployed", flush=True)
            if rng.random() < 0.35:
                deployed = (await service.list_rules(status=RuleStatus.DEPLOYED, limit=500)).items
                if deployed:
                    await service.rollback(rng.choice(deployed).rule_id, ADMIN)
                    print("rolled back", flush=True)
        print("done", flush=True)

    asyncio.run(main(int(sys.argv[1])))
    """
)


def complaint(tag: str) -> dict[str, str]:
    """Feedback matching no special pattern: a distinct appended rule for fashion_rules.json per tag."""
    return {
        "query": f"gợi ý quần jean size {tag}",
        "ai_response": "Bạn thử mẫu này nhé",
        "feedback_text": f"Sản phẩm mẫu số {tag} không còn size",
        "feedback_type": "bug",
    }


def parse_rule_file(content: bytes) -> tuple[int, list[str]]:
    """The file is complete, valid JSON of the right shape, and holds no rule line twice."""
    data = json.loads(content.decode("utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("version"), int), data
    assert isinstance(data.get("rules"), list), data
    assert all(isinstance(entry, dict) and isinstance(entry.get("rule"), str) for entry in data["rules"]), data
    JsonRuleDocument.parse(content)  # and the project's own parser accepts it
    lines = [entry["rule"] for entry in data["rules"]]
    duplicated = [line for line, n in Counter(lines).items() if n > 1]
    assert not duplicated, f"rule lines held more than once: {duplicated}"
    return data["version"], lines


def subprocess_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        AUTOTRAIN_DATABASE_URL=settings.database_url,
        AUTOTRAIN_RULES_DIR=str(settings.rules_dir),
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_AUTO_GENERATE="false",
        AUTOTRAIN_SCHEDULER="false",
        AUTOTRAIN_BACKUP_KEEP=str(BACKUP_KEEP),
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="100000/minute",
    )
    return env


def wait_for_line(process: subprocess.Popen[bytes], expected: bytes, timeout: float) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = process.stdout.readline()
        if not line:
            break
        if line.strip() == expected:
            return
    raise AssertionError(f"the deploy loop did not print {expected!r} (exit code {process.poll()})")


PENDING = "SELECT 1 FROM deployments WHERE state = 'pending' LIMIT 1"


async def wait_for_pending_deployment(settings: Settings, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll until the loop has committed a pending deployment: on SQLite the step before the file write, on
    PostgreSQL the step before the version is stored (read-only on the SQLite file; one connection on PostgreSQL,
    each query's round trip the pause between looks)."""
    deadline = time.monotonic() + timeout
    if settings.uses_postgres:
        db = await asyncpg.connect(settings.database_url)
        try:
            while time.monotonic() < deadline and process.poll() is None:
                if await db.fetchval(PENDING):
                    return True
        finally:
            await db.close()
        return False
    with contextlib.closing(sqlite3.connect(f"file:{settings.database_path}?mode=ro", uri=True, timeout=1)) as db:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if db.execute(PENDING).fetchone():
                    return True
            except sqlite3.OperationalError:
                pass  # busy for a moment: look again
            time.sleep(0.0005)
    return False


async def all_rules(runtime: Runtime) -> list[Rule]:
    return (await runtime.service.list_rules(limit=10_000)).items


async def applied_deployments(runtime: Runtime) -> list[Deployment]:
    page = await runtime.store.list_deployments(rule_id=None, limit=10_000, offset=0)
    assert page.total == len(page.items)
    return sorted(page.items, key=lambda d: d.deployment_id)


async def recorded_deployments(settings: Settings) -> tuple[list[Deployment], list[Deployment]]:
    """(pending, applied): what the killed process left, read before the next start settles it."""
    store = open_store(settings)
    await store.open()
    try:
        applied = await store.list_deployments(rule_id=None, limit=10_000, offset=0)
        return await store.pending_deployments(), applied.items
    finally:
        await store.close()


async def assert_db_agrees_with_file(
    runtime: Runtime, rules_dir: Path, original_lines: set[str], initial: bytes, label: str
) -> dict[str, int]:
    content = (rules_dir / MODULE).read_bytes()
    version, lines = parse_rule_file(content)
    in_file = set(lines)
    rules = await all_rules(runtime)
    deployments = await applied_deployments(runtime)
    by_status: dict[RuleStatus, list[Rule]] = {status: [] for status in RuleStatus}
    for rule in rules:
        by_status[rule.status].append(rule)
    deployed, rolled_back = by_status[RuleStatus.DEPLOYED], by_status[RuleStatus.ROLLED_BACK]
    deployed_lines = {rule.new_rule for rule in deployed}

    assert await runtime.store.pending_deployments() == [], f"{label}: a deployment left pending after reconcile"
    for rule in deployed:
        assert rule.new_rule in in_file, f"{label}: {rule.rule_id} is deployed but its line is not in the file"
    for rule in rules:
        if rule.status is not RuleStatus.DEPLOYED and rule.new_rule not in deployed_lines:
            assert rule.new_rule not in in_file, (
                f"{label}: {rule.rule_id} is {rule.status.value} but its line is in the file"
            )
    assert in_file - original_lines == deployed_lines - original_lines, f"{label}: lines without a deployed rule"
    old_taken = any(rule.old_rule == OLD_WEATHER_RULE for rule in deployed)
    assert (OLD_WEATHER_RULE in in_file) == (not old_taken), f"{label}: the replaced line is wrong"

    deploys = Counter(d.rule_id for d in deployments if d.rollback_of is None)
    rollbacks = Counter(d.rule_id for d in deployments if d.rollback_of is not None)
    for rule in rules:
        expected_deploys = 1 if rule.status in (RuleStatus.DEPLOYED, RuleStatus.ROLLED_BACK) else 0
        expected_rollbacks = 1 if rule.status is RuleStatus.ROLLED_BACK else 0
        assert (deploys[rule.rule_id], rollbacks[rule.rule_id]) == (expected_deploys, expected_rollbacks), (
            f"{label}: {rule.rule_id} ({rule.status.value}) has {deploys[rule.rule_id]} deployments and "
            f"{rollbacks[rule.rule_id]} rollbacks"
        )
    report = await runtime.service.status()
    assert report.deployments_total == len(deployed) + len(rolled_back), label
    assert report.rollbacks_total == len(rolled_back), label
    assert report.feedback_by_status["processing"] == 0, f"{label}: feedback left processing"

    # The file is exactly the version the last file-changing deployment produced: fully old or fully new.
    writes = [d for d in deployments if d.version_after != d.version_before]
    expected_version = writes[-1].version_after if writes else content_version(initial)
    assert content_version(content) == expected_version, f"{label}: file version differs from the last deployment"
    assert version == json.loads(initial)["version"] + len(writes), f"{label}: a write lost or counted twice"

    if runtime.settings.uses_postgres:
        # the folder is the newest stored version, and one version was stored per file-changing deployment, in order
        versions = await stored_versions(runtime.settings.database_url, MODULE)
        assert content == versions[-1].content, f"{label}: the folder is not the newest stored version"
        assert versions[0].deployment_id is None and versions[0].content == initial, f"{label}: the seed changed"
        made = [(v.deployment_id, content_version(v.content)) for v in versions[1:]]
        assert made == [(d.deployment_id, d.version_after) for d in writes], f"{label}: versions and deployments"

    # A kill after the backup and before the pruning leaves an extra backup (one per interrupted write);
    # the next completed write prunes back to AUTOTRAIN_BACKUP_KEEP (checked at the end of the kill test).
    backups = sorted((rules_dir / ".autotrain" / "backups" / MODULE).glob("*.bak"))
    for deployment in deployments:
        if deployment.backup_path and Path(deployment.backup_path).exists():
            kept = Path(deployment.backup_path).read_bytes()
            assert content_version(kept) == deployment.version_before, f"{label}: backup differs from the version"
            parse_rule_file(kept)
    return {
        "deployed": len(deployed),
        "rolled_back": len(rolled_back),
        "writes": len(writes),
        "backups": len(backups),
    }


async def assert_whole_versions_after_a_kill(
    settings: Settings, content: bytes, pending: list[Deployment], applied: list[Deployment], label: str
) -> None:
    """PostgreSQL, right after a kill: the folder's file is a stored version; every stored version is whole, with
    no line twice, and each after the seed was made by an applied deployment (its version_after): a deployment the
    kill left pending stored nothing."""
    versions = await stored_versions(settings.database_url, MODULE)
    for version in versions:
        parse_rule_file(version.content)
    assert content in {version.content for version in versions}, f"{label}: the folder is no stored version"
    by_id = {d.deployment_id: d for d in applied}
    for version in versions[1:]:
        assert version.deployment_id in by_id, f"{label}: version {version.number} of no applied deployment"
        assert by_id[version.deployment_id].version_after == content_version(version.content), label
    assert not {d.deployment_id for d in pending} & {v.deployment_id for v in versions}, label


@pytest.mark.both_backends  # SIGKILL mid-deploy on SQLite (the folder's truth) and on PostgreSQL (the versions')
async def test_sigkilled_deploy_loop_leaves_a_whole_file_and_the_next_start_reconciles(
    tmp_path: Path, rules_dir: Path
) -> None:
    settings = make_settings(tmp_path, rules_dir, backup_keep=BACKUP_KEEP)
    runtime = await open_runtime(settings)
    try:
        # distinct appended rules, two pairs of identical lines (no-op deploys) and a replacing rule twice
        payloads = [complaint(str(n)) for n in range(16)] + [complaint("dup-a")] * 2 + [complaint("dup-b")] * 2
        for payload in [*payloads, WEATHER_FEEDBACK, WEATHER_FEEDBACK]:
            await approved_rule(runtime.service, payload)
    finally:
        await runtime.close()
    initial = (rules_dir / MODULE).read_bytes()
    original_lines = set(read_rule_lines(rules_dir))
    env = subprocess_env(settings)
    rng = random.Random(SEED)
    temp_files: list[int] = []
    pending_seen = completed = aborted = 0
    work_lines: Counter[str] = Counter()
    figures: dict[str, int] = {}
    started = time.monotonic()

    aimed_kills = 0
    backup_counts: list[int] = []
    kills = KILLS_POSTGRES if settings.uses_postgres else KILLS
    for kill in range(1, kills + 1):
        label = f"kill {kill}"
        # even kills: a random moment of the loop; odd kills: aimed just after a pending deployment is committed
        aimed = kill % 2 == 1
        delay = rng.uniform(0.0, 0.004) if aimed else rng.uniform(0.005, 0.080)
        with open(tmp_path / f"crash-{kill}.err", "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", CRASH_SCRIPT, str(SEED + kill)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            try:
                wait_for_line(process, b"ready", timeout=30)
                if aimed:
                    aimed_kills += await wait_for_pending_deployment(settings, process, timeout=10)
                time.sleep(delay)
                alive = process.poll() is None
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
            assert process.stdout is not None
            for line in process.stdout.read().decode(errors="replace").splitlines():
                work_lines[line] += 1
            process.stdout.close()
        errors = (tmp_path / f"crash-{kill}.err").read_text(errors="replace")
        assert alive, f"{label}: the deploy loop had already stopped before the kill:\n{errors}"
        assert process.returncode == -signal.SIGKILL, label

        # right after the kill, before anything repairs it: a whole file, each line at most once
        content = (rules_dir / MODULE).read_bytes()
        parse_rule_file(content)
        temp_files.append(len(list(rules_dir.glob(f".{MODULE}.*.tmp"))))
        pending, applied = await recorded_deployments(settings)
        pending_seen += len(pending)
        known = {content_version(initial)} | {d.version_after for d in [*pending, *applied]}
        assert content_version(content) in known, f"{label}: the file is a version no deployment recorded"
        if settings.uses_postgres:
            await assert_whole_versions_after_a_kill(settings, content, pending, applied, label)

        # the next start settles what the kill left half done, and the database agrees with the file
        runtime = await open_runtime(settings, reconcile=True)
        try:
            applied_ids = {d.deployment_id for d in await applied_deployments(runtime)}
            completed += sum(d.deployment_id in applied_ids for d in pending)
            aborted += sum(d.deployment_id not in applied_ids for d in pending)
            figures = await assert_db_agrees_with_file(runtime, rules_dir, original_lines, initial, label)
        finally:
            await runtime.close()
        backup_counts.append(figures["backups"])

    # one more start and a completed deploy: the extra backups of interrupted writes are pruned again
    runtime = await open_runtime(settings, reconcile=True)
    try:
        backups_before = figures["backups"]
        final = await approved_rule(runtime.service, complaint("after-the-kills"))
        await runtime.service.deploy(final.rule_id, ADMIN)
        figures = await assert_db_agrees_with_file(runtime, rules_dir, original_lines, initial, "after the kills")
    finally:
        await runtime.close()
    # SQLite: pruned back to the retention; PostgreSQL writes none (the stored versions are the history)
    expected_backups = 0 if settings.uses_postgres else BACKUP_KEEP
    assert figures["backups"] == expected_backups, f"{figures['backups']} backups after a completed deploy"

    elapsed = time.monotonic() - started
    summary = (
        f"{kills} kills ({aimed_kills} aimed at a pending deployment) in {elapsed:.1f} s; "
        f"deploys {work_lines['deployed']}, rollbacks {work_lines['rolled back']} reported before the kills; "
        f"pending deployments found {pending_seen} (completed {completed}, aborted "
        f"{aborted}); temp files present after each kill {temp_files}; backups after each kill {backup_counts} "
        f"({backups_before} before the final deploy); final {figures}"
    )
    print(summary)
    assert work_lines["done"] == 0, summary
    assert figures["writes"] > 0, f"no deploy ever reached the file: {summary}"
    assert pending_seen > 0, f"no kill interrupted a deployment between its steps: {summary}"


# SQLite only: backups are written where the folder is the truth; PostgreSQL's history is the stored versions (below)
async def test_backups_are_bounded_by_backup_keep_and_restorable(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTRAIN_BACKUP_KEEP", str(BACKUP_KEEP))
    settings = make_settings(tmp_path, rules_dir)
    assert settings.backup_keep == BACKUP_KEEP
    path = rules_dir / MODULE
    backup_dir = rules_dir / ".autotrain" / "backups" / MODULE
    before: dict[str, bytes] = {}
    after: dict[str, bytes] = {}
    runtime = await open_runtime(settings)
    try:
        for n in range(12):
            rule = await approved_rule(runtime.service, complaint(f"backup-{n}"))
            before[rule.rule_id] = path.read_bytes()
            result = await runtime.service.deploy(rule.rule_id, ADMIN)
            after[rule.rule_id] = path.read_bytes()
            assert result.deployment.backup_path is not None
            count = len(list(backup_dir.glob("*.bak")))
            assert count <= BACKUP_KEEP, f"{count} backups after deploy {n + 1}"
        deployments = await applied_deployments(runtime)
    finally:
        await runtime.close()

    backups = sorted(backup_dir.glob("*.bak"))
    assert len(backups) == BACKUP_KEEP
    by_backup = {d.backup_path: d for d in deployments}
    assert len(by_backup) == 12  # every deploy recorded its own backup
    kept = [by_backup[str(backup)] for backup in backups]
    assert [d.rule_id for d in kept] == list(before)[-BACKUP_KEEP:]  # the newest ones are kept, oldest pruned
    for backup, deployment in zip(backups, kept, strict=True):
        content = backup.read_bytes()
        assert content == before[deployment.rule_id]
        assert content_version(content) == deployment.version_before
        parse_rule_file(content)

    # restoring a backup gives back exactly the file before that deploy, which the service reads again
    newest, rule_id = backups[-1], kept[-1].rule_id
    shutil.copyfile(newest, path)
    assert path.read_bytes() == before[rule_id] != after[rule_id]
    runtime = await open_runtime(settings)
    try:
        rule = await runtime.service.get_rule(rule_id)
        restored, document = runtime.rule_files.read(MODULE)
        assert restored == before[rule_id]
        assert rule.new_rule not in document.rule_lines()
    finally:
        await runtime.close()


@pytest.mark.parametrize("database_backend", ["postgres"], indirect=True)  # the SQLite counterpart: just above
async def test_every_version_before_a_deploy_is_stored_whole_and_an_old_copy_is_brought_up_to_date(
    tmp_path: Path, rules_dir: Path
) -> None:
    settings = make_settings(tmp_path, rules_dir, backup_keep=BACKUP_KEEP)
    path = rules_dir / MODULE
    before: dict[str, bytes] = {}
    runtime = await open_runtime(settings)
    try:
        for n in range(12):
            rule = await approved_rule(runtime.service, complaint(f"version-{n}"))
            before[rule.rule_id] = path.read_bytes()
            result = await runtime.service.deploy(rule.rule_id, ADMIN)
            assert result.deployment.backup_path is None  # nothing kept in the folder: the database has it
        deployments = await applied_deployments(runtime)
        # every file a deploy started from is a stored version, byte for byte, however many deploys followed
        for deployment in deployments:
            stored = await runtime.store.rule_file_with_version(MODULE, deployment.version_before)
            assert stored is not None and stored.content == before[deployment.rule_id], deployment.rule_id
            parse_rule_file(stored.content)
        newest = path.read_bytes()
    finally:
        await runtime.close()
    assert not (rules_dir / ".autotrain" / "backups").exists()
    versions = await stored_versions(settings.database_url, MODULE)
    assert len(versions) == 1 + 12 and versions[-1].content == newest

    # a copy put back to an older version (a restore by hand) is brought up to date at the next start: that
    # version is in the database, so nothing is lost and nothing is reported as a hand edit
    oldest_rule = next(iter(before))
    path.write_bytes(before[oldest_rule])
    runtime = await open_runtime(settings)
    try:
        assert path.read_bytes() == newest
        assert (await runtime.service.status()).hand_edited_rule_files == []
        assert not (rules_dir / ".autotrain" / "hand-edits").exists()
    finally:
        await runtime.close()
