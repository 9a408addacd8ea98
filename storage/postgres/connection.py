"""The connections of a process to PostgreSQL (one asyncpg pool), its transactions, and the migrations run at open.

Every write is one transaction (`_tx`, READ COMMITTED) on a pooled connection: each state change checks the
current state in its own statement (`UPDATE … WHERE id = $1 AND status = $2 RETURNING …`: the row lock makes
the second writer re-check the row the first one committed, so exactly one wins), and an exclusive claim is the
same. Commits are durable (the server's `synchronous_commit`, on by default). A deadlock, a serialization
failure, a lock or statement timeout, or a server out of connections surfaces as `StoreBusy` (retryable); a full
disk as `StoreFull`. Reads (`_read`) take a pooled connection without an explicit transaction: each statement
sees what was committed when it started.

Migrations (`schema.py`) run at open in one transaction under `pg_advisory_xact_lock`, so instances starting
together never race: the first migrates, the others then find the schema current.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from autotrain.errors import StoreBusy, StoreFull
from storage.postgres.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("storage.postgres")

LOCK_TIMEOUT_MS = 10_000  # as SQLite's busy timeout: a row lock waited for longer is StoreBusy
POOL_MIN = 1
POOL_MAX = 10
MIGRATION_LOCK = 0x4155544F545241  # pg_advisory_xact_lock key of the migrations ("AUTOTRA")

# errors worth a retry: the transaction lost a race or waited too long, nothing was changed
_BUSY = (
    asyncpg.DeadlockDetectedError,  # 40P01
    asyncpg.SerializationError,  # 40001
    asyncpg.LockNotAvailableError,  # 55P03 (lock_timeout)
    asyncpg.QueryCanceledError,  # 57014 (statement_timeout)
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.CannotConnectNowError,  # 57P03 (starting up, shutting down)
)


def ts(value: datetime) -> datetime:
    """What to pass for a TIMESTAMPTZ parameter: aware, in UTC (a naive time is taken as UTC, as SQLite's ts)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def busy(exc: BaseException) -> BaseException:
    """A transaction that lost a race or timed out is a clear, retryable error; a full disk says so; any other
    error stays what it is."""
    if isinstance(exc, asyncpg.DiskFullError):
        return StoreFull(f"the database cannot grow (disk full); nothing was changed ({exc})")
    if isinstance(exc, _BUSY):
        return StoreBusy(f"the database is busy (a lock or a concurrent change); try again shortly ({exc})")
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError | asyncpg.PostgresConnectionError | OSError):
        # the connection was lost (a server restart, a network cut): retryable like a lock
        return StoreBusy(f"the database connection was lost; try again shortly ({exc})")
    return exc


def rowcount(status: str) -> int:
    """The rows a statement changed, from asyncpg's `execute()` status ("UPDATE 1", "INSERT 0 3", "DELETE 0")."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresConnection:
    """The base every role mixin of PostgresStore shares: the pool, `_tx` and `_read`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    def _lock_timeout_ms(self) -> int:
        return LOCK_TIMEOUT_MS

    async def open(self) -> None:
        settings = {
            "timezone": "UTC",
            "lock_timeout": str(self._lock_timeout_ms()),
            "application_name": "autotrain",
        }
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=POOL_MIN, max_size=POOL_MAX, server_settings=settings
            )
        except (asyncpg.PostgresError, OSError) as exc:
            raise busy(exc) from exc
        try:
            await self._migrate()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def schema_version(self) -> int:
        async with self._read() as db:
            return await _current_version(db)

    async def _migrate(self) -> None:
        async with self._tx() as db:
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            current = await _current_version(db)
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database {_safe(self.url)} has schema version {current}, newer than this Auto-Train "
                    f"({SCHEMA_VERSION}); upgrade Auto-Train"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await db.execute(MIGRATIONS[version - 1])  # a script: the simple query protocol runs it whole
                await db.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        # one line for the whole run, once its transaction is committed
        if current == 0:
            log.info("database created at schema version %d", SCHEMA_VERSION)
        elif current < SCHEMA_VERSION:
            log.info("database migrated from schema version %d to %d", current, SCHEMA_VERSION)

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction (READ COMMITTED), committed when the block exits (durable then), rolled back if it
        raises. A deadlock, serialization failure or lock timeout surfaces as StoreBusy."""
        pool = self._connection()
        try:
            async with pool.acquire() as db, db.transaction():
                yield db
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            error = busy(exc)
            if error is exc:
                raise
            raise error from exc

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for reads, no explicit transaction: each statement sees what was committed."""
        pool = self._connection()
        try:
            async with pool.acquire() as db:
                yield db
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            error = busy(exc)
            if error is exc:
                raise
            raise error from exc

    @contextlib.asynccontextmanager
    async def _session_lock(self, key: int, name: str) -> AsyncIterator[None]:
        """A session advisory lock (`key`, hashtext(`name`)) on a pooled connection kept for the block: for work
        of several transactions (a deploy, a git commit). The server drops it with the connection, so a killed
        instance never leaves it held; a wait longer than the pool's lock_timeout is StoreBusy."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                db = await stack.enter_async_context(self._connection().acquire())
                await db.execute("SELECT pg_advisory_lock($1, hashtext($2))", key, name)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                error = busy(exc)
                if error is exc:
                    raise
                raise error from exc
            try:
                yield
            finally:
                # (a connection gone with its lock needs no unlock; the pool's reset unlocks any left too)
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await db.execute("SELECT pg_advisory_unlock($1, hashtext($2))", key, name)

    def _connection(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool


async def _current_version(db: asyncpg.Connection) -> int:
    exists = await db.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await db.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


def _safe(url: str) -> str:
    """The URL without its password, for a message."""
    try:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "(the database)"


__all__ = ["PostgresConnection", "busy", "rowcount", "ts"]
