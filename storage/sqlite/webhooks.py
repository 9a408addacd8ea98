"""The webhook outbox: one delivery per event and URL, claimed when due, each attempt kept (the log)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from storage.sqlite.connection import SqliteConnection, ts


class WebhookMixin(SqliteConnection):
    async def enqueue_webhooks(
        self, *, event_id: str, event_type: str, payload: dict[str, Any], urls: tuple[str, ...], now: datetime
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        async with self._tx() as db:
            for url in urls:
                # an event delivered again (its dispatcher died before marking it) is not sent twice
                await db.execute(
                    "INSERT INTO webhook_deliveries (event_id, event_type, url, payload, state, next_attempt_at,"
                    " created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (event_id, url) DO NOTHING",
                    (event_id, event_type, url, body, ts(now), ts(now)),
                )

    async def due_webhooks(self, *, now: datetime, limit: int = 50, lease_seconds: float = 60) -> list[dict[str, Any]]:
        """Claim the deliveries due now: they are pushed `lease_seconds` ahead in the same transaction, so a
        second process does not send them too; one whose sender died is due again after the lease."""
        async with self._tx() as db:
            cursor = await db.execute(
                "SELECT * FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
                (ts(now), limit),
            )
            rows = [dict(row) for row in await cursor.fetchall()]
            lease = ts(now + timedelta(seconds=lease_seconds))
            for row in rows:
                await db.execute("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?", (lease, row["id"]))
            return rows

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
                "UPDATE webhook_deliveries SET attempts = attempts + 1, state = ?, last_status = ?, last_error = ?,"
                " next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = ? WHERE id = ?",
                (
                    state,
                    status,
                    error[:1000] if error else None,
                    ts(next_attempt_at) if next_attempt_at else None,
                    ts(now) if delivered else None,
                    delivery_id,
                ),
            )

    async def list_webhook_deliveries(self, *, limit: int = 100) -> list[dict[str, Any]]:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM webhook_deliveries ORDER BY id DESC LIMIT ?", (limit,))
            return [dict(row) for row in await cursor.fetchall()]
