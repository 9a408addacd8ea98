"""Review cards: where each rule's card lives in Slack, and the claim that makes it posted once."""

from __future__ import annotations

from datetime import datetime, timedelta

from autotrain.models import ReviewCard
from storage.sqlite.connection import SqliteConnection, ts


class ReviewCardMixin(SqliteConnection):
    async def claim_card(
        self, rule_id: str, *, channel: str, now: datetime, posting_lease_seconds: float
    ) -> int | None:
        lease_expired = ts(now - timedelta(seconds=posting_lease_seconds))
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO review_cards (rule_id, channel, state, attempts, updated_at)"
                " VALUES (?, ?, 'posting', 1, ?)"
                " ON CONFLICT (rule_id) DO UPDATE SET state = 'posting', attempts = attempts + 1,"
                " channel = excluded.channel, updated_at = excluded.updated_at"
                " WHERE review_cards.state = 'failed'"
                " OR (review_cards.state = 'posting' AND review_cards.updated_at < ?)",
                (rule_id, channel, ts(now), lease_expired),
            )
            if cursor.rowcount != 1:
                return None
            cursor = await db.execute("SELECT attempts FROM review_cards WHERE rule_id = ?", (rule_id,))
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

    async def card_posted(self, rule_id: str, *, attempt: int, channel: str, message_ts: str, now: datetime) -> bool:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE review_cards SET state = 'posted', channel = ?, message_ts = ?, last_error = NULL,"
                " updated_at = ? WHERE rule_id = ? AND attempts = ?",
                (channel, message_ts, ts(now), rule_id, attempt),
            )
            return cursor.rowcount == 1

    async def card_failed(self, rule_id: str, *, attempt: int, error: str, now: datetime) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE review_cards SET state = 'failed', last_error = ?, updated_at = ?"
                " WHERE rule_id = ? AND attempts = ? AND state = 'posting'",
                (error[:1000], ts(now), rule_id, attempt),
            )

    async def get_card(self, rule_id: str) -> ReviewCard | None:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM review_cards WHERE rule_id = ?", (rule_id,))
            row = await cursor.fetchone()
            return ReviewCard.model_validate(dict(row)) if row else None

    async def rules_without_card(
        self, *, now: datetime, retry_after_seconds: float, posting_lease_seconds: float, limit: int
    ) -> list[str]:
        retry_due = ts(now - timedelta(seconds=retry_after_seconds))
        lease_expired = ts(now - timedelta(seconds=posting_lease_seconds))
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT r.rule_id FROM generated_rules r LEFT JOIN review_cards c ON c.rule_id = r.rule_id"
                " WHERE r.status IN ('pending', 'approved')"
                " AND (c.rule_id IS NULL OR (c.state = 'failed' AND c.updated_at < ?)"
                " OR (c.state = 'posting' AND c.updated_at < ?))"
                " ORDER BY r.id LIMIT ?",
                (retry_due, lease_expired, limit),
            )
            return [row[0] for row in await cursor.fetchall()]
