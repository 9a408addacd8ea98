"""The generation log: every attempt's model, tokens, latency and outcome (cost, and the error rate)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from autotrain.models import GenerationInfo, GenerationTotals
from storage.postgres.connection import PostgresConnection, ts
from storage.postgres.queries import figures


async def insert_generation(
    db: asyncpg.Connection,
    feedback_id: str,
    info: GenerationInfo,
    *,
    outcome: str,
    now: datetime,
    error: str | None = None,
    rule_id: str | None = None,
) -> None:
    """In the caller's transaction (create_rule logs its success with the rule)."""
    await db.execute(
        "INSERT INTO generations (feedback_id, rule_id, generator, model, outcome, error, input_tokens,"
        " output_tokens, latency_ms, attempts, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        feedback_id,
        rule_id,
        info.generator,
        info.model,
        outcome,
        error[:2000] if error else None,
        info.input_tokens,
        info.output_tokens,
        info.latency_ms,
        info.attempts,
        ts(now),
    )


class GenerationMixin(PostgresConnection):
    async def record_generation(
        self,
        feedback_id: str,
        info: GenerationInfo,
        *,
        outcome: str,
        now: datetime,
        error: str | None = None,
        rule_id: str | None = None,
    ) -> None:
        async with self._tx() as db:
            await insert_generation(db, feedback_id, info, outcome=outcome, now=now, error=error, rule_id=rule_id)

    async def generation_totals(self, *, since: datetime | None = None) -> GenerationTotals:
        if since is None:  # all time: the maintained figures
            async with self._read() as db:
                maintained = await figures(db, "generation")
            counted = [maintained.get(f"generation|{outcome}") for outcome in ("succeeded", "failed", "declined")]
            sums = [maintained.get(f"generation_{name}") for name in ("tokens|input", "tokens|output", "latency|sum")]
            timed = maintained.get("generation_latency|n")
            row: tuple[Any, ...] = (sum(counted), *counted, *sums[:2], sums[2] / timed if timed else None)
        else:
            async with self._read() as db:
                found = await db.fetchrow(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE outcome = 'succeeded'),"
                    " COUNT(*) FILTER (WHERE outcome = 'failed'), COUNT(*) FILTER (WHERE outcome = 'declined'),"
                    " SUM(input_tokens), SUM(output_tokens), AVG(latency_ms)::float8 FROM generations WHERE at >= $1",
                    ts(since),
                )
            assert found is not None
            row = tuple(found)
        attempts, succeeded, failed, declined = (int(row[i] or 0) for i in range(4))
        return GenerationTotals(
            attempts=attempts,
            succeeded=succeeded,
            failed=failed,
            declined=declined,
            error_rate=round(failed / attempts, 4) if attempts else 0.0,
            input_tokens=int(row[4] or 0),
            output_tokens=int(row[5] or 0),
            average_latency_ms=round(row[6]) if row[6] is not None else None,
        )
