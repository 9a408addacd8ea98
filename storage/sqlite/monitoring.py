"""Alert state, leases and digest runs: what keeps several processes from alerting or posting twice."""

from __future__ import annotations

from datetime import datetime, timedelta

from autotrain.monitoring import AlertState
from storage.sqlite.connection import SqliteConnection, ts


class AlertStateMixin(SqliteConnection):
    async def get_alert_state(self, name: str) -> AlertState | None:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM alert_state WHERE name = ?", (name,))
            row = await cursor.fetchone()
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
                cursor = await db.execute(
                    "INSERT INTO alert_state (name, active, since, last_notified_at, last_value, version)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                    (state.name, *values),
                )
            else:
                cursor = await db.execute(
                    "UPDATE alert_state SET active = ?, since = ?, last_notified_at = ?, last_value = ?, version = ?"
                    " WHERE name = ? AND version = ?",
                    (*values, state.name, expected_version),
                )
            return cursor.rowcount == 1

    async def acquire_lease(self, name: str, *, holder: str, now: datetime, ttl_seconds: float) -> bool:
        expires = ts(now + timedelta(seconds=ttl_seconds))
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
                (name, holder, expires, ts(now)),
            )
            return cursor.rowcount == 1

    async def claim_digest(self, key: str, *, now: datetime) -> bool:
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO digest_runs (run_key, posted_at) VALUES (?, ?) ON CONFLICT (run_key) DO NOTHING",
                (key, ts(now)),
            )
            return cursor.rowcount == 1
