"""The store contract suite's fixtures: each backend of autotrain.ports.Store, on a real, fresh database.

`store` is one connection; `store_backend.connect()` opens another to the same database (another process).
Both backends, always: PostgreSQL on the server AUTOTRAIN_TEST_POSTGRES_URL names (each test gets a database of
its own there, tests/postgres_support.py); without one, its tests are skipped and the run says so (CI fails
instead: tests/services.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from autotrain.ports import Store
from storage.sqlite import SqliteStore
from tests.postgres_support import fresh_database
from tests.services import service_url

BACKENDS = ["sqlite", "postgres"]


@dataclass(frozen=True)
class StoreBackend:
    name: str
    connect: Callable[[], Awaitable[Store]]


def _new_store(backend: str, place: Path | str) -> Store:
    """A store (not open) on the test's database: a folder for SQLite, a database URL for PostgreSQL."""
    if backend == "sqlite":
        assert isinstance(place, Path)
        return SqliteStore(place / "contract.db")
    if backend == "postgres":
        from storage.postgres import PostgresStore  # asyncpg only where PostgreSQL is tested

        assert isinstance(place, str)
        return PostgresStore(place)
    raise ValueError(f"unknown store backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    opened: list[Store] = []
    async with contextlib.AsyncExitStack() as stack:
        place: Path | str = tmp_path
        if request.param == "postgres":
            server = service_url("PostgreSQL", "AUTOTRAIN_TEST_POSTGRES_URL", request)
            place = await stack.enter_async_context(fresh_database(server))

        async def connect() -> Store:
            store = _new_store(request.param, place)
            await store.open()
            opened.append(store)
            return store

        yield StoreBackend(request.param, connect)
        for store in opened:
            await store.close()


@pytest.fixture
async def store(store_backend: StoreBackend) -> Store:
    return await store_backend.connect()
