"""Deployments: begun (the rule moves, a pending row), completed once the file is written, or aborted;
the chatbot's reload result; the git commit of each change, and its push to the git remote."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from autotrain.models import Deployment, NewEvent, RuleStatus
from autotrain.pagination import Cursor, Order
from autotrain.ports import NewDeployment, Page, ReloadResult
from storage.sqlite.connection import SqliteConnection, ts
from storage.sqlite.events import insert_event, release_held_events
from storage.sqlite.figures import figures
from storage.sqlite.queries import audit, count, deployment_in, deployment_row, keyset, paged, rule_in, where
from storage.sqlite.rules import STAMPS, move_rule


class DeploymentMixin(SqliteConnection):
    async def begin_deployment(
        self, new: NewDeployment, *, expected: RuleStatus, target: RuleStatus, now: datetime
    ) -> int | None:
        async with self._tx() as db:
            cursor = await db.execute(
                "SELECT 1 FROM deployments WHERE rule_id = ? AND state = 'pending'", (new.rule_id,)
            )
            if await cursor.fetchone():
                return None
            detail = {"outcome": new.outcome.value, "version_before": new.version_before}
            if not await move_rule(db, new.rule_id, expected, target, new.deployed_by, now, detail=detail):
                return None
            cursor = await db.execute(
                "INSERT INTO deployments (rule_id, module_name, deployed_by, deployed_at, version_before,"
                " version_after, rollback_of, outcome, state, previous_status, change, rollout_percent)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (
                    new.rule_id,
                    new.module_name,
                    new.deployed_by,
                    ts(now),
                    new.version_before,
                    new.version_after,
                    new.rollback_of,
                    new.outcome.value,
                    expected.value,
                    json.dumps(new.change, ensure_ascii=False),
                    new.rollout_percent,
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    async def complete_deployment(
        self, deployment_id: int, *, backup_path: str | None, now: datetime, event: NewEvent | None = None
    ) -> Deployment:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE deployments SET state = 'applied', backup_path = COALESCE(?, backup_path)"
                " WHERE id = ? AND state = 'pending'",
                (backup_path, deployment_id),
            )
            applied_now = cursor.rowcount == 1
            deployment = await deployment_in(db, deployment_id)
            assert deployment is not None
            # the rule's rollout follows its file: 100 or a canary share while deployed, none once rolled back
            await db.execute(
                "UPDATE generated_rules SET rollout_percent = ? WHERE rule_id = ?",
                (None if deployment.rollback_of else deployment.rollout_percent, deployment.rule_id),
            )
            await audit(
                db,
                now=now,
                actor=deployment.deployed_by,
                action="rollback_applied" if deployment.rollback_of else "deployment_applied",
                subject_id=deployment.rule_id,
                detail={
                    "deployment_id": deployment_id,
                    "module_name": deployment.module_name,
                    "outcome": deployment.outcome.value,
                    "version_before": deployment.version_before,
                    "version_after": deployment.version_after,
                },
            )
            if event is not None and applied_now:  # a second completion of the same row records nothing more
                rule = await rule_in(db, deployment.rule_id)
                assert rule is not None
                await insert_event(db, event, rule, now=now, deployment_id=deployment_id)
            return deployment

    async def abort_deployment(self, deployment_id: int, *, error: str, actor_id: str, now: datetime) -> None:
        async with self._tx() as db:
            cursor = await db.execute(
                "SELECT rule_id, previous_status, rollback_of FROM deployments WHERE id = ? AND state = 'pending'",
                (deployment_id,),
            )
            row = await cursor.fetchone()
            if row is None:
                return
            rule_id, previous_status, rollback_of = row[0], row[1], row[2]
            cursor = await db.execute("SELECT status FROM generated_rules WHERE rule_id = ?", (rule_id,))
            current = (await cursor.fetchone())[0]
            await db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))
            # Put the rule back as it was; the stamps of the failed step are cleared.
            stamp_by, stamp_at = STAMPS[RuleStatus(current)]
            await db.execute(
                f"UPDATE generated_rules SET status = ?, {stamp_by} = NULL, {stamp_at} = NULL, updated_at = ?"
                " WHERE rule_id = ?",
                (previous_status, ts(now), rule_id),
            )
            await audit(
                db,
                now=now,
                actor=actor_id,
                action="rollback_failed" if rollback_of else "deploy_failed",
                subject_id=rule_id,
                from_state=current,
                to_state=previous_status,
                detail={"deployment_id": deployment_id, "error": error[:2000]},
            )

    async def record_reload(self, deployment_id: int, result: ReloadResult, *, now: datetime) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET reload_status = ?, reload_error = ? WHERE id = ?",
                (result.status, result.error, deployment_id),
            )
            if result.status == "failed":
                cursor = await db.execute("SELECT rule_id FROM deployments WHERE id = ?", (deployment_id,))
                row = await cursor.fetchone()
                await audit(
                    db,
                    now=now,
                    actor="system",
                    action="reload_failed",
                    subject_id=row[0] if row else str(deployment_id),
                    detail={"deployment_id": deployment_id, "error": result.error},
                )
            await release_held_events(db, deployment_id, now=now)

    async def set_deployment_commit(self, deployment_id: int, commit_sha: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET commit_sha = ?, commit_error = NULL WHERE id = ?", (commit_sha, deployment_id)
            )

    async def set_deployment_commit_error(self, deployment_id: int, error: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET commit_error = ? WHERE id = ? AND commit_sha IS NULL", (error, deployment_id)
            )

    async def get_deployment(self, deployment_id: int) -> Deployment | None:
        async with self._read() as db:
            return await deployment_in(db, deployment_id)

    async def active_deployment_for_rule(self, rule_id: str) -> Deployment | None:
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT * FROM deployments WHERE rule_id = ? AND state = 'applied' AND rollback_of IS NULL"
                " ORDER BY id DESC LIMIT 1",
                (rule_id,),
            )
            row = await cursor.fetchone()
            return deployment_row(row) if row else None

    async def pending_deployments(self) -> list[Deployment]:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM deployments WHERE state = 'pending' ORDER BY id")
            return [deployment_row(row) for row in await cursor.fetchall()]

    async def deployments_without_commit(self, module_name: str) -> list[Deployment]:
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT * FROM deployments WHERE module_name = :module AND state = 'applied'"
                " AND commit_sha IS NULL AND version_after != version_before"
                " AND id > COALESCE((SELECT MAX(id) FROM deployments WHERE module_name = :module"
                " AND commit_sha IS NOT NULL), 0) ORDER BY id",
                {"module": module_name},
            )
            return [deployment_row(row) for row in await cursor.fetchall()]

    async def unpushed_deployments(self) -> list[Deployment]:
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT * FROM deployments WHERE commit_sha IS NOT NULL AND pushed_at IS NULL ORDER BY id"
            )
            return [deployment_row(row) for row in await cursor.fetchall()]

    async def set_deployments_pushed(self, deployment_ids: Sequence[int], now: datetime) -> None:
        async with self._tx() as db:
            for chunk in _chunks(deployment_ids):
                await db.execute(
                    "UPDATE deployments SET pushed_at = COALESCE(pushed_at, ?), push_error = NULL"
                    f" WHERE id IN ({', '.join('?' * len(chunk))})",
                    (ts(now), *chunk),
                )

    async def set_deployments_push_error(self, deployment_ids: Sequence[int], error: str) -> None:
        async with self._tx() as db:
            for chunk in _chunks(deployment_ids):
                await db.execute(
                    "UPDATE deployments SET push_error = ?"
                    f" WHERE pushed_at IS NULL AND id IN ({', '.join('?' * len(chunk))})",
                    (error, *chunk),
                )

    async def list_deployments(
        self, *, rule_id: str | None, limit: int, offset: int, cursor: Cursor | None = None
    ) -> Page[Deployment]:
        condition, args = where(("rule_id", rule_id))
        condition = f"{condition} {'AND' if condition else 'WHERE'} state = 'applied'"
        tail, tail_args = keyset("id", condition, args, cursor=cursor, order=Order.NEWEST, limit=limit, offset=offset)
        async with self._read() as db:
            if rule_id is None:
                total = (await figures(db, "deployment|")).deployments(state="applied")
            else:
                total = await count(db, f"SELECT COUNT(*) FROM deployments {condition}", args)
            found = await db.execute(f"SELECT * FROM deployments {tail}", tail_args)
            rows = await found.fetchall()
        return paged(
            [deployment_row(row) for row in rows],
            [row["id"] for row in rows],
            total=total,
            limit=limit,
            offset=offset,
            order=Order.NEWEST,
        )


def _chunks(ids: Sequence[int], size: int = 500) -> list[list[int]]:
    """A long list of ids in pieces, each well under SQLite's limit of bound variables."""
    unique = sorted(set(ids))
    return [unique[i : i + size] for i in range(0, len(unique), size)]
