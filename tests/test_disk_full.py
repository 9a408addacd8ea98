"""A full disk (issue 11): SQLite answers SQLITE_FULL ("database or disk is full"), and the API answers 503
database_full with Retry-After, never 500 internal_error; nothing is half-stored, reads and /healthz still
answer, and the same requests go through once there is room again.

Two ways to fill the disk:

- in process, SQLite's own size cap (`PRAGMA max_page_count` on the server's connection): the database cannot
  grow by a page, as on a full file system, without root or a tmpfs;
- through the real server (`autotrain serve` as a subprocess), a small tmpfs (TMPFS_BYTES) under the database
  (or under the rules folder) filled with a filler file until ENOSPC. The database stays in place, in WAL mode:
  the test checkpoints the WAL to 0 bytes first (from its own connection), so the first write must grow the
  -wal file and fails. Submit, approve, deploy and rollback answer 503 database_full with Retry-After and
  change nothing (the rule file byte for byte, the rule's status); a deploy onto a full rules folder answers
  503 rule_file_write_failed, the old file whole and no temp file left. The server stays up, its log holds no
  traceback (nor "cannot rollback - no transaction is active"), and once the filler is deleted the same
  requests succeed. These tests need `mount -t tmpfs` (root or CAP_SYS_ADMIN) and are skipped without it.

The last test pins a bug seen with the database and the rules folder on one full tmpfs: room for a deploy's
pending row but neither for the rule file nor for recording the abort (the rule was left "deployed" and the
retry refused 409 until a restart).

PostgreSQL: its full disk is the server's (SQLSTATE 53100, mapped to the same 503 database_full); a full disk
under an instance's rules folder only delays that instance's copy, since the version is stored first: the deploy
is a fact, the old copy stays whole, and the periodic check writes the new one once there is room."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from autotrain.rulefiles import content_version
from storage.sqlite.connection import busy
from tests.conftest import (
    HEIGHT_FEEDBACK,
    JWT_SECRET,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    SHIPPED_RULES,
    WEATHER_FEEDBACK,
    read_rule_lines,
)
from tests.reliability_support import assert_served_backend, database_url, run_sync, stored_versions
from tests.serve_process import serving, subprocess_environment
from tests.test_faults import (
    ADMIN_HEADERS,
    MODULE,
    assert_error,
    http_approved_rule,
    running_app,
    runtime_of,
)

# a feedback too big for the free room of a page: storing it needs a new page (overflow pages)
BIG_FEEDBACK = {**WEATHER_FEEDBACK, "feedback_text": "Trời nóng quá " * 280, "ai_response": "áo khoác " * 800}


@contextlib.asynccontextmanager
async def database_full(app: FastAPI) -> AsyncIterator[None]:
    """The database cannot grow by one page while inside (as on a full disk)."""
    db = runtime_of(app).store._connection()
    await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cursor = await db.execute("PRAGMA page_count")
    row = await cursor.fetchone()
    assert row is not None
    await db.execute(f"PRAGMA max_page_count = {int(row[0])}")
    try:
        yield
    finally:
        await db.execute("PRAGMA max_page_count = 1073741823")


async def feedback_total(http: httpx.AsyncClient) -> int:
    response = await http.get("/autotrain/feedback", headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text
    return response.json()["total"]


def test_sqlite_full_maps_to_a_retryable_store_error() -> None:
    import sqlite3

    from autotrain.errors import StoreBusy, StoreFull

    error = busy(sqlite3.OperationalError("database or disk is full"))
    assert isinstance(error, StoreFull) and isinstance(error, StoreBusy)
    assert error.code == "database_full"


def test_postgres_disk_full_maps_to_the_same_retryable_store_error() -> None:
    import asyncpg

    from autotrain.errors import StoreBusy, StoreFull
    from storage.postgres.connection import busy as postgres_busy

    error = postgres_busy(asyncpg.DiskFullError('could not extend file "base/1/2": No space left on device'))
    assert isinstance(error, StoreFull) and isinstance(error, StoreBusy)
    assert error.code == "database_full"


# SQLite only: SQLite's own size cap on the server's connection (PostgreSQL's disk is the server's)
async def test_submit_on_a_full_database_answers_503_with_retry_after_and_stores_nothing(
    tmp_path: Path, rules_dir: Path
) -> None:
    async with running_app(tmp_path, rules_dir, auto_generate=False) as (app, http):
        before = await feedback_total(http)
        async with database_full(app):
            response = await http.post("/autotrain/feedback", json=BIG_FEEDBACK, headers=ADMIN_HEADERS)
            message = assert_error(response, 503, "database_full")
            assert "full" in message
            assert int(response.headers["Retry-After"]) > 0
            assert await feedback_total(http) == before  # reads still work on a full disk
        # room again: the same request goes through
        retried = await http.post("/autotrain/feedback", json=BIG_FEEDBACK, headers=ADMIN_HEADERS)
        assert retried.status_code == 201, retried.text
        assert await feedback_total(http) == before + 1


# ---------------------------------------------------------------------- `autotrain serve` on a tmpfs that fills up

TMPFS_BYTES = 4 * 1024 * 1024
BUDGET_FEEDBACK = {
    "query": "gợi ý váy đi làm",
    "ai_response": "Bạn thử mẫu váy lụa 3 triệu này nhé",
    "feedback_text": "Đắt quá, vượt ngân sách của mình",
    "feedback_type": "bug",
}
HEIGHT_RULE = "- Dưới 1m55: gợi ý đầm ngắn (midi, knee-length)"
BUDGET_RULE = "- Hỏi ngân sách của khách trước khi gợi ý và chỉ đưa sản phẩm trong tầm giá đó"
BAD_LOG_LINES = ("Traceback", "cannot rollback", "internal_error", "500 Internal Server Error")


@contextlib.contextmanager
def tmpfs(folder: Path, size: int = TMPFS_BYTES) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted on `folder` (skips the test where mounting is not allowed)."""
    folder.mkdir(parents=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs for the full-disk tests (needs root or CAP_SYS_ADMIN): {exc}")
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs for the full-disk tests (needs root or CAP_SYS_ADMIN): "
            + (mounted.stderr.strip() or f"mount exited {mounted.returncode}")
        )
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, timeout=10).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10)


@contextlib.contextmanager
def disk_filled(folder: Path) -> Iterator[int]:
    """Fill the file system of `folder` with a filler file until ENOSPC (its size is yielded); delete it after."""
    filler = folder / "filler"
    written = 0
    try:
        with open(filler, "wb", buffering=0) as out:
            for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):  # the last pages, then the last bytes of one
                while True:
                    try:
                        count = out.write(chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                        break
                    written += count or 0
        assert os.statvfs(folder).f_bavail == 0
        yield written
    finally:
        filler.unlink(missing_ok=True)


def checkpoint(database: Path) -> None:
    """Move the WAL into the database file and truncate it to 0 bytes, from this process (the server's
    connection is idle between requests). Then any write must grow the -wal file, so on a full disk the very
    first one fails: a WAL that still had room would take writes until it is used up, which is no failure."""
    db = sqlite3.connect(database, timeout=10)
    try:
        busy_readers, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.close()
    assert busy_readers == 0
    assert database.with_name(database.name + "-wal").stat().st_size == 0


@dataclass
class Server:
    http: httpx.Client
    process: subprocess.Popen[bytes]
    workdir: Path

    def log(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")

    def assert_clean_log(self) -> None:
        log = self.log()
        for bad in BAD_LOG_LINES:
            assert bad not in log, f"{bad!r} in the server's log:\n{log}"

    def settle(self) -> None:
        """Until the server's background work on the last requests is done (its events delivered: each
        delivery is a write), so that a checkpoint now leaves the WAL empty."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = self.http.get("/autotrain/status", headers=ADMIN_HEADERS).json()
            if status["events_undelivered"] == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"events still undelivered after 10 s: {status['events_undelivered']}")

    def feedback_total(self) -> int:
        response = self.http.get("/autotrain/feedback", headers=ADMIN_HEADERS)
        assert response.status_code == 200, response.text
        return response.json()["total"]

    def rule(self, rule_id: str) -> dict[str, Any]:
        response = self.http.get(f"/autotrain/rules/{rule_id}", headers=ADMIN_HEADERS)
        assert response.status_code == 200, response.text
        return response.json()

    def generated_rule(self, feedback: dict[str, str]) -> str:
        submitted = self.http.post("/autotrain/feedback", json=feedback, headers=ADMIN_HEADERS)
        assert submitted.status_code == 201, submitted.text
        generated = self.http.post(f"/autotrain/generate/{submitted.json()['feedback_id']}", headers=ADMIN_HEADERS)
        assert generated.status_code == 200, generated.text
        return generated.json()["rule_id"]

    def act(self, rule_id: str, action: str, expected: int = 200) -> httpx.Response:
        response = self.http.post(f"/autotrain/rules/{rule_id}/{action}", headers=ADMIN_HEADERS)
        assert response.status_code == expected, response.text
        return response


@contextlib.contextmanager
def server(workdir: Path, database: Path | str, rules_dir: Path, **extra: str) -> Iterator[Server]:
    """`autotrain serve` with its database at `database` (a SQLite file, or a PostgreSQL URL) and a copy of
    config/ in `rules_dir` (git history and the scheduler on, as by default)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SHIPPED_RULES, rules_dir, ignore=shutil.ignore_patterns(".autotrain"), dirs_exist_ok=True)
    env = subprocess_environment(
        AUTOTRAIN_DATABASE_URL=database if isinstance(database, str) else f"sqlite:///{database}",
        AUTOTRAIN_RULES_DIR=str(rules_dir),
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_AUTO_GENERATE="false",
        # no background replays: the server must be idle between requests for the WAL checkpoint to hold
        AUTOTRAIN_EVALUATE="off",
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="100000/minute",
        **extra,
    )
    with serving(workdir, env) as (base_url, process):
        with httpx.Client(base_url=base_url, timeout=30) as http:
            yield Server(http, process, workdir)


def leftovers(rules_dir: Path) -> list[str]:
    """Temp files of a write (a rule file's, a backup's) anywhere in the rules folder, git's own aside."""
    return sorted(str(p.relative_to(rules_dir)) for p in rules_dir.rglob("*.tmp") if ".git" not in p.parts)


def assert_full(response: httpx.Response) -> None:
    assert_error(response, 503, "database_full")
    assert int(response.headers["Retry-After"]) > 0


# SQLite only (as the next test): the database file is on the full tmpfs; PostgreSQL's disk is the server's
def test_served_submit_on_a_full_tmpfs_answers_503_stores_nothing_and_reads_still_answer(tmp_path: Path) -> None:
    with (
        tmpfs(tmp_path / "disk") as disk,
        server(tmp_path / "served", disk / "autotrain.db", tmp_path / "rules") as app,
    ):
        app.http.post("/autotrain/feedback", json=WEATHER_FEEDBACK, headers=ADMIN_HEADERS).raise_for_status()
        app.settle()
        checkpoint(disk / "autotrain.db")
        with disk_filled(disk):
            answers = [
                app.http.post("/autotrain/feedback", json=payload, headers=ADMIN_HEADERS)
                for payload in (WEATHER_FEEDBACK, BIG_FEEDBACK) * 5
            ]
            for response in answers:
                assert_full(response)
            assert "full" in answers[0].json()["error"]["message"]
            # reads and the health check still answer on a full disk
            assert app.http.get("/healthz").status_code == 200
            assert app.feedback_total() == 1
            assert app.http.get("/autotrain/status", headers=ADMIN_HEADERS).status_code == 200
        assert app.feedback_total() == 1  # room again: none of the refused ones was stored
        retried = app.http.post("/autotrain/feedback", json=BIG_FEEDBACK, headers=ADMIN_HEADERS)
        assert retried.status_code == 201, retried.text
        assert app.feedback_total() == 2
        assert app.process.poll() is None
        app.assert_clean_log()


def test_served_approve_deploy_rollback_on_a_full_tmpfs_answer_503_and_change_nothing(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"  # on the ordinary disk: only the database's disk is full
    path = rules_dir / MODULE
    with tmpfs(tmp_path / "disk") as disk, server(tmp_path / "served", disk / "autotrain.db", rules_dir) as app:
        deployed = app.generated_rule(WEATHER_FEEDBACK)
        app.act(deployed, "approve")
        app.act(deployed, "deploy")
        approved = app.generated_rule(HEIGHT_FEEDBACK)
        app.act(approved, "approve")
        pending = app.generated_rule(BUDGET_FEEDBACK)
        before = path.read_bytes()
        app.settle()
        checkpoint(disk / "autotrain.db")
        with disk_filled(disk):
            for rule_id, action in ((approved, "deploy"), (deployed, "rollback"), (pending, "approve")):
                assert_full(app.act(rule_id, action, expected=503))
                assert path.read_bytes() == before, action
            assert [app.rule(r)["status"] for r in (deployed, approved, pending)] == ["deployed", "approved", "pending"]
            assert leftovers(rules_dir) == []
        # room again: the same requests go through, each line once
        app.act(approved, "deploy")
        assert read_rule_lines(rules_dir).count(HEIGHT_RULE) == 1
        app.act(deployed, "rollback")
        assert NEW_WEATHER_RULE not in read_rule_lines(rules_dir)
        assert OLD_WEATHER_RULE in read_rule_lines(rules_dir)
        app.act(pending, "approve")
        app.act(pending, "deploy")
        assert read_rule_lines(rules_dir).count(BUDGET_RULE) == 1
        assert [app.rule(r)["status"] for r in (deployed, approved, pending)] == ["rolled_back", "deployed", "deployed"]
        assert app.process.poll() is None
        app.assert_clean_log()


# SQLite: the folder is the truth, written before the record (its PostgreSQL form follows)
def test_served_deploy_onto_a_full_rules_tmpfs_answers_503_and_leaves_the_file_whole(tmp_path: Path) -> None:
    with (
        tmpfs(tmp_path / "rules") as rules_dir,
        server(tmp_path / "served", tmp_path / "autotrain.db", rules_dir) as app,
    ):
        path = rules_dir / MODULE
        rule_id = app.generated_rule(WEATHER_FEEDBACK)
        app.act(rule_id, "approve")
        before = path.read_bytes()
        with disk_filled(rules_dir):
            response = app.act(rule_id, "deploy", expected=503)
            assert "unchanged" in assert_error(response, 503, "rule_file_write_failed")
            assert path.read_bytes() == before
            assert app.rule(rule_id)["status"] == "approved"
        assert leftovers(rules_dir) == []
        # room again: the same deploy goes through, and its git commit too
        deployment = app.act(rule_id, "deploy").json()["deployment"]
        assert deployment["commit_sha"] and deployment["commit_error"] is None, deployment
        assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
        assert app.process.poll() is None
        app.assert_clean_log()


@pytest.mark.parametrize("database_backend", ["postgres"], indirect=True)  # the SQLite form: just above
def test_served_deploy_onto_a_full_rules_tmpfs_stores_the_version_and_the_copy_follows_once_there_is_room(
    tmp_path: Path,
) -> None:
    url = database_url(tmp_path)
    # git off: a full disk under the repository is git's own matter (tests/test_git_history.py), not the copy's
    with (
        tmpfs(tmp_path / "rules") as rules_dir,
        server(tmp_path / "served", url, rules_dir, AUTOTRAIN_GIT="false") as app,
    ):
        path = rules_dir / MODULE
        rule_id = app.generated_rule(WEATHER_FEEDBACK)
        app.act(rule_id, "approve")
        before = path.read_bytes()
        with disk_filled(rules_dir):
            deployment = app.act(rule_id, "deploy").json()["deployment"]  # stored: the change is a fact
            assert path.read_bytes() == before  # this instance's copy could not be written: the old one, whole
            assert app.rule(rule_id)["status"] == "deployed"
            newest = run_sync(stored_versions(url, MODULE))[-1].content
            assert deployment["version_after"] == content_version(newest) != content_version(before)
            assert leftovers(rules_dir) == []
        # room again: the periodic check (every 5 s) writes the newest version
        deadline = time.monotonic() + 20
        while path.read_bytes() != newest:
            assert time.monotonic() < deadline, "the copy was not written from the database once there was room"
            time.sleep(0.1)
        assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
        assert leftovers(rules_dir) == []
        assert app.process.poll() is None
        assert_served_backend(app.log())
        app.assert_clean_log()


# ---------------------------------------------------------------------- the disk fills between claim and write


# SQLite only: on PostgreSQL nothing is written before the deployment is recorded, so no write can fail before it
async def test_a_deploy_whose_abort_cannot_be_recorded_goes_through_once_there_is_room(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen through the real server with the database and the rules folder on one tmpfs with 12 pages free:
    the pending row fits, the rule file does not, and neither does the abort. Simulated here (faster, exact)."""
    import dataclasses

    import bot.runtime
    from autotrain.errors import RuleFileWriteFailed, StoreFull

    options = bot.runtime.pipeline_options
    monkeypatch.setattr(
        bot.runtime, "pipeline_options", lambda s: dataclasses.replace(options(s), record_deadline_seconds=0.3)
    )
    path = rules_dir / MODULE
    async with running_app(tmp_path, rules_dir) as (app, http):
        rule = await http_approved_rule(http)
        runtime = runtime_of(app)
        before = path.read_bytes()

        def write_on_a_full_disk(*args: object) -> str:
            raise RuleFileWriteFailed(f"could not write {MODULE}; it is unchanged ([Errno 28] No space left)")

        async def abort_on_a_full_disk(*args: object, **kwargs: object) -> None:
            raise StoreFull("the database cannot grow (disk full or size limit reached); nothing was changed")

        with monkeypatch.context() as full:
            full.setattr(runtime.rule_files, "write", write_on_a_full_disk)
            full.setattr(runtime.store, "abort_deployment", abort_on_a_full_disk)
            response = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
            # what went wrong is the file (not "nothing was changed" about the abort), said at once
            assert_error(response, 503, "rule_file_write_failed")
            assert response.headers["Retry-After"] == "60"
        assert path.read_bytes() == before
        # room again: the same deploy goes through
        retried = await http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN_HEADERS)
        assert retried.status_code == 200, retried.text
        assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
