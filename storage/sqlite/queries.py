"""Helpers the role modules share: the audit row, filters and counts, and rows turned into models."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import aiosqlite

from autotrain.models import Deployment, Feedback, Rule
from autotrain.pagination import Cursor, Order
from storage.rows import deployment_row as deployment_row  # re-exported: the mixins import them here
from storage.rows import feedback_row as feedback_row
from storage.rows import paged as paged
from storage.rows import rule_row as rule_row
from storage.sqlite.connection import ts

FEEDBACK_SELECT = """
    SELECT f.*, COALESCE(r.rule_id, rf.rule_id) AS rule_id FROM feedbacks f
    LEFT JOIN generated_rules r ON r.feedback_id = f.feedback_id
    LEFT JOIN rule_feedbacks rf ON rf.feedback_id = f.feedback_id
"""


AUDIT_INSERT = (
    "INSERT INTO audit_log (at, actor, action, subject_id, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
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
    db: aiosqlite.Connection,
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
    await db.execute(AUDIT_INSERT, values)


def where(*conditions: tuple[str, Any]) -> tuple[str, tuple[Any, ...]]:
    parts, args = [], []
    for column, value in conditions:
        if value is not None:
            parts.append(f"{column} = ?")
            args.append(value.value if hasattr(value, "value") else value)
    return ("WHERE " + " AND ".join(parts)) if parts else "", tuple(args)


def keyset(
    column: str, condition: str, args: tuple[Any, ...], *, cursor: Cursor | None, order: Order, limit: int, offset: int
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE / ORDER BY / LIMIT of one page, ordered by the row number `column`; one row more than the
    page, so that the caller knows whether there is a next one (`paged`)."""
    newest = order is Order.NEWEST
    if cursor is not None:
        condition = f"{condition} {'AND' if condition else 'WHERE'} {column} {'<' if newest else '>'} ?"
        args = (*args, cursor.position)
    return (
        f"{condition} ORDER BY {column}{' DESC' if newest else ''} LIMIT ? OFFSET ?",
        (*args, limit + 1, offset),
    )


async def count(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...]) -> int:
    cursor = await db.execute(sql, args)
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def grouped(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...] = ()) -> dict[str, int]:
    cursor = await db.execute(sql, args)
    return {row[0]: int(row[1]) for row in await cursor.fetchall()}


async def feedback_in(db: aiosqlite.Connection, feedback_id: str) -> Feedback | None:
    cursor = await db.execute(FEEDBACK_SELECT + " WHERE f.feedback_id = ?", (feedback_id,))
    row = await cursor.fetchone()
    return feedback_row(row) if row else None


async def rule_in(db: aiosqlite.Connection, rule_id: str) -> Rule | None:
    cursor = await db.execute("SELECT * FROM generated_rules WHERE rule_id = ?", (rule_id,))
    row = await cursor.fetchone()
    return rule_row(row) if row else None


async def deployment_in(db: aiosqlite.Connection, deployment_id: int) -> Deployment | None:
    cursor = await db.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
    row = await cursor.fetchone()
    return deployment_row(row) if row else None
