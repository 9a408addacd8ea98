"""The webhook outbox: one delivery per event and URL, claimed when due, each attempt kept (the log).

A delivery is a dict of its row, as from SQLite: its times in the text SQLite stores (ISO 8601, UTC, with
microseconds), so that the notifier and the log read the same values from either backend.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from storage.postgres.connection import PostgresConnection, ts

# The due deliveries, locked: a second instance claiming at the same moment skips them (SKIP LOCKED) rather
# than waiting, and one that reaches a row once the first committed re-checks it and finds it pushed ahead.
# The rows are answered as they were read (before the push), as SQLite's claim does.
_CLAIM = """
    WITH due AS (
        SELECT * FROM webhook_deliveries
        WHERE state = 'pending' AND next_attempt_at <= $1
        ORDER BY id LIMIT $2
        FOR UPDATE SKIP LOCKED
    ), pushed AS (
        UPDATE webhook_deliveries w SET next_attempt_at = $3 FROM due WHERE w.id = due.id
    )
    SELECT * FROM due ORDER BY id
"""


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def _delivery(row: asyncpg.Record) -> dict[str, Any]:
    return {key: _text(value) for key, value in row.items()}


class WebhookMixin(PostgresConnection):
    async def enqueue_webhooks(
        self, *, event_id: str, event_type: str, payload: dict[str, Any], urls: tuple[str, ...], now: datetime
    ) -> None:
        if not urls:
            return
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        async with self._tx() as db:
            # an event delivered again (its dispatcher died before marking it) is not sent twice
            await db.executemany(
                "INSERT INTO webhook_deliveries (event_id, event_type, url, payload, state, next_attempt_at,"
                " created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6) ON CONFLICT (event_id, url) DO NOTHING",
                [(event_id, event_type, url, body, ts(now), ts(now)) for url in urls],
            )

    async def due_webhooks(self, *, now: datetime, limit: int = 50, lease_seconds: float = 60) -> list[dict[str, Any]]:
        """Claim the deliveries due now: they are pushed `lease_seconds` ahead in the same transaction, so a
        second process does not send them too; one whose sender died is due again after the lease."""
        async with self._tx() as db:
            rows = await db.fetch(_CLAIM, ts(now), limit, ts(now + timedelta(seconds=lease_seconds)))
        return [_delivery(row) for row in rows]

    async def webhook_attempted(
        self,
        delivery_id: int,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        state = "delivered" if delivered else ("pending" if next_attempt_at else "failed")
        async with self._tx() as db:
            await db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, state = $1, last_status = $2,"
                " last_error = $3, next_attempt_at = COALESCE($4, next_attempt_at), delivered_at = $5 WHERE id = $6",
                state,
                status,
                error[:1000] if error else None,
                ts(next_attempt_at) if next_attempt_at else None,
                ts(now) if delivered else None,
                delivery_id,
            )

    async def list_webhook_deliveries(self, *, limit: int = 100) -> list[dict[str, Any]]:
        async with self._read() as db:
            rows = await db.fetch("SELECT * FROM webhook_deliveries ORDER BY id DESC LIMIT $1", limit)
        return [_delivery(row) for row in rows]
