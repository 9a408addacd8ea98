"""The event outbox: rule events recorded by the state change itself, claimed with a lease, delivered in
order per rule.

A state change given an event inserts it in its own transaction, so an event exists exactly when the change
happened, even if the process dies right after. Dispatchers in several instances claim ready events with a
lease; one that dies leaves its claims to expire and be claimed again (delivery is at least once, receivers
deduplicate on the event id).

What SQLite gets from one writer at a time, PostgreSQL gets from two locks:
- `insert_event` takes the rule's row lock (FOR NO KEY UPDATE, a no-op when the change already holds it)
  before its id is drawn, so a rule's events are committed in id order: a claim that sees an event of a rule
  sees every earlier one of it.
- claims take a transaction-level advisory lock (`CLAIM_LOCK`), one claim at a time across instances. Not
  `FOR UPDATE SKIP LOCKED`: a claim skipping events another claim holds but has not committed would see them
  as claimable (not yet claimed) and hand out a later event of the same rule, out of order. A claim is one
  SELECT and one UPDATE, so they queue for milliseconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from autotrain.models import NewEvent, OutboxEvent, Rule
from autotrain.ports import EVENT_HOLD_SECONDS
from storage.postgres.connection import PostgresConnection, ts
from storage.postgres.queries import count

# pg_advisory_xact_lock's key for claim_events ("autotrain.events" in ASCII, in a bigint): other advisory
# locks of Auto-Train must use other keys
CLAIM_LOCK = 0x6175_746F_6576_7473

# Claimable: undelivered, ready (no longer held) and not under a live claim. An event also waits while an
# earlier undelivered event of its rule is not claimable (held, or claimed by another dispatcher), so that
# a rule's events go out in order; earlier claimable ones have smaller ids, hence are in the same batch.
# The UPDATE checks the row again as committed: one a dispatcher marked delivered meanwhile is not claimed.
_CLAIM = """
    WITH claimable AS (
        SELECT e.id FROM events e
        WHERE e.delivered_at IS NULL AND e.ready_at <= $1 AND (e.claimed_until IS NULL OR e.claimed_until < $1)
          AND NOT EXISTS (
            SELECT 1 FROM events p
            WHERE p.rule_id = e.rule_id AND p.id < e.id AND p.delivered_at IS NULL
              AND NOT (p.ready_at <= $1 AND (p.claimed_until IS NULL OR p.claimed_until < $1))
          )
        ORDER BY e.id LIMIT $2
    )
    UPDATE events SET claimed_by = $3, claimed_until = $4, attempts = attempts + 1
    FROM claimable
    WHERE events.id = claimable.id
      AND events.delivered_at IS NULL AND (events.claimed_until IS NULL OR events.claimed_until < $1)
    RETURNING events.*
"""


async def insert_event(
    db: asyncpg.Connection, event: NewEvent, rule: Rule, *, now: datetime, deployment_id: int | None = None
) -> int:
    """In the caller's transaction, with `rule` as it is after the change."""
    await db.execute("SELECT 1 FROM generated_rules WHERE rule_id = $1 FOR NO KEY UPDATE", rule.rule_id)
    ready_at = now + timedelta(seconds=EVENT_HOLD_SECONDS) if event.held else now
    event_id = await db.fetchval(
        "INSERT INTO events (kind, rule_id, actor_id, deployment_id, rule_snapshot, created_at, ready_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        event.kind.value,
        rule.rule_id,
        event.actor_id,
        deployment_id,
        rule.model_dump_json(),
        ts(now),
        ts(ready_at),
    )
    assert event_id is not None
    return int(event_id)


async def release_held_events(db: asyncpg.Connection, deployment_id: int, *, now: datetime) -> None:
    """The deployment's reload result is known: its held events may go now."""
    await db.execute(
        "UPDATE events SET ready_at = $1 WHERE deployment_id = $2 AND delivered_at IS NULL AND ready_at > $1",
        ts(now),
        deployment_id,
    )


class EventMixin(PostgresConnection):
    async def claim_events(self, *, holder: str, now: datetime, lease_seconds: float, limit: int) -> list[OutboxEvent]:
        async with self._tx() as db:
            await db.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            rows = await db.fetch(_CLAIM, ts(now), limit, holder, ts(now + timedelta(seconds=lease_seconds)))
        return [
            OutboxEvent(
                event_id=row["id"],
                kind=row["kind"],
                rule=Rule.model_validate_json(row["rule_snapshot"]),
                actor_id=row["actor_id"],
                deployment_id=row["deployment_id"],
                created_at=row["created_at"],
                attempts=row["attempts"],
            )
            for row in sorted(rows, key=lambda row: row["id"])
        ]

    async def event_delivered(self, event_id: int, *, holder: str, now: datetime) -> bool:
        async with self._tx() as db:
            delivered = await db.fetchval(
                "UPDATE events SET delivered_at = $1, claimed_until = NULL"
                " WHERE id = $2 AND claimed_by = $3 AND delivered_at IS NULL RETURNING 1",
                ts(now),
                event_id,
                holder,
            )
            return delivered is not None

    async def undelivered_event_count(self) -> int:
        async with self._read() as db:
            return await count(db, "SELECT COUNT(*) FROM events WHERE delivered_at IS NULL")
