"""Fault injection (issue 6): a database locked by another process, a disk that runs out of room during a
deploy, corrupt rule files (deploy, rollback, and the next start) and a chatbot reload endpoint that hangs.
Clear errors, no partial writes, the work left as it was so that a retry succeeds.

Already covered elsewhere, not repeated here: a truncated JSON file on deploy (tests/test_api.py::
test_corrupt_rule_file_is_never_overwritten), a reload endpoint answering 500 or not listening
(tests/test_api.py::test_failed_reload_is_recorded_not_raised / test_unreachable_reload_url_is_recorded),
RuleFiles.write under a read-only folder or a full disk (tests/test_rulefiles.py) and a backup folder that is
a file, at the service level
(tests/test_reliability_interruptions.py::test_failed_write_leaves_rule_approved_and_file_intact).

On both backends (`both_backends`), each fault in its PostgreSQL form: tables locked by another process
(`LOCK TABLE … IN EXCLUSIVE MODE`, reads still served) instead of SQLite's write lock; the version's table locked
while a deploy is between its pending row and its stored version; a full disk under the rules folder, which on
PostgreSQL only delays this instance's copy (the version is stored: the deploy is a fact); a corrupt seed (never
stored: refused 409 until repaired) or a corrupt copy of a stored file (the database wins, the copy kept as a hand
edit); and a corrupt copy found at a start with a deployment left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import storage.postgres
import storage.sqlite
from autotrain.models import RuleStatus
from autotrain.policy import Role
from autotrain.rulefiles import content_version
from autotrain.settings import DEFAULT_ALLOWED_MODULES
from bot.api import create_app
from bot.runtime import Runtime, open_runtime
from tests.conftest import (
    ADMIN,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    WEATHER_FEEDBACK,
    bearer,
    make_settings,
    read_rule_lines,
)
from tests.reliability_support import interrupted_deploy, on_postgres, stored_versions

Headers = dict[str, str]
MODULE = "fashion_rules.json"
ADMIN_HEADERS = bearer(Role.ADMIN, "U_ADMIN")
BUSY_TIMEOUT_MS = 200

# Holds the write lock of the database (BEGIN EXCLUSIVE) until a line arrives on stdin.
LOCK_SCRIPT = textwrap.dedent(
    """
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.readline()
    db.execute("COMMIT")
    db.close()
    print("released", flush=True)
    """
)


# PostgreSQL: another process takes the tables every submission and deploy writes (EXCLUSIVE: reads still go
# through) until a line arrives on stdin
PG_LOCK_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import asyncpg

    async def main(url):
        db = await asyncpg.connect(url)
        async with db.transaction():
            await db.execute("LOCK TABLE feedbacks, generated_rules, deployments IN EXCLUSIVE MODE")
            print("locked", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        await db.close()
        print("released", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


@contextlib.asynccontextmanager
async def running_app(
    tmp_path: Path, rules_dir: Path, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_settings(tmp_path, rules_dir, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            yield app, http


def runtime_of(app: FastAPI) -> Runtime:
    return app.state.runtime


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return body["error"]["message"]


def stray_files(rules_dir: Path) -> list[str]:
    """Anything in the rules folder besides the rule files and the state folder (e.g. a temp file)."""
    return sorted(p.name for p in rules_dir.iterdir() if p.name not in {".autotrain", *DEFAULT_ALLOWED_MODULES})


async def http_approved_rule(http: httpx.AsyncClient, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    submitted = await http.post("/autotrain/feedback", json=payload or WEATHER_FEEDBACK, headers=ADMIN_HEADERS)
    assert submitted.status_code == 201, submitted.text
    generated = await http.post(f"/autotrain/generate/{submitted.json()['feedback_id']}", headers=ADMIN_HEADERS)
    assert generated.status_code == 200, generated.text
    approved = await http.post(f"/autotrain/rules/{generated.json()['rule_id']}/approve", headers=ADMIN_HEADERS)
    assert approved.status_code == 200, approved.text
    return approved.json()


async def rule_status(http: httpx.AsyncClient, rule_id: str) -> str:
    response = await http.get(f"/autotrain/rules/{rule_id}", headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text
    return response.json()["status"]


async def deployment_count(http: httpx.AsyncClient) -> int:
    response = await http.get("/autotrain/deployments", headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text
    return response.json()["total"]


# ---------------------------------------------------------------------- a database locked by another process


@contextlib.asynccontextmanager
async def database_locked_by_another_process(runtime: Runtime) -> AsyncIterator[subprocess.Popen[str]]:
    """Another process holds the write lock (SQLite) or the tables' locks (PostgreSQL) until the block ends. Its
    answers are awaited in a thread: the app under test runs on this event loop, and a write of its own in
    flight (a background event delivery, a group commit) must be able to finish before the other process can
    take the lock."""
    settings = runtime.settings
    script, target = (
        (PG_LOCK_SCRIPT, settings.database_url)
        if settings.uses_postgres
        else (LOCK_SCRIPT, str(settings.database_path))
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "locked"
        yield holder
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "released"
        assert await asyncio.to_thread(holder.wait, 10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


def short_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock held elsewhere is given up on after BUSY_TIMEOUT_MS (both read when the store opens)."""
    monkeypatch.setattr(storage.sqlite, "BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)
    monkeypatch.setattr(storage.postgres, "LOCK_TIMEOUT_MS", BUSY_TIMEOUT_MS)


@pytest.mark.both_backends
async def test_locked_database_answers_503_database_busy_then_the_same_requests_succeed(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_lock_waits(monkeypatch)
    path = rules_dir / MODULE
    async with running_app(tmp_path, rules_dir) as (app, http):
        rule = await http_approved_rule(http)
        file_before = path.read_bytes()
        payload = {**WEATHER_FEEDBACK, "feedback_text": "Gợi ý áo khoác giữa trưa hè"}

        async with database_locked_by_another_process(runtime_of(app)):
            started = time.perf_counter()
            busy = await http.post("/autotrain/feedback", json=payload, headers=ADMIN_HEADERS)
            waited = time.perf_counter() - started
            assert_error(busy, 503, "database_busy")
            assert int(busy.headers["Retry-After"]) > 0
            assert waited < 5, f"the request waited {waited:.2f} s for a lock held elsewhere"

            busy_deploy = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            assert_error(busy_deploy, 503, "database_busy")
            assert int(busy_deploy.headers["Retry-After"]) > 0
            assert path.read_bytes() == file_before  # the deploy stopped before the file
            assert stray_files(rules_dir) == []

            # reads still work while another process writes (WAL; EXCLUSIVE lets readers in): nothing was stored,
            # the rule is unchanged
            listed = (await http.get("/autotrain/feedback", headers=ADMIN_HEADERS)).json()
            assert listed["total"] == 1, listed
            assert await rule_status(http, rule["rule_id"]) == "approved"
            assert await deployment_count(http) == 0

        retried = await http.post("/autotrain/feedback", json=payload, headers=ADMIN_HEADERS)
        assert retried.status_code == 201, retried.text
        assert retried.json()["feedback_id"] == "FB-1002"
        assert retried.json()["feedback_text"] == payload["feedback_text"]
        assert (await http.get("/autotrain/feedback", headers=ADMIN_HEADERS)).json()["total"] == 2

        deployed = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
        assert deployed.status_code == 200, deployed.text
        assert deployed.json()["status"] == "deployed"
        assert await deployment_count(http) == 1
        assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
        store = runtime_of(app).store
        assert await store.pending_deployments() == []
        submitted = [e for e in (await store.list_audit(subject_id=None, limit=500, offset=0)).items]
        assert sum(e.action == "feedback_submitted" for e in submitted) == 2  # none from the refused request
        print(f"busy answer after {waited * 1000:.0f} ms (busy timeout {BUSY_TIMEOUT_MS} ms)")


# Takes the write lock the moment a deployment is recorded as pending (the step before the file write) and
# holds it for a second: the database is busy exactly when the deploy must record that the write happened.
LOCK_AFTER_PENDING_SCRIPT = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
    print("watching", flush=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if db.execute("SELECT 1 FROM deployments WHERE state = 'pending' LIMIT 1").fetchone():
            db.execute("BEGIN EXCLUSIVE")
            print("locked", flush=True)
            time.sleep(1.0)
            db.execute("COMMIT")
            print("released", flush=True)
            break
        time.sleep(0.0002)
    else:
        print("missed", flush=True)
    """
)


# PostgreSQL: the table of the versions locked (EXCLUSIVE: the deploy still reads the newest one) before the deploy,
# so that it records its pending row and then waits to store the version; the lock is held until a second after
# the pending row is seen, so the database is busy exactly when the deploy must store what it changed
PG_LOCK_VERSIONS_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    import asyncpg

    async def main(url):
        holder, watcher = await asyncpg.connect(url), await asyncpg.connect(url)
        async with holder.transaction():
            await holder.execute("LOCK TABLE rule_file_versions IN EXCLUSIVE MODE")
            print("locked", flush=True)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if await watcher.fetchval("SELECT 1 FROM deployments WHERE state = 'pending' LIMIT 1"):
                    print("pending", flush=True)
                    await asyncio.sleep(1.0)
                    break
            else:
                print("missed", flush=True)
        print("released", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.both_backends
async def test_database_locked_between_file_write_and_its_record_leaves_no_stuck_deploy(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process takes the database between the pending row and the completed row of a deploy.

    A 503 database_busy ("try again") must mean nothing changed; and once the lock is gone, retrying as told
    must converge, without a restart: the rule deployed once, its deployment recorded, and rollback possible.
    """
    short_lock_waits(monkeypatch)
    path = rules_dir / MODULE
    async with running_app(tmp_path, rules_dir) as (app, http):
        rule = await http_approved_rule(http)
        settings = runtime_of(app).settings
        if settings.uses_postgres:
            watcher = subprocess.Popen(
                [sys.executable, "-c", PG_LOCK_VERSIONS_SCRIPT, settings.database_url],
                stdout=subprocess.PIPE,
                text=True,
            )
            expected = ["pending", "released"]
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["notes"] = "x" * 3_000_000  # a big file: the write takes long enough for the watcher to step in
            path.write_bytes(json.dumps(data).encode())
            watcher = subprocess.Popen(
                [sys.executable, "-c", LOCK_AFTER_PENDING_SCRIPT, str(settings.database_path)],
                stdout=subprocess.PIPE,
                text=True,
            )
            expected = ["locked", "released"]
        before = path.read_bytes()
        versions_before = len(await stored_versions(settings.database_url, MODULE)) if on_postgres() else 0
        try:
            assert watcher.stdout is not None
            assert (await asyncio.to_thread(watcher.stdout.readline)).strip() in ("watching", "locked")
            response = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            output = (await asyncio.to_thread(watcher.communicate, timeout=15))[0].split()
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait(timeout=10)
        assert output == expected, f"the lock did not land inside the deploy: {output}"
        written = path.read_bytes() != before
        if on_postgres():  # the truth there: a version stored
            written = written or len(await stored_versions(settings.database_url, MODULE)) != versions_before

        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert_error(response, 503, "database_busy")
            assert not written, (
                "the deploy answered 503 database_busy ('try again shortly') but the rule file was written: "
                f"rule {await rule_status(http, rule['rule_id'])}, {await deployment_count(http)} deployments "
                f"recorded, {len(await runtime_of(app).store.pending_deployments())} left pending"
            )
            retried = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            assert retried.status_code == 200, retried.text

        assert await rule_status(http, rule["rule_id"]) == "deployed"
        assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
        assert await deployment_count(http) == 1
        assert await runtime_of(app).store.pending_deployments() == []
        if on_postgres():
            versions = await stored_versions(settings.database_url, MODULE)
            assert len(versions) == versions_before + 1 and versions[-1].content == path.read_bytes()
        rolled = await http.post(f"/autotrain/rules/{rule['rule_id']}/rollback", headers=ADMIN_HEADERS)
        assert rolled.status_code == 200, rolled.text
        assert OLD_WEATHER_RULE in read_rule_lines(rules_dir) and NEW_WEATHER_RULE not in read_rule_lines(rules_dir)


# ---------------------------------------------------------------------- a disk that runs out of room


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past `limit` bytes fail with EFBIG, as on a full disk (root ignores permissions, not this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


# SQLite only: there the file is written before its deployment is recorded; the PostgreSQL form is just below
async def test_disk_full_during_deploy_answers_503_and_leaves_file_and_rule_as_they_were(
    tmp_path: Path, rules_dir: Path
) -> None:
    path = rules_dir / MODULE
    async with running_app(tmp_path, rules_dir) as (app, http):
        rule = await http_approved_rule(http)
        # a big rule file (an unknown key the chatbot ignores), so that the new version cannot fit under a
        # size limit that still lets the database, its WAL and the backup of the old version be written
        data = json.loads(path.read_text(encoding="utf-8"))
        data["notes"] = "x" * 2_000_000
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        before = path.read_bytes()
        database = runtime_of(app).settings.database_path
        limit = len(before) + 16
        for db_file in database.parent.glob(f"{database.name}*"):
            assert db_file.stat().st_size < limit // 2, f"{db_file.name} is too big for this test's size limit"

        with file_size_limit(limit):
            response = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
        message = assert_error(response, 503, "rule_file_write_failed")
        assert "unchanged" in message

        assert path.read_bytes() == before
        assert stray_files(rules_dir) == []  # the partial temp file was removed
        assert await rule_status(http, rule["rule_id"]) == "approved"
        assert await deployment_count(http) == 0
        store = runtime_of(app).store
        assert await store.pending_deployments() == []
        audit = await store.list_audit(subject_id=rule["rule_id"], limit=50, offset=0)
        assert "deploy_failed" in [entry.action for entry in audit.items]

        # room again: the same deploy goes through
        retried = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
        assert retried.status_code == 200, retried.text
        assert retried.json()["deployment"]["version_before"] == content_version(before)
        assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
        assert json.loads(path.read_text(encoding="utf-8"))["notes"] == data["notes"]


@pytest.mark.parametrize("database_backend", ["postgres"], indirect=True)  # the SQLite form: just above
async def test_disk_full_under_the_rules_copy_stores_the_version_and_the_copy_follows_once_there_is_room(
    tmp_path: Path, rules_dir: Path
) -> None:
    """PostgreSQL: the version is stored in the transaction that marks the deployment applied, before this
    instance's copy is written; a copy that cannot be written is only stale (the old one left whole, no temp file),
    and it is written once there is room again."""
    path = rules_dir / MODULE
    # a big seed (an unknown key the chatbot ignores), stored at the first start, so that the new version cannot
    # fit under the size limit (the database is another process's, on another disk)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["notes"] = "x" * 2_000_000
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    before = path.read_bytes()
    async with running_app(tmp_path, rules_dir) as (app, http):
        runtime = runtime_of(app)
        assert (await stored_versions(runtime.settings.database_url, MODULE))[-1].content == before  # the seed
        rule = await http_approved_rule(http)
        with file_size_limit(len(before) + 16):
            response = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            assert response.status_code == 200, response.text  # the change is a fact: it is stored
            assert path.read_bytes() == before
            assert stray_files(rules_dir) == []  # the partial temp file was removed
        assert response.json()["deployment"]["version_before"] == content_version(before)
        newest = (await stored_versions(runtime.settings.database_url, MODULE))[-1].content
        assert [entry["rule"] for entry in json.loads(newest)["rules"]].count(NEW_WEATHER_RULE) == 1
        assert await rule_status(http, rule["rule_id"]) == "deployed"
        assert await runtime.store.pending_deployments() == []

        # room again: the next check (every few seconds; here at once) writes the copy
        assert runtime.materializer is not None
        await runtime.materializer.check()
        assert path.read_bytes() == newest
        assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
        assert json.loads(path.read_text(encoding="utf-8"))["notes"] == data["notes"]


# ---------------------------------------------------------------------- corrupt rule files

CORRUPT_FILES = {
    "rules is not a list": b'{"version": 3, "rules": {"rule": "- a"}}',
    "a top-level list": b'[{"rule": "- a"}]',
    "an entry without a rule string": b'{"version": 3, "rules": [{"rule": 42}]}',
    "invalid UTF-8": b'{"version": 3, "rules": [{"rule": "- \xff\xfe"}]}',
    "a version that is not an integer": b'{"version": "3", "rules": []}',
}


def hand_edits(rules_dir: Path) -> list[bytes]:
    """The copies PostgreSQL's materializer kept of a file edited by hand before writing it from the database."""
    return [kept.read_bytes() for kept in sorted((rules_dir / ".autotrain" / "hand-edits" / MODULE).glob("*.bak"))]


@pytest.mark.both_backends
@pytest.mark.parametrize("corrupt", list(CORRUPT_FILES.values()), ids=list(CORRUPT_FILES))
@pytest.mark.parametrize("action", ["deploy", "rollback"])
async def test_a_corrupt_rule_file_is_refused_409_and_never_written(
    tmp_path: Path, rules_dir: Path, action: str, corrupt: bytes
) -> None:
    if on_postgres() and action == "deploy":
        await corrupt_seed_is_refused_409_until_repaired(tmp_path, rules_dir, corrupt)
        return
    path = rules_dir / MODULE
    async with running_app(tmp_path, rules_dir) as (app, http):
        rule = await http_approved_rule(http)
        if action == "rollback":
            deployed = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            assert deployed.status_code == 200, deployed.text
        status_before, deployments_before = await rule_status(http, rule["rule_id"]), await deployment_count(http)
        repaired = path.read_bytes()
        path.write_bytes(corrupt)

        response = await http.post(f"/autotrain/rules/{rule['rule_id']}/{action}", headers=ADMIN_HEADERS)
        if on_postgres():
            # the truth is the stored version, which a corrupt copy never reaches: the rollback goes through, and
            # the copy is kept as a hand edit and written from the database
            assert response.status_code == 200, response.text
            assert hand_edits(rules_dir) == [corrupt]
            url = runtime_of(app).settings.database_url
            assert path.read_bytes() == (await stored_versions(url, MODULE))[-1].content
            assert stray_files(rules_dir) == []
            lines = read_rule_lines(rules_dir)
            assert OLD_WEATHER_RULE in lines and NEW_WEATHER_RULE not in lines
            return
        assert_error(response, 409, "rule_file_invalid")
        assert path.read_bytes() == corrupt
        assert stray_files(rules_dir) == []
        assert await rule_status(http, rule["rule_id"]) == status_before
        assert await deployment_count(http) == deployments_before

        path.write_bytes(repaired)  # once repaired, the same request goes through
        retried = await http.post(f"/autotrain/rules/{rule['rule_id']}/{action}", headers=ADMIN_HEADERS)
        assert retried.status_code == 200, retried.text
        lines = read_rule_lines(rules_dir)
        assert (NEW_WEATHER_RULE in lines, OLD_WEATHER_RULE in lines) == (action == "deploy", action == "rollback")


async def corrupt_seed_is_refused_409_until_repaired(tmp_path: Path, rules_dir: Path, corrupt: bytes) -> None:
    """PostgreSQL: the first instance's file is the seed of the stored versions; a corrupt one is never stored,
    so every change of it is refused 409 (and the file left alone) until it is repaired."""
    path = rules_dir / MODULE
    repaired = path.read_bytes()
    path.write_bytes(corrupt)
    async with running_app(tmp_path, rules_dir) as (app, http):
        url = runtime_of(app).settings.database_url
        assert await stored_versions(url, MODULE) == []  # not seeded at the start
        rule = await http_approved_rule(http)
        response = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
        assert_error(response, 409, "rule_file_invalid")
        assert path.read_bytes() == corrupt
        assert stray_files(rules_dir) == []
        assert await stored_versions(url, MODULE) == []
        assert await rule_status(http, rule["rule_id"]) == "approved"
        assert await deployment_count(http) == 0

        path.write_bytes(repaired)  # once repaired, the same request goes through, from the repaired seed
        retried = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
        assert retried.status_code == 200, retried.text
        versions = await stored_versions(url, MODULE)
        assert [v.content for v in versions[:1]] == [repaired] and len(versions) == 2
        # (generated while the file did not parse: its line, whatever the generator made of the complaint)
        assert read_rule_lines(rules_dir).count(rule["new_rule"]) == 1
        assert path.read_bytes() == versions[-1].content


@pytest.mark.both_backends
async def test_next_start_with_a_corrupt_file_and_a_pending_deployment_starts_and_leaves_the_file_alone(
    tmp_path: Path, rules_dir: Path
) -> None:
    """A crash left a deployment pending, and the file was damaged meanwhile: the start must not fail nor
    write the file; the deployment cannot be confirmed, so it is aborted and the rule can be deployed again.
    On PostgreSQL the damaged file is a copy: its version was never stored, so the deployment is aborted all the
    same, and the copy is kept as a hand edit and written from the database (which wins)."""
    settings = make_settings(tmp_path, rules_dir)
    path = rules_dir / MODULE
    runtime = await open_runtime(settings)
    try:
        previous = path.read_bytes()
        rule_id, _ = await interrupted_deploy(runtime)
    finally:
        await runtime.close()
    corrupt = b'{"version": 2, "rules": [{"rule": "- cut short'
    path.write_bytes(corrupt)

    runtime = await open_runtime(settings, reconcile=True)  # what `autotrain serve` does at start
    try:
        if settings.uses_postgres:
            assert path.read_bytes() == previous and hand_edits(rules_dir) == [corrupt]
        else:
            assert path.read_bytes() == corrupt
        assert await runtime.store.pending_deployments() == []
        assert (await runtime.service.get_rule(rule_id)).status is RuleStatus.APPROVED
        assert (await runtime.service.list_deployments()).total == 0
        path.write_bytes(previous)
        await runtime.service.deploy(rule_id, ADMIN)
        assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
    finally:
        await runtime.close()


# ---------------------------------------------------------------------- a reload endpoint that hangs


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections on 127.0.0.1 and reads, but never answers (a hung chatbot)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/reload"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


@pytest.mark.both_backends
async def test_a_hung_reload_endpoint_times_out_and_the_deploy_still_succeeds(tmp_path: Path, rules_dir: Path) -> None:
    with silent_server() as url:
        async with running_app(tmp_path, rules_dir, reload_url=url, reload_timeout_seconds=0.5) as (_, http):
            rule = await http_approved_rule(http)
            started = time.perf_counter()
            response = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["status"] == "deployed"
            assert body["deployment"]["reload_status"] == "failed"
            assert "Timeout" in body["deployment"]["reload_error"]
            assert 0.4 < elapsed < 5, f"deploy took {elapsed:.2f} s with a 0.5 s reload timeout"
            listed = (await http.get("/autotrain/deployments", headers=ADMIN_HEADERS)).json()
            assert listed["items"][0]["reload_status"] == "failed"
    assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
