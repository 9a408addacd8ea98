"""Helpers of the reliability tests that run on both backends (`pytest.mark.both_backends`): which backend the
running test has, and a look at its database from outside the processes under test (sqlite3 on the SQLite file,
asyncpg on PostgreSQL), for what no API answers (a lease's expiry, a pending deployment, the stored versions);
and a deploy stopped after its first steps, as a process killed there leaves it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import sqlite3
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from autotrain.models import RuleStatus
from autotrain.ports import NewDeployment
from autotrain.rulefiles import JsonRuleDocument, content_version
from bot.runtime import Runtime
from tests.conftest import ADMIN, approved_rule
from tests.services import current_postgres

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\$\d+")


def on_postgres() -> bool:
    """The running test's database is a fresh PostgreSQL one (a `both_backends` test's postgres run)."""
    return current_postgres[0] is not None


def database_url(tmp_path: Path, name: str = "autotrain.db") -> str:
    """The URL `autotrain serve` processes of this test share: its PostgreSQL database, or a SQLite file."""
    return current_postgres[0] or f"sqlite:///{tmp_path / name}"


def assert_served_backend(log: str) -> None:
    """An `autotrain serve` log names the running test's backend (its start-up line), so a PostgreSQL run cannot
    pass on a SQLite file by mistake."""
    expected = "database: PostgreSQL at" if on_postgres() else "(SQLite, WAL"
    assert expected in log, f"the server's log does not say {expected!r}:\n{log}"


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from synchronous code, also while this thread's event loop runs (a thread)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a query (written with $1, $2 … placeholders) on the database `url` names, read from outside the
    processes under test: read-only on a SQLite file (WAL: it never blocks them), one connection on PostgreSQL."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")

        def read() -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
                return db.execute(_PLACEHOLDER.sub("?", query), params).fetchall()

        return await asyncio.to_thread(read)
    db = await asyncpg.connect(url)
    try:
        return [tuple(record) for record in await db.fetch(query, *params)]
    finally:
        await db.close()


def rows_sync(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return run_sync(rows(url, query, *params))


@dataclass(frozen=True)
class StoredVersion:
    number: int
    content: bytes
    deployment_id: int | None


async def stored_versions(url: str, module_name: str) -> list[StoredVersion]:
    """Every version of a rule file stored in PostgreSQL (the rule files' truth there), oldest first."""
    found = await rows(
        url,
        "SELECT version, content, deployment_id FROM rule_file_versions WHERE module_name = $1 ORDER BY version",
        module_name,
    )
    return [StoredVersion(int(number), bytes(content), deployment_id) for number, content, deployment_id in found]


def assert_whole_json_rule_file(content: bytes, label: str) -> list[str]:
    """A complete rule file the project's parser accepts, holding no rule line twice; its lines."""
    lines = JsonRuleDocument.parse(content).rule_lines()
    twice = [line for line, n in Counter(lines).items() if n > 1]
    assert not twice, f"{label}: rule lines held more than once ({content_version(content)}): {twice}"
    return list(lines)


async def interrupted_deploy(runtime: Runtime, *, write_file: bool = False) -> tuple[str, int]:
    """The first steps of a deploy of a new approved rule, by the store itself — the pending row (the rule moved
    to deployed), the file written or not — and no more, as a process killed just after them leaves it: the
    rule's id and the pending deployment's."""
    rule = await approved_rule(runtime.service)
    previous, document = runtime.rule_files.read(rule.module_name)
    change = document.apply(new_rule=rule.new_rule, old_rule=rule.old_rule, entry={"rule_id": rule.rule_id})
    deployment_id = await runtime.store.begin_deployment(
        NewDeployment(
            rule_id=rule.rule_id,
            module_name=rule.module_name,
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
    if write_file:
        runtime.rule_files.write(rule.module_name, change.content, previous, rule.rule_id)
    return rule.rule_id, deployment_id
