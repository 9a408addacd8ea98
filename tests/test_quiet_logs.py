"""What the log says (issue 16): one line for a database's migrations, no APScheduler chatter at every tick
(its warnings and a job's failure still logged), and a reason where a reason belongs."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.monitoring import Digest, DigestRule
from bot.runtime import open_runtime
from bot.scheduler import build_scheduler
from bot.slack.monitoring import SlackMonitoringSink
from storage.migrations import MIGRATIONS, SCHEMA_VERSION
from storage.sqlite import SqliteStore
from storage.sqlite.connection import statements
from tests.conftest import make_settings


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


# ---------------------------------------------------------------------- migrations


async def test_a_new_database_is_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store = SqliteStore(tmp_path / "new.db")
    await store.open()
    await store.close()
    assert messages(caplog, "storage.sqlite") == [f"database created at schema version {SCHEMA_VERSION}"]

    caplog.clear()
    store = SqliteStore(tmp_path / "new.db")
    await store.open()  # at the current version: nothing to say
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    assert messages(caplog, "storage.sqlite") == []


async def test_an_older_database_is_one_line_naming_both_versions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    older = SCHEMA_VERSION - 4
    path = tmp_path / "older.db"
    with sqlite3.connect(path) as db:  # a database an older Auto-Train left: its migrations, no more
        for script in MIGRATIONS[:older]:
            for statement in statements(script):
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {older}")
    caplog.set_level(logging.INFO)
    store = SqliteStore(path)
    await store.open()
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    assert messages(caplog, "storage.sqlite") == [f"database migrated from schema version {older} to {SCHEMA_VERSION}"]


# ---------------------------------------------------------------------- the scheduler


async def test_scheduler_ticks_log_nothing_but_a_failing_job_is_logged(
    tmp_path: Path, rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runtime = await open_runtime(make_settings(tmp_path, rules_dir, alert_interval_seconds=1))
    scheduler = build_scheduler(runtime)
    scheduler.start()
    try:
        await asyncio.sleep(2.3)  # two alert ticks
        assert [r for r in caplog.records if r.name.startswith("apscheduler")] == []
        assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.WARNING)  # kept

        await runtime.store.close()  # the next tick's alert check cannot read the database
        await asyncio.sleep(1.2)
        failed = [r for r in caplog.records if r.name == "autotrain.scheduler"]
        assert failed and failed[0].levelno == logging.ERROR
        assert "scheduled job alerts failed" in failed[0].getMessage() and failed[0].exc_info
    finally:
        scheduler.shutdown(wait=False)
        await runtime.close()


# ---------------------------------------------------------------------- the digest's links


@pytest.fixture
def slack_behind_a_broken_proxy() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A Slack Web API whose chat.getPermalink answers a proxy's 503 page (no JSON, no error code);
    chat.postMessage works. (base URL, the posted messages)"""
    posted: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/api/chat.postMessage"):
                posted.append(json.loads(body or b"{}") if "json" in self.headers.get("Content-Type", "") else {})
                status, payload, kind = 200, b'{"ok": true, "ts": "1.000100", "channel": "CDIGEST"}', "application/json"
            else:
                status, payload, kind = 503, b"<html><body>503 Service Unavailable</body></html>", "text/html"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/", posted
    finally:
        server.shutdown()
        server.server_close()


async def test_a_card_link_slack_would_not_give_says_what_slack_answered(
    slack_behind_a_broken_proxy: tuple[str, list[dict[str, object]]], caplog: pytest.LogCaptureFixture
) -> None:
    base_url, posted = slack_behind_a_broken_proxy
    client = AsyncWebClient(token="xoxb-test", base_url=base_url)
    sink = SlackMonitoringSink(client, alert_channel=None, digest_channel="CDIGEST")
    now = datetime(2026, 1, 2, 9, tzinfo=UTC)
    digest = Digest(
        start=now.replace(day=1),
        end=now,
        feedback_by_type={"bug": 1},
        rules_generated=1,
        rules_approved=1,
        rules_rejected=0,
        rules_deployed=1,
        rules_rolled_back=0,
        pending_feedback=0,
        pending_rules=0,
        oldest_pending_feedback_id=None,
        oldest_pending_at=None,
        approval_seconds_avg=60.0,
        approval_seconds_p90=60.0,
        themes=[],
        deployed=[
            DigestRule(
                rule_id="RUL-1001",
                module_name="fashion_rules.json",
                new_rule="- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày",
                channel="CREVIEW",
                message_ts="1700000000.000100",
                outcome="replaced",
                status="deployed",
            )
        ],
    )
    caplog.set_level(logging.INFO)
    await sink.digest(digest)
    assert len(posted) == 1  # the digest goes out, without the link
    [said] = [m for m in messages(caplog, "autotrain.slack") if "no link to the card" in m]
    assert said.startswith("no link to the card of RUL-1001")
    assert "HTTP 503 (no error code)" in said
    assert "None" not in said
