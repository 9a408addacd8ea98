"""Alert state, leases and digest runs: what keeps several instances from alerting or posting twice.

Each is one statement, atomic on its own in PostgreSQL: the alert state a compare-and-set on its version
(`UPDATE … WHERE version = $n`, or an insert that only the first of two racing instances makes), a lease an
upsert that takes the row over only from its own holder or once expired, a digest run an insert that only one
instance makes. Concurrent ones on one row wait for each other's commit and then see its result (READ
COMMITTED re-checks the WHERE of an UPDATE, and of ON CONFLICT DO UPDATE, on the row as committed).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from autotrain.monitoring import AlertState
from storage.postgres.connection import PostgresConnection, ts


class AlertStateMixin(PostgresConnection):
    async def get_alert_state(self, name: str) -> AlertState | None:
        async with self._read() as db:
            row = await db.fetchrow("SELECT * FROM alert_state WHERE name = $1", name)
        if row is None:
            return None
        return AlertState.model_validate({**dict(row), "active": bool(row["active"])})

    async def save_alert_state(self, state: AlertState, *, expected_version: int) -> bool:
        values = (
            int(state.active),
            ts(state.since) if state.since else None,
            ts(state.last_notified_at) if state.last_notified_at else None,
            state.last_value,
            state.version,
        )
        async with self._tx() as db:
            if expected_version == 0:
                saved = await db.fetchval(
                    "INSERT INTO alert_state (name, active, since, last_notified_at, last_value, version)"
                    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING 1",
                    state.name,
                    *values,
                )
            else:
                saved = await db.fetchval(
                    "UPDATE alert_state SET active = $1, since = $2, last_notified_at = $3, last_value = $4,"
                    " version = $5 WHERE name = $6 AND version = $7 RETURNING 1",
                    *values,
                    state.name,
                    expected_version,
                )
            return saved is not None

    async def acquire_lease(self, name: str, *, holder: str, now: datetime, ttl_seconds: float) -> bool:
        expires = ts(now + timedelta(seconds=ttl_seconds))
        async with self._tx() as db:
            taken = await db.fetchval(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE leases.holder = excluded.holder OR leases.expires_at < $4 RETURNING 1",
                name,
                holder,
                expires,
                ts(now),
            )
            return taken is not None

    async def claim_digest(self, key: str, *, now: datetime) -> bool:
        async with self._tx() as db:
            claimed = await db.fetchval(
                "INSERT INTO digest_runs (run_key, posted_at) VALUES ($1, $2) ON CONFLICT (run_key) DO NOTHING"
                " RETURNING 1",
                key,
                ts(now),
            )
            return claimed is not None
