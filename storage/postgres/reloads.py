"""The chatbot reload calls that failed, retried with backoff (the newest change of each file only: the
chatbot needs the current version, not every version on the way). storage/sqlite/reloads.py in PostgreSQL's
dialect."""

from __future__ import annotations

from datetime import datetime

from autotrain.models import Deployment
from autotrain.ports import ReloadResult
from storage.postgres.connection import PostgresConnection, ts
from storage.postgres.queries import deployment_row

# the deployment d is the newest applied one that changed its file: only the file's later deployments are looked
# at (ix_deployments_module), not every deployment of every file
_NEWEST = (
    "d.state = 'applied' AND d.version_after != d.version_before AND NOT EXISTS (SELECT 1 FROM deployments n"
    " WHERE n.module_name = d.module_name AND n.state = 'applied' AND n.id > d.id"
    " AND n.version_after != n.version_before)"
)


class ReloadMixin(PostgresConnection):
    async def schedule_reload_retry(self, deployment_id: int, *, attempts: int, retry_at: datetime | None) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET reload_attempts = $1, reload_retry_at = $2 WHERE id = $3",
                attempts,
                ts(retry_at) if retry_at else None,
                deployment_id,
            )

    async def reloads_due(self, *, now: datetime) -> list[Deployment]:
        """Failed reloads due for a retry; those a newer change of their file has superseded are left out."""
        async with self._read() as db:  # a read: the job polls it, and an idle poll must not take a write lock
            rows = await db.fetch(
                "SELECT * FROM deployments d WHERE d.reload_retry_at IS NOT NULL AND d.reload_retry_at <= $1"
                f" AND {_NEWEST} ORDER BY d.id",
                ts(now),
            )
            return [deployment_row(row) for row in rows]

    async def reload_retried(
        self, deployment_id: int, result: ReloadResult, *, attempts: int, retry_at: datetime | None
    ) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET reload_status = $1, reload_error = $2, reload_attempts = $3,"
                " reload_retry_at = $4 WHERE id = $5",
                result.status,
                result.error,
                attempts,
                ts(retry_at) if retry_at else None,
                deployment_id,
            )

    async def failing_reloads(self, *, min_attempts: int) -> list[Deployment]:
        """The newest change of each file whose reload keeps failing (at least `min_attempts` calls)."""
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT * FROM deployments d WHERE d.reload_status = 'failed' AND d.reload_attempts >= $1"
                f" AND {_NEWEST} ORDER BY d.id",
                min_attempts,
            )
            return [deployment_row(row) for row in rows]
