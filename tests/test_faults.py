"""Fault injection (issue 6): a database locked by another process, a disk that runs out of room during a
deploy, corrupt rule files (deploy, rollback, and the next start) and a chatbot reload endpoint that hangs.
Clear errors, no partial writes, the work left as it was so that a retry succeeds.

Already covered elsewhere, not repeated here: a truncated JSON file on deploy (tests/test_api.py::
test_corrupt_rule_file_is_never_overwritten), a reload endpoint answering 500 or not listening
(tests/test_api.py::test_failed_reload_is_recorded_not_raised / test_unreachable_reload_url_is_recorded),
RuleFiles.write under a read-only folder or a full disk (tests/test_rulefiles.py) and a backup folder that is
a file, at the service level (tests/test_service.py::test_failed_write_leaves_rule_approved_and_file_intact).
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

import storage.sqlite
from autotrain.models import RuleStatus
from autotrain.policy import Role
from autotrain.ports import NewDeployment
from autotrain.rulefiles import content_version
from autotrain.settings import DEFAULT_ALLOWED_MODULES
from bot.api import create_app
from bot.runtime import Runtime, open_runtime
from tests.conftest import (
    ADMIN,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    WEATHER_FEEDBACK,
    approved_rule,
    bearer,
    make_settings,
    read_rule_lines,
)

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
async def database_locked_by_another_process(database: Path) -> AsyncIterator[subprocess.Popen[str]]:
    """Another process holds the write lock until the block ends. Its answers are awaited in a thread: the
    app under test runs on this event loop, and a write of its own in flight (a background event delivery,
    a group commit) must be able to finish before the other process can take the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_SCRIPT, str(database)],
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


async def test_locked_database_answers_503_database_busy_then_the_same_requests_succeed(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.sqlite, "BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)  # read when the store opens
    path = rules_dir / MODULE
    async with running_app(tmp_path, rules_dir) as (app, http):
        rule = await http_approved_rule(http)
        file_before = path.read_bytes()
        database = runtime_of(app).settings.database_path
        payload = {**WEATHER_FEEDBACK, "feedback_text": "Gợi ý áo khoác giữa trưa hè"}

        async with database_locked_by_another_process(database):
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

            # reads still work while another process writes (WAL): nothing was stored, the rule is unchanged
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


async def test_database_locked_between_file_write_and_its_record_leaves_no_stuck_deploy(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process takes the database between the pending row and the completed row of a deploy.

    A 503 database_busy ("try again") must mean nothing changed; and once the lock is gone, retrying as told
    must converge, without a restart: the rule deployed once, its deployment recorded, and rollback possible.
    """
    monkeypatch.setattr(storage.sqlite, "BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)
    path = rules_dir / MODULE
    async with running_app(tmp_path, rules_dir) as (app, http):
        rule = await http_approved_rule(http)
        data = json.loads(path.read_text(encoding="utf-8"))
        data["notes"] = "x" * 3_000_000  # a big file: the write takes long enough for the watcher to step in
        path.write_bytes(json.dumps(data).encode())
        before = path.read_bytes()
        watcher = subprocess.Popen(
            [sys.executable, "-c", LOCK_AFTER_PENDING_SCRIPT, str(runtime_of(app).settings.database_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert watcher.stdout is not None and watcher.stdout.readline().strip() == "watching"
            response = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            output = watcher.communicate(timeout=15)[0].split()
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait(timeout=10)
        assert output == ["locked", "released"], f"the lock did not land inside the deploy: {output}"
        written = path.read_bytes() != before

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


# ---------------------------------------------------------------------- corrupt rule files

CORRUPT_FILES = {
    "rules is not a list": b'{"version": 3, "rules": {"rule": "- a"}}',
    "a top-level list": b'[{"rule": "- a"}]',
    "an entry without a rule string": b'{"version": 3, "rules": [{"rule": 42}]}',
    "invalid UTF-8": b'{"version": 3, "rules": [{"rule": "- \xff\xfe"}]}',
    "a version that is not an integer": b'{"version": "3", "rules": []}',
}


@pytest.mark.parametrize("corrupt", list(CORRUPT_FILES.values()), ids=list(CORRUPT_FILES))
@pytest.mark.parametrize("action", ["deploy", "rollback"])
async def test_a_corrupt_rule_file_is_refused_409_and_never_written(
    tmp_path: Path, rules_dir: Path, action: str, corrupt: bytes
) -> None:
    path = rules_dir / MODULE
    async with running_app(tmp_path, rules_dir) as (_, http):
        rule = await http_approved_rule(http)
        if action == "rollback":
            deployed = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            assert deployed.status_code == 200, deployed.text
        status_before, deployments_before = await rule_status(http, rule["rule_id"]), await deployment_count(http)
        repaired = path.read_bytes()
        path.write_bytes(corrupt)

        response = await http.post(f"/autotrain/rules/{rule['rule_id']}/{action}", headers=ADMIN_HEADERS)
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


async def test_next_start_with_a_corrupt_file_and_a_pending_deployment_starts_and_leaves_the_file_alone(
    tmp_path: Path, rules_dir: Path
) -> None:
    """A crash left a deployment pending, and the file was damaged meanwhile: the start must not fail nor
    write the file; the deployment cannot be confirmed, so it is aborted and the rule can be deployed again."""
    settings = make_settings(tmp_path, rules_dir)
    path = rules_dir / MODULE
    runtime = await open_runtime(settings)
    try:
        rule = await approved_rule(runtime.service)
        previous, document = runtime.rule_files.read(MODULE)
        change = document.apply(new_rule=rule.new_rule, old_rule=rule.old_rule, entry={"rule_id": rule.rule_id})
        deployment_id = await runtime.store.begin_deployment(
            NewDeployment(
                rule_id=rule.rule_id,
                module_name=MODULE,
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
    finally:
        await runtime.close()
    corrupt = b'{"version": 2, "rules": [{"rule": "- cut short'
    path.write_bytes(corrupt)

    runtime = await open_runtime(settings, reconcile=True)  # what `autotrain serve` does at start
    try:
        assert path.read_bytes() == corrupt
        assert await runtime.store.pending_deployments() == []
        assert (await runtime.service.get_rule(rule.rule_id)).status is RuleStatus.APPROVED
        assert (await runtime.service.list_deployments()).total == 0
        path.write_bytes(previous)
        await runtime.service.deploy(rule.rule_id, ADMIN)
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
