"""The connections of a process, its transactions, and the schema migrations run at open.

One writing connection per process; an asyncio lock keeps each transaction whole (coroutines share the
connection), and `BEGIN IMMEDIATE` with a busy timeout serialises writers across processes. Every state
change checks the current state inside its transaction (`UPDATE ... WHERE status = ?`). Commits are
durable (`synchronous = FULL`: a change acknowledged is on disk, power loss included).

Reads go to their own connections (READERS of them, WAL lets them read while the writer writes), so a
/metrics scrape or a deep list never waits for a submission's commit, nor a submission for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import aiosqlite

from autotrain.errors import StoreBusy, StoreFull
from storage.migrations import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("storage.sqlite")
T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
READERS = 2  # read connections (each with its own thread); the machine has two cores
SQLITE_FULL = 13  # sqlite3.SQLITE_FULL; its extended codes keep 13 in the low byte


def ts(value: datetime) -> str:
    """UTC, always with microseconds, so that stored times sort as text."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def busy(exc: sqlite3.Error) -> Exception:
    """A locked or full database is a clear, retryable error; any other operational error stays what it is."""
    if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_FULL or "database or disk is full" in str(exc):
        return StoreFull(f"the database cannot grow (disk full or size limit reached); nothing was changed ({exc})")
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreBusy(f"the database is busy (locked by another process); try again shortly ({exc})")
    return exc


def statements(script: str) -> list[str]:
    """The statements of a migration, in order (a trigger's body, with its own semicolons, stays whole)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    found, pending = [], ""
    for piece in "\n".join(lines).split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                found.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        found.append(pending.strip())
    return found


async def _rollback(db: aiosqlite.Connection) -> None:
    # SQLite may have rolled back already (some errors end the transaction; a BEGIN that failed began none)
    with contextlib.suppress(sqlite3.OperationalError):
        await db.execute("ROLLBACK")


class _Group:
    """One group commit: the SQLite transaction several `_tx` blocks share, and its outcome."""

    def __init__(self) -> None:
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False  # its commit is queued
        self.closed = False  # committed, or abandoned (no block may join it)


class SqliteConnection:
    """The base every role mixin of SqliteStore shares: one connection, one lock, `_tx` and `_read`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._readers: asyncio.LifoQueue[aiosqlite.Connection] | None = None
        self._reader_list: list[aiosqlite.Connection] = []
        self._group: _Group | None = None
        self._commits: set[asyncio.Task[None]] = set()

    def _busy_timeout_ms(self) -> int:
        return BUSY_TIMEOUT_MS

    async def open(self) -> None:
        timeout_ms = self._busy_timeout_ms()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None, timeout=timeout_ms / 1000)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute(f"PRAGMA busy_timeout = {timeout_ms}")
        await self._use_wal(timeout_ms / 1000)
        await self._db.execute("PRAGMA synchronous = FULL")
        await self._db.execute("PRAGMA foreign_keys = ON")
        await self._migrate()
        self._readers = asyncio.LifoQueue()
        for _ in range(READERS):
            reader = await aiosqlite.connect(self.path, isolation_level=None, timeout=timeout_ms / 1000)
            reader.row_factory = aiosqlite.Row
            await reader.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            await reader.execute("PRAGMA query_only = ON")
            self._reader_list.append(reader)
            self._readers.put_nowait(reader)

    async def _use_wal(self, timeout_seconds: float) -> None:
        """Switch the file to WAL (persistent: a file already in WAL needs nothing). The switch takes an
        exclusive lock without waiting on the busy timeout, so a second instance starting at the same moment
        retries it instead of exiting with "database is locked"."""
        db = self._connection()
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        delay = 0.01
        while True:
            cursor = await db.execute("PRAGMA journal_mode")
            row = await cursor.fetchone()
            if row is not None and str(row[0]).lower() == "wal":
                return
            try:
                await db.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                    raise busy(exc) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def close(self) -> None:
        while self._commits:  # what was written is committed first
            await asyncio.wait(list(self._commits))
        for reader in self._reader_list:
            await reader.close()
        self._reader_list, self._readers = [], None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def schema_version(self) -> int:
        async with self._read() as db:
            cursor = await db.execute("PRAGMA user_version")
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        async with self._tx() as db:
            cursor = await db.execute("PRAGMA user_version")
            row = await cursor.fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database {self.path} has schema version {current}, newer than this Auto-Train "
                    f"({SCHEMA_VERSION}); upgrade Auto-Train"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in statements(MIGRATIONS[version - 1]):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version}")
        # one line for the whole run, once its transaction is committed (a new file runs every migration)
        if current == 0:
            log.info("database created at schema version %d", SCHEMA_VERSION)
        elif current < SCHEMA_VERSION:
            log.info("database migrated from schema version %d to %d", current, SCHEMA_VERSION)

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, durable when the block has exited. Concurrent ones are group-committed:
        each runs alone under the lock, in a savepoint of one SQLite transaction (BEGIN IMMEDIATE: the write
        lock from the start, so a compare-and-set read and its write cannot interleave with another process),
        and the writers that were waiting for the lock meanwhile join it; one COMMIT (one fsync) makes them
        all durable, and each returns only then. A block that raises rolls back to its savepoint: the others
        are not touched."""
        db = self._connection()
        async with self._lock:
            group = await self._group_of(db)
            await self._in_group(db, group, "SAVEPOINT tx")
            try:
                yield db
            except BaseException as exc:
                await self._undo(db, group)
                self._close_group_soon(group)
                if isinstance(exc, sqlite3.OperationalError):
                    raise busy(exc) from exc
                raise
            await self._in_group(db, group, "RELEASE tx")
            self._close_group_soon(group)
        await asyncio.shield(group.committed)

    @contextlib.asynccontextmanager
    async def _batch(self) -> AsyncIterator[Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]]:
        """A write transaction (as `_tx`, group-committed) whose work is done in one hop to the writer's
        thread: `run(fn)` calls fn(sqlite3 connection) there, in a savepoint of the group (begun in the same
        hop when there is none). For hot paths (a batch of submissions) that would otherwise cost a hop per
        statement. fn may use savepoints of its own, never BEGIN or COMMIT."""
        db = self._connection()
        async with self._lock:
            group = self._group if self._group is not None and not self._group.closed else _Group()
            begin = group is not self._group

            def in_group(fn: Callable[[sqlite3.Connection], T], connection: sqlite3.Connection) -> T:
                if begin:
                    connection.execute("BEGIN IMMEDIATE")
                connection.execute("SAVEPOINT tx")
                try:
                    result = fn(connection)
                except BaseException:
                    connection.execute("ROLLBACK TO tx")
                    connection.execute("RELEASE tx")
                    raise
                connection.execute("RELEASE tx")
                return result

            async def run(fn: Callable[[sqlite3.Connection], T]) -> T:
                # aiosqlite runs every call of its own this way (Connection._execute: fn in the connection's thread)
                try:
                    return await db._execute(in_group, fn, db._conn)
                except BaseException as exc:
                    # drop the frames of fn: a statement that failed half way stays open (and the database
                    # cannot be checkpointed) for as long as a traceback holds its cursor
                    exc.with_traceback(None)
                    if not db._conn.in_transaction:  # SQLite ended it (a full disk): the group is lost
                        await self._abandon(db, group, exc)
                    if isinstance(exc, sqlite3.OperationalError):
                        raise busy(exc) from None
                    raise
                finally:
                    if begin and db._conn.in_transaction:
                        self._group = group

            try:
                yield run
            finally:
                if begin and self._group is not group:  # never begun (BEGIN failed): nothing to commit
                    group.closed = True
                    if not group.committed.done():
                        group.committed.set_exception(StoreBusy("the transaction did not begin"))
                        group.committed.exception()
                self._close_group_soon(group)
        await asyncio.shield(group.committed)

    async def _group_of(self, db: aiosqlite.Connection) -> _Group:
        """The open group commit, or a new one (its BEGIN IMMEDIATE)."""
        if self._group is not None and not self._group.closed:
            return self._group
        group = _Group()
        try:
            await db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise busy(exc) from exc
        except BaseException:
            # cancelled while BEGIN was queued: it still runs on the connection's thread, so undo it
            # (queued after it, before the lock is released), or the next transaction finds one open
            await _rollback(db)
            raise
        self._group = group
        return group

    async def _in_group(self, db: aiosqlite.Connection, group: _Group, statement: str) -> None:
        """A statement of the group's own (SAVEPOINT, RELEASE): if it fails, the group is lost with it."""
        try:
            await db.execute(statement)
        except BaseException as exc:
            await self._abandon(db, group, exc)
            if isinstance(exc, sqlite3.OperationalError):
                raise busy(exc) from exc
            raise

    async def _undo(self, db: aiosqlite.Connection, group: _Group) -> None:
        """Roll one block back to its savepoint; when SQLite ended the whole transaction (some errors do: a full
        disk, an I/O error), the group's other blocks are lost with it and told so."""
        try:
            await db.execute("ROLLBACK TO tx")
            await db.execute("RELEASE tx")
        except sqlite3.OperationalError as exc:
            await self._abandon(db, group, exc)

    async def _abandon(self, db: aiosqlite.Connection, group: _Group, exc: BaseException) -> None:
        await _rollback(db)
        group.closed = True
        if not group.committed.done():
            error = busy(exc) if isinstance(exc, sqlite3.OperationalError) else exc
            group.committed.set_exception(
                error if isinstance(error, Exception) else StoreBusy("the transaction was interrupted")
            )
            group.committed.exception()  # retrieved: a group whose blocks all failed already is not "unhandled"
        if self._group is group:
            self._group = None

    def _close_group_soon(self, group: _Group) -> None:
        """Commit the group once the writers queued for the lock now have joined it (the lock is FIFO: the
        commit queues behind them)."""
        if group.closing or group.closed:
            return
        group.closing = True
        task = asyncio.create_task(self._commit_group(group))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)

    async def _commit_group(self, group: _Group) -> None:
        db = self._connection()
        async with self._lock:
            if group.closed:
                return
            group.closed = True
            if self._group is group:
                self._group = None
            try:
                await db.execute("COMMIT")  # a commit once queued runs to its end: the change is made
            except BaseException as exc:
                await _rollback(db)
                group.committed.set_exception(
                    busy(exc) if isinstance(exc, sqlite3.OperationalError) else StoreBusy(str(exc))
                )
                group.committed.exception()
                if not isinstance(exc, Exception):
                    raise
                return
            group.committed.set_result(None)

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read connection of its own: what committed transactions wrote, never waiting for the writer."""
        self._connection()
        if self._readers is None:  # during open (migrations): the writer reads
            async with self._lock:
                yield self._connection()
            return
        reader = await self._readers.get()
        try:
            yield reader
        except sqlite3.OperationalError as exc:
            raise busy(exc) from exc
        finally:
            self._readers.put_nowait(reader)

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db
