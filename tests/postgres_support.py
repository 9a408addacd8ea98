"""A fresh PostgreSQL database per test, on the server AUTOTRAIN_TEST_POSTGRES_URL names (tests/services.py reads
it at collection): `CREATE DATABASE autotrain_test_<random>`, its URL, and `DROP DATABASE` after."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.services import ENVIRONMENT

POSTGRES_URL = ENVIRONMENT.get("AUTOTRAIN_TEST_POSTGRES_URL")


def database_url(server_url: str, name: str) -> str:
    """The server's URL with another database in its path (user, password, host and query kept)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def fresh_database(server_url: str | None = None) -> AsyncIterator[str]:
    """A new, empty database for one test; dropped afterwards, connections still open to it included."""
    server_url = server_url or POSTGRES_URL
    if not server_url:
        raise RuntimeError("AUTOTRAIN_TEST_POSTGRES_URL is not set")
    name = f"autotrain_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_url(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _create(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def _drop(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.contextmanager
def fresh_database_sync(server_url: str) -> Iterator[str]:
    """`fresh_database` for a synchronous fixture: each step in an event loop of its own, in a thread (a
    suspended async generator would be finalized, its database dropped, when its loop closes)."""
    name = f"autotrain_test_{uuid.uuid4().hex[:16]}"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _create(server_url, name)).result()
        try:
            yield database_url(server_url, name)
        finally:
            pool.submit(asyncio.run, _drop(server_url, name)).result()
