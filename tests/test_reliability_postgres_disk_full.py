"""A full disk under PostgreSQL (issue 11's full-disk tests, in PostgreSQL's form): the test's database is moved
into a tablespace on a small tmpfs, which a filler file then fills until ENOSPC, so the server cannot extend a
table of it ("could not extend file …: No space left on device", SQLSTATE 53100; the WAL is elsewhere, so no other
database of the server is touched). `autotrain serve` on that database answers 503 database_full with Retry-After,
never 500; a refused submission stores nothing, reads and /healthz still answer, and once the filler is deleted the
same request goes through. (SQLite's forms: tests/test_disk_full.py.)

Needs `mount -t tmpfs` (root or CAP_SYS_ADMIN) and the PostgreSQL server on this machine (the tablespace's folder
must be its own user's); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.conftest import WEATHER_FEEDBACK
from tests.postgres_support import POSTGRES_URL
from tests.reliability_support import assert_served_backend, database_url, run_sync
from tests.test_disk_full import BIG_FEEDBACK, assert_full, disk_filled, server, tmpfs
from tests.test_faults import ADMIN_HEADERS

# a fresh database is ~8 MB of catalogs; the tablespace holds those and the schema, and then the filler
TABLESPACE_BYTES = 32 * 1024 * 1024
MAX_SUBMISSIONS = 400  # the free room of the pages already there takes some before a table must grow


async def _execute(url: str, *statements: str) -> str:
    db = await asyncpg.connect(url)
    try:
        result = ""
        for statement in statements:
            result = str(await db.fetchval(statement) if statement.startswith("SHOW") else await db.execute(statement))
        return result
    finally:
        await db.close()


@contextlib.contextmanager
def database_on_a_tmpfs(url: str) -> Iterator[Path]:
    """The (still unused) database `url` names moved into a tablespace on a tmpfs of its own; the tmpfs yielded.
    Afterwards the database is dropped (before its tablespace can be), then the tablespace and the tmpfs."""
    assert POSTGRES_URL is not None
    data_directory = Path(run_sync(_execute(POSTGRES_URL, "SHOW data_directory")))
    if not data_directory.is_dir():
        pytest.skip("the PostgreSQL server is not on this machine: its tablespace cannot be on a tmpfs of this test")
    owner = data_directory.stat()
    name = urlsplit(url).path.lstrip("/")
    space = f"autotrain_test_{uuid.uuid4().hex[:12]}"
    # outside pytest's folders (mode 0700, root's): the server's own user must reach the tablespace
    folder = Path(tempfile.gettempdir()) / f"autotrain-tablespace-{space}"
    try:
        with tmpfs(folder, TABLESPACE_BYTES) as disk:
            os.chown(disk, owner.st_uid, owner.st_gid)
            os.chmod(disk, 0o700)
            run_sync(_execute(POSTGRES_URL, f"CREATE TABLESPACE \"{space}\" LOCATION '{disk}'"))
            try:
                run_sync(_execute(POSTGRES_URL, f'ALTER DATABASE "{name}" SET TABLESPACE "{space}"'))
                yield disk
            finally:
                run_sync(
                    _execute(
                        POSTGRES_URL,
                        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',  # (the fixture's own drop: IF EXISTS)
                        f'DROP TABLESPACE IF EXISTS "{space}"',
                    )
                )
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()


@pytest.mark.parametrize("database_backend", ["postgres"], indirect=True)
def test_served_submit_on_a_full_postgres_disk_answers_503_database_full_and_stores_nothing(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    with (
        database_on_a_tmpfs(url) as disk,
        server(tmp_path / "served", url, tmp_path / "rules", AUTOTRAIN_GIT="false") as app,
    ):
        assert_served_backend(app.log())
        app.http.post("/autotrain/feedback", json=WEATHER_FEEDBACK, headers=ADMIN_HEADERS).raise_for_status()
        app.settle()
        stored = 1
        with disk_filled(disk):
            for _ in range(MAX_SUBMISSIONS):
                response = app.http.post("/autotrain/feedback", json=BIG_FEEDBACK, headers=ADMIN_HEADERS)
                if response.status_code != 201:
                    break
                stored += 1
            assert_full(response)  # not a 500: the full disk said as such, to be retried
            assert "full" in response.json()["error"]["message"]
            for _ in range(3):  # the table still cannot grow: the same answer again
                assert_full(app.http.post("/autotrain/feedback", json=BIG_FEEDBACK, headers=ADMIN_HEADERS))
            # reads and the health check still answer on a full disk; the refused ones stored nothing
            assert app.http.get("/healthz").status_code == 200
            assert app.feedback_total() == stored
            assert app.http.get("/autotrain/status", headers=ADMIN_HEADERS).status_code == 200
        # room again: the same request goes through
        retried = app.http.post("/autotrain/feedback", json=BIG_FEEDBACK, headers=ADMIN_HEADERS)
        assert retried.status_code == 201, retried.text
        assert app.feedback_total() == stored + 1
        assert app.process.poll() is None
        app.assert_clean_log()
    print(f"{stored - 1} big submissions fitted in the pages there before the table had to grow")
