"""The event outbox: rule events recorded by the state change itself, claimed with a lease, delivered in
order per rule.

A state change given an event inserts it in its own transaction, so an event exists exactly when the change
happened, even if the process dies right after. Dispatchers in several processes claim ready events with a
lease; one that dies leaves its claims to expire and be claimed again (delivery is at least once, receivers
deduplicate on the event id).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import aiosqlite

from autotrain.models import NewEvent, OutboxEvent, Rule
from autotrain.ports import EVENT_HOLD_SECONDS
from storage.sqlite.connection import SqliteConnection, ts
from storage.sqlite.queries import count

# Claimable: undelivered, ready (no longer held) and not under a live claim. An event also waits while an
# earlier undelivered event of its rule is not claimable (held, or claimed by another dispatcher), so that
# a rule's events go out in order; earlier claimable ones have smaller ids, hence are in the same batch.
_CLAIM = """
    SELECT * FROM events e
    WHERE e.delivered_at IS NULL AND e.ready_at <= :now AND (e.claimed_until IS NULL OR e.claimed_until < :now)
      AND NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.rule_id = e.rule_id AND p.id < e.id AND p.delivered_at IS NULL
          AND NOT (p.ready_at <= :now AND (p.claimed_until IS NULL OR p.claimed_until < :now))
      )
    ORDER BY e.id LIMIT :limit
"""


async def insert_event(
    db: aiosqlite.Connection, event: NewEvent, rule: Rule, *, now: datetime, deployment_id: int | None = None
) -> int:
    """In the caller's transaction, with `rule` as it is after the change."""
    ready_at = now + timedelta(seconds=EVENT_HOLD_SECONDS) if event.held else now
    cursor = await db.execute(
        "INSERT INTO events (kind, rule_id, actor_id, deployment_id, rule_snapshot, created_at, ready_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (event.kind.value, rule.rule_id, event.actor_id, deployment_id, rule.model_dump_json(), ts(now), ts(ready_at)),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def release_held_events(db: aiosqlite.Connection, deployment_id: int, *, now: datetime) -> None:
    """The deployment's reload result is known: its held events may go now."""
    await db.execute(
        "UPDATE events SET ready_at = ? WHERE deployment_id = ? AND delivered_at IS NULL AND ready_at > ?",
        (ts(now), deployment_id, ts(now)),
    )


class EventMixin(SqliteConnection):
    async def claim_events(self, *, holder: str, now: datetime, lease_seconds: float, limit: int) -> list[OutboxEvent]:
        async with self._tx() as db:
            cursor = await db.execute(_CLAIM, {"now": ts(now), "limit": limit})
            rows = await cursor.fetchall()
            until = ts(now + timedelta(seconds=lease_seconds))
            events = []
            for row in rows:
                await db.execute(
                    "UPDATE events SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1 WHERE id = ?",
                    (holder, until, row["id"]),
                )
                events.append(
                    OutboxEvent(
                        event_id=row["id"],
                        kind=row["kind"],
                        rule=Rule.model_validate_json(row["rule_snapshot"]),
                        actor_id=row["actor_id"],
                        deployment_id=row["deployment_id"],
                        created_at=row["created_at"],
                        attempts=row["attempts"] + 1,
                    )
                )
            return events

    async def event_delivered(self, event_id: int, *, holder: str, now: datetime) -> bool:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE events SET delivered_at = ?, claimed_until = NULL"
                " WHERE id = ? AND claimed_by = ? AND delivered_at IS NULL",
                (ts(now), event_id, holder),
            )
            return cursor.rowcount == 1

    async def undelivered_event_count(self) -> int:
        async with self._read() as db:
            return await count(db, "SELECT COUNT(*) FROM events WHERE delivered_at IS NULL", ())
