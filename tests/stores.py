"""The store contract suite's fixtures: each backend of autotrain.ports.Store, on a real, fresh database.

`store` is one connection; `store_backend.connect()` opens another to the same database (another process).
A new backend (PostgreSQL) is one more fixture parameter and one more branch in `_new_store`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from autotrain.ports import Store
from storage.sqlite import SqliteStore

BACKENDS = ["sqlite"]


@dataclass(frozen=True)
class StoreBackend:
    name: str
    connect: Callable[[], Awaitable[Store]]


def _new_store(backend: str, tmp_path: Path) -> Store:
    if backend == "sqlite":
        return SqliteStore(tmp_path / "contract.db")
    raise ValueError(f"unknown store backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    opened: list[Store] = []

    async def connect() -> Store:
        store = _new_store(request.param, tmp_path)
        await store.open()
        opened.append(store)
        return store

    yield StoreBackend(request.param, connect)
    for store in opened:
        await store.close()


@pytest.fixture
async def store(store_backend: StoreBackend) -> Store:
    return await store_backend.connect()
