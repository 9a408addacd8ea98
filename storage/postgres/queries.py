"""Helpers the PostgreSQL role modules share (storage/sqlite/queries.py, in PostgreSQL's dialect): the audit
row, filters numbered `$n`, keyset pages, counts, the maintained figures, and rows turned into models."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from autotrain.models import Deployment, Feedback, Rule
from autotrain.pagination import Cursor, Order
from storage.figures import Figures
from storage.postgres.connection import ts
from storage.rows import deployment_row as deployment_row  # re-exported: the mixins import them here
from storage.rows import feedback_row as feedback_row
from storage.rows import paged as paged
from storage.rows import rule_row as rule_row

FEEDBACK_SELECT = """
    SELECT f.*, COALESCE(r.rule_id, rf.rule_id) AS rule_id FROM feedbacks f
    LEFT JOIN generated_rules r ON r.feedback_id = f.feedback_id
    LEFT JOIN rule_feedbacks rf ON rf.feedback_id = f.feedback_id
"""

AUDIT_INSERT = (
    "INSERT INTO audit_log (at, actor, action, subject_id, from_state, to_state, detail)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


def audit_values(
    *,
    now: datetime,
    actor: str,
    action: str,
    subject_id: str,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """The parameters of AUDIT_INSERT for one audit row."""
    encoded = json.dumps(detail, ensure_ascii=False) if detail else None
    return (ts(now), actor, action, subject_id, from_state, to_state, encoded)


async def audit(
    db: asyncpg.Connection,
    *,
    now: datetime,
    actor: str,
    action: str,
    subject_id: str,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    values = audit_values(
        now=now,
        actor=actor,
        action=action,
        subject_id=subject_id,
        from_state=from_state,
        to_state=to_state,
        detail=detail,
    )
    await db.execute(AUDIT_INSERT, *values)


class AuditTrail:
    """Audit rows a transaction writes last, in the order they were added (`add`, then `write`).

    Every audit row bumps the `audit` counter of the maintained figures, a row every writer shares and holds
    until commit; a transaction that took it before another counter (a rule's, a feedback's) could deadlock with
    one that took that counter first and waits for `audit`. Written last, it is never held while waiting."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def add(
        self,
        *,
        now: datetime,
        actor: str,
        action: str,
        subject_id: str,
        from_state: str | None = None,
        to_state: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.rows.append(
            audit_values(
                now=now,
                actor=actor,
                action=action,
                subject_id=subject_id,
                from_state=from_state,
                to_state=to_state,
                detail=detail,
            )
        )

    async def write(self, db: asyncpg.Connection) -> None:
        if self.rows:
            await db.executemany(AUDIT_INSERT, self.rows)
            self.rows = []


def where(*conditions: tuple[str, Any], start: int = 1) -> tuple[str, tuple[Any, ...]]:
    """`WHERE a = $1 AND b = $2` of the conditions whose value is not None (numbered from `start`)."""
    parts: list[str] = []
    args: list[Any] = []
    for column, value in conditions:
        if value is not None:
            args.append(value.value if hasattr(value, "value") else value)
            parts.append(f"{column} = ${start + len(args) - 1}")
    return ("WHERE " + " AND ".join(parts)) if parts else "", tuple(args)


def keyset(
    column: str, condition: str, args: tuple[Any, ...], *, cursor: Cursor | None, order: Order, limit: int, offset: int
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE / ORDER BY / LIMIT of one page, ordered by the row number `column`; one row more than the
    page, so that the caller knows whether there is a next one (`paged`). `condition` uses $1..$len(args)."""
    newest = order is Order.NEWEST
    if cursor is not None:
        condition = f"{condition} {'AND' if condition else 'WHERE'} {column} {'<' if newest else '>'} ${len(args) + 1}"
        args = (*args, cursor.position)
    n = len(args)
    return (
        f"{condition} ORDER BY {column}{' DESC' if newest else ''} LIMIT ${n + 1} OFFSET ${n + 2}",
        (*args, limit + 1, offset),
    )


async def count(db: asyncpg.Connection, sql: str, args: tuple[Any, ...] = ()) -> int:
    value = await db.fetchval(sql, *args)
    return int(value or 0)


async def grouped(db: asyncpg.Connection, sql: str, args: tuple[Any, ...] = ()) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in await db.fetch(sql, *args)}


async def figures(db: asyncpg.Connection, prefix: str = "") -> Figures:
    """Every maintained figure (a few dozen rows), or those whose name starts with `prefix` (starts_with, not a
    range of text: a range would follow the database's collation, which may not be bytewise)."""
    if prefix:
        rows = await db.fetch("SELECT name, n FROM figures WHERE starts_with(name, $1)", prefix)
    else:
        rows = await db.fetch("SELECT name, n FROM figures")
    return Figures.of({row[0]: int(row[1]) for row in rows})


async def feedback_in(db: asyncpg.Connection, feedback_id: str) -> Feedback | None:
    row = await db.fetchrow(FEEDBACK_SELECT + " WHERE f.feedback_id = $1", feedback_id)
    return feedback_row(row) if row else None


async def rule_in(db: asyncpg.Connection, rule_id: str, *, lock: bool = False) -> Rule | None:
    """The rule; with `lock`, its row locked for the rest of the transaction (FOR NO KEY UPDATE: a change that
    reads the rule before writing it sees the latest committed version, and no other change of it meanwhile)."""
    row = await db.fetchrow(
        "SELECT * FROM generated_rules WHERE rule_id = $1" + (" FOR NO KEY UPDATE" if lock else ""), rule_id
    )
    return rule_row(row) if row else None


async def deployment_in(db: asyncpg.Connection, deployment_id: int) -> Deployment | None:
    row = await db.fetchrow("SELECT * FROM deployments WHERE id = $1", deployment_id)
    return deployment_row(row) if row else None
