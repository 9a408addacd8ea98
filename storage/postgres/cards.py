"""Review cards: where each rule's card lives in Slack, and the claim that makes it posted once.

storage/sqlite/cards.py in PostgreSQL's dialect: the claim is one upsert (a concurrent claim of the same card
waits for it, then finds the card claimed and claims nothing).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from autotrain.models import ReviewCard
from storage.postgres.connection import PostgresConnection, rowcount, ts


class ReviewCardMixin(PostgresConnection):
    async def claim_card(
        self, rule_id: str, *, channel: str, now: datetime, posting_lease_seconds: float
    ) -> int | None:
        lease_expired = ts(now - timedelta(seconds=posting_lease_seconds))
        async with self._tx() as db:
            attempts = await db.fetchval(
                "INSERT INTO review_cards (rule_id, channel, state, attempts, updated_at)"
                " VALUES ($1, $2, 'posting', 1, $3)"
                " ON CONFLICT (rule_id) DO UPDATE SET state = 'posting', attempts = review_cards.attempts + 1,"
                " channel = excluded.channel, updated_at = excluded.updated_at"
                " WHERE review_cards.state = 'failed'"
                " OR (review_cards.state = 'posting' AND review_cards.updated_at < $4)"
                " RETURNING attempts",
                rule_id,
                channel,
                ts(now),
                lease_expired,
            )
            return int(attempts) if attempts is not None else None

    async def card_posted(self, rule_id: str, *, attempt: int, channel: str, message_ts: str, now: datetime) -> bool:
        async with self._tx() as db:
            status = await db.execute(
                "UPDATE review_cards SET state = 'posted', channel = $1, message_ts = $2, last_error = NULL,"
                " updated_at = $3 WHERE rule_id = $4 AND attempts = $5",
                channel,
                message_ts,
                ts(now),
                rule_id,
                attempt,
            )
            return rowcount(status) == 1

    async def card_failed(self, rule_id: str, *, attempt: int, error: str, now: datetime) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE review_cards SET state = 'failed', last_error = $1, updated_at = $2"
                " WHERE rule_id = $3 AND attempts = $4 AND state = 'posting'",
                error[:1000],
                ts(now),
                rule_id,
                attempt,
            )

    async def get_card(self, rule_id: str) -> ReviewCard | None:
        async with self._read() as db:
            row = await db.fetchrow("SELECT * FROM review_cards WHERE rule_id = $1", rule_id)
            return ReviewCard.model_validate(dict(row)) if row else None

    async def rules_without_card(
        self, *, now: datetime, retry_after_seconds: float, posting_lease_seconds: float, limit: int
    ) -> list[str]:
        retry_due = ts(now - timedelta(seconds=retry_after_seconds))
        lease_expired = ts(now - timedelta(seconds=posting_lease_seconds))
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT r.rule_id FROM generated_rules r LEFT JOIN review_cards c ON c.rule_id = r.rule_id"
                " WHERE r.status IN ('pending', 'approved')"
                " AND (c.rule_id IS NULL OR (c.state = 'failed' AND c.updated_at < $1)"
                " OR (c.state = 'posting' AND c.updated_at < $2))"
                " ORDER BY r.id LIMIT $3",
                retry_due,
                lease_expired,
                limit,
            )
            return [row[0] for row in rows]
