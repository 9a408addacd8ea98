"""Deployments: begun (the rule moves, a pending row), completed once the file is written, or aborted;
the chatbot's reload result; the git commit of each change, and its push to the git remote.

storage/sqlite/deployments.py in PostgreSQL's dialect. Beginning or aborting a deployment locks the rule's
row first, so that the two (and the rule's other changes) follow one another for one rule, as SQLite's one
writer has them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from autotrain.models import Deployment, NewEvent, RuleStatus
from autotrain.pagination import Cursor, Order
from autotrain.ports import NewDeployment, Page, ReloadResult
from storage.postgres.connection import PostgresConnection, rowcount, ts
from storage.postgres.events import insert_event, release_held_events
from storage.postgres.queries import (
    AuditTrail,
    audit,
    count,
    deployment_in,
    deployment_row,
    figures,
    keyset,
    paged,
    rule_in,
    where,
)
from storage.postgres.rules import STAMPS, move_rule


class DeploymentMixin(PostgresConnection):
    async def begin_deployment(
        self, new: NewDeployment, *, expected: RuleStatus, target: RuleStatus, now: datetime
    ) -> int | None:
        async with self._tx() as db:
            # the rule's row first: a deployment of it begun meanwhile is committed (or abandoned) before we look
            await db.execute("SELECT 1 FROM generated_rules WHERE rule_id = $1 FOR NO KEY UPDATE", new.rule_id)
            if await db.fetchval("SELECT 1 FROM deployments WHERE rule_id = $1 AND state = 'pending'", new.rule_id):
                return None
            detail = {"outcome": new.outcome.value, "version_before": new.version_before}
            audits = AuditTrail()  # written last (storage/postgres/rules.py: the order of locks)
            if not await move_rule(
                db, new.rule_id, expected, target, new.deployed_by, now, detail=detail, audits=audits
            ):
                return None
            deployment_id = await db.fetchval(
                "INSERT INTO deployments (rule_id, module_name, deployed_by, deployed_at, version_before,"
                " version_after, rollback_of, outcome, state, previous_status, change, rollout_percent)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11) RETURNING id",
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
            )
            assert deployment_id is not None
            await audits.write(db)
            return int(deployment_id)

    async def complete_deployment(
        self, deployment_id: int, *, backup_path: str | None, now: datetime, event: NewEvent | None = None
    ) -> Deployment:
        async with self._tx() as db:
            # the rule's row first, as begin and abort take them (a completion racing an abort never deadlocks)
            await db.execute(
                "SELECT 1 FROM generated_rules WHERE rule_id = (SELECT rule_id FROM deployments WHERE id = $1)"
                " FOR NO KEY UPDATE",
                deployment_id,
            )
            return await complete_in(db, deployment_id, backup_path=backup_path, now=now, event=event)

    async def abort_deployment(self, deployment_id: int, *, error: str, actor_id: str, now: datetime) -> None:
        async with self._tx() as db:
            rule_id = await db.fetchval(
                "SELECT rule_id FROM deployments WHERE id = $1 AND state = 'pending'", deployment_id
            )
            if rule_id is None:
                return
            # the rule's row, then the deployment's (begin_deployment's order); then the rule's change before the
            # deployment's delete, the audit row last (their counters in the order of storage/postgres/rules.py)
            current = await db.fetchval(
                "SELECT status FROM generated_rules WHERE rule_id = $1 FOR NO KEY UPDATE", rule_id
            )
            row = await db.fetchrow(
                "SELECT previous_status, rollback_of FROM deployments WHERE id = $1 AND state = 'pending' FOR UPDATE",
                deployment_id,
            )
            if row is None:  # completed, or aborted by another instance, meanwhile
                return
            previous_status, rollback_of = row[0], row[1]
            # Put the rule back as it was; the stamps of the failed step are cleared.
            stamp_by, stamp_at = STAMPS[RuleStatus(current)]
            await db.execute(
                f"UPDATE generated_rules SET status = $1, {stamp_by} = NULL, {stamp_at} = NULL, updated_at = $2"
                " WHERE rule_id = $3",
                previous_status,
                ts(now),
                rule_id,
            )
            await db.execute("DELETE FROM deployments WHERE id = $1", deployment_id)
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
            rule_id = await db.fetchval(
                "UPDATE deployments SET reload_status = $1, reload_error = $2 WHERE id = $3 RETURNING rule_id",
                result.status,
                result.error,
                deployment_id,
            )
            await release_held_events(db, deployment_id, now=now)
            if result.status == "failed":  # the audit row last (storage/postgres/rules.py: the order of locks)
                await audit(
                    db,
                    now=now,
                    actor="system",
                    action="reload_failed",
                    subject_id=rule_id if rule_id is not None else str(deployment_id),
                    detail={"deployment_id": deployment_id, "error": result.error},
                )

    async def set_deployment_commit(self, deployment_id: int, commit_sha: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET commit_sha = $1, commit_error = NULL WHERE id = $2", commit_sha, deployment_id
            )

    async def set_deployment_commit_error(self, deployment_id: int, error: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET commit_error = $1 WHERE id = $2 AND commit_sha IS NULL", error, deployment_id
            )

    async def get_deployment(self, deployment_id: int) -> Deployment | None:
        async with self._read() as db:
            return await deployment_in(db, deployment_id)

    async def active_deployment_for_rule(self, rule_id: str) -> Deployment | None:
        async with self._read() as db:
            row = await db.fetchrow(
                "SELECT * FROM deployments WHERE rule_id = $1 AND state = 'applied' AND rollback_of IS NULL"
                " ORDER BY id DESC LIMIT 1",
                rule_id,
            )
            return deployment_row(row) if row else None

    async def pending_deployments(self) -> list[Deployment]:
        async with self._read() as db:
            rows = await db.fetch("SELECT * FROM deployments WHERE state = 'pending' ORDER BY id")
            return [deployment_row(row) for row in rows]

    async def deployments_without_commit(self, module_name: str) -> list[Deployment]:
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT * FROM deployments WHERE module_name = $1 AND state = 'applied'"
                " AND commit_sha IS NULL AND version_after != version_before"
                " AND id > COALESCE((SELECT MAX(id) FROM deployments WHERE module_name = $1"
                " AND commit_sha IS NOT NULL), 0) ORDER BY id",
                module_name,
            )
            return [deployment_row(row) for row in rows]

    async def unpushed_deployments(self) -> list[Deployment]:
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT * FROM deployments WHERE commit_sha IS NOT NULL AND pushed_at IS NULL ORDER BY id"
            )
            return [deployment_row(row) for row in rows]

    async def set_deployments_pushed(self, deployment_ids: Sequence[int], now: datetime) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET pushed_at = COALESCE(pushed_at, $1), push_error = NULL"
                " WHERE id = ANY($2::bigint[])",
                ts(now),
                _ids(deployment_ids),
            )

    async def set_deployments_push_error(self, deployment_ids: Sequence[int], error: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET push_error = $1 WHERE pushed_at IS NULL AND id = ANY($2::bigint[])",
                error,
                _ids(deployment_ids),
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
            rows = await db.fetch(f"SELECT * FROM deployments {tail}", *tail_args)
        return paged(
            [deployment_row(row) for row in rows],
            [row["id"] for row in rows],
            total=total,
            limit=limit,
            offset=offset,
            order=Order.NEWEST,
        )


async def complete_in(
    db: asyncpg.Connection,
    deployment_id: int,
    *,
    backup_path: str | None,
    now: datetime,
    event: NewEvent | None,
) -> Deployment:
    """DeploymentMixin.complete_deployment inside a transaction that holds the rule's row (rulefiles.py stores
    the file's version in the same one)."""
    status = await db.execute(
        "UPDATE deployments SET state = 'applied', backup_path = COALESCE($1, backup_path)"
        " WHERE id = $2 AND state = 'pending'",
        backup_path,
        deployment_id,
    )
    applied_now = rowcount(status) == 1
    deployment = await deployment_in(db, deployment_id)
    assert deployment is not None
    # the rule's rollout follows its file: 100 or a canary share while deployed, none once rolled back
    await db.execute(
        "UPDATE generated_rules SET rollout_percent = $1 WHERE rule_id = $2",
        None if deployment.rollback_of else deployment.rollout_percent,
        deployment.rule_id,
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


def _ids(ids: Sequence[int]) -> list[int]:
    """The ids as one array parameter (no limit of bound variables here, unlike SQLite's)."""
    return sorted({int(i) for i in ids})
