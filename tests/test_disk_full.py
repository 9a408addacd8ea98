"""A full disk under the database (issue 11): SQLite answers SQLITE_FULL ("database or disk is full"), and the
API answers 503 database_full with Retry-After, never 500 internal_error; nothing is half-stored, and the same
requests go through once there is room again.

The full disk is simulated with SQLite's own size cap (`PRAGMA max_page_count` on the server's connection):
the database cannot grow by a page, exactly what a full file system does to it, without root or a tmpfs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from storage.sqlite.connection import busy
from tests.conftest import WEATHER_FEEDBACK
from tests.test_faults import (
    ADMIN_HEADERS,
    assert_error,
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
