"""The embedded store: one SQLite file through aiosqlite.

One connection per process; an asyncio lock keeps each transaction whole (coroutines share the
connection), and `BEGIN IMMEDIATE` with a busy timeout serialises writers across processes. Every state
change checks the current state inside its transaction (`UPDATE ... WHERE status = ?`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from autotrain.errors import StoreBusy
from autotrain.models import (
    AuditEntry,
    Deployment,
    Feedback,
    FeedbackIn,
    FeedbackStatus,
    FeedbackType,
    GenerationInfo,
    GenerationTotals,
    ReviewCard,
    Rule,
    RuleProposal,
    RuleStatus,
    feedback_id_for,
    rule_id_for,
)
from autotrain.monitoring import AlertState
from autotrain.ports import NewDeployment, Page, ReloadResult
from storage.migrations import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000

# Columns set when a rule enters a state: who did it and when.
_STAMPS = {
    RuleStatus.APPROVED: ("approved_by", "approved_at"),
    RuleStatus.REJECTED: ("rejected_by", "rejected_at"),
    RuleStatus.DEPLOYED: ("deployed_by", "deployed_at"),
    RuleStatus.ROLLED_BACK: ("rolled_back_by", "rolled_back_at"),
}

_FEEDBACK_SELECT = """
    SELECT f.*, COALESCE(r.rule_id, rf.rule_id) AS rule_id FROM feedbacks f
    LEFT JOIN generated_rules r ON r.feedback_id = f.feedback_id
    LEFT JOIN rule_feedbacks rf ON rf.feedback_id = f.feedback_id
"""


def _ts(value: datetime) -> str:
    """UTC, always with microseconds, so that stored times sort as text."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class SqliteStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await self._db.execute("PRAGMA journal_mode = WAL")
        await self._db.execute("PRAGMA synchronous = NORMAL")
        await self._db.execute("PRAGMA foreign_keys = ON")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def schema_version(self) -> int:
        async with self._read() as db:
            cursor = await db.execute("PRAGMA user_version")
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        async with self._tx() as db:
            cursor = await db.execute("PRAGMA user_version")
            row = await cursor.fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database {self.path} has schema version {current}, newer than this Auto-Train "
                    f"({SCHEMA_VERSION}); upgrade Auto-Train"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _statements(MIGRATIONS[version - 1]):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version}")
                log.info("database migrated to schema version %d", version)

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        db = self._connection()
        async with self._lock:
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _busy(exc) from exc
            try:
                yield db
            except BaseException as exc:
                await db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise _busy(exc) from exc
                raise
            try:
                await db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                await db.execute("ROLLBACK")
                raise _busy(exc) from exc

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        db = self._connection()
        async with self._lock:
            try:
                yield db
            except sqlite3.OperationalError as exc:
                raise _busy(exc) from exc

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    @staticmethod
    async def _audit(
        db: aiosqlite.Connection,
        *,
        now: datetime,
        actor: str,
        action: str,
        subject_id: str,
        from_state: str | None = None,
        to_state: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await db.execute(
            "INSERT INTO audit_log (at, actor, action, subject_id, from_state, to_state, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _ts(now),
                actor,
                action,
                subject_id,
                from_state,
                to_state,
                json.dumps(detail, ensure_ascii=False) if detail else None,
            ),
        )

    # ------------------------------------------------------------------ feedback

    async def create_feedback(
        self,
        data: FeedbackIn,
        *,
        user_id: str,
        source: str,
        actor_id: str,
        now: datetime,
        flags: tuple[str, ...] = (),
        closed_because: str | None = None,
    ) -> Feedback:
        status = "rejected" if closed_because else "pending"
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO feedbacks (user_id, query, ai_response, feedback_text, feedback_type, status,"
                " source, metadata, flags, last_error, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    data.query,
                    data.ai_response,
                    data.feedback_text,
                    data.feedback_type.value,
                    status,
                    source,
                    json.dumps(data.metadata, ensure_ascii=False) if data.metadata is not None else None,
                    json.dumps(list(flags)),
                    closed_because,
                    _ts(now),
                    _ts(now),
                ),
            )
            row_id = cursor.lastrowid
            assert row_id is not None
            feedback_id = feedback_id_for(row_id)
            await db.execute("UPDATE feedbacks SET feedback_id = ? WHERE id = ?", (feedback_id, row_id))
            await self._audit(
                db,
                now=now,
                actor=actor_id,
                action="feedback_submitted",
                subject_id=feedback_id,
                to_state=status,
                detail={
                    "source": source,
                    "user_id": user_id,
                    "feedback_type": data.feedback_type.value,
                    **({"flags": list(flags), "closed_because": closed_because} if closed_because else {}),
                },
            )
            return await self._feedback_in(db, feedback_id)  # type: ignore[return-value]

    async def _feedback_in(self, db: aiosqlite.Connection, feedback_id: str) -> Feedback | None:
        cursor = await db.execute(_FEEDBACK_SELECT + " WHERE f.feedback_id = ?", (feedback_id,))
        row = await cursor.fetchone()
        return _feedback(row) if row else None

    async def get_feedback(self, feedback_id: str) -> Feedback | None:
        async with self._read() as db:
            return await self._feedback_in(db, feedback_id)

    async def list_feedback(
        self,
        *,
        status: FeedbackStatus | None,
        feedback_type: FeedbackType | None,
        limit: int,
        offset: int,
    ) -> Page[Feedback]:
        where, args = _where(("f.status", status), ("f.feedback_type", feedback_type))
        async with self._read() as db:
            total = await _count(db, f"SELECT COUNT(*) FROM feedbacks f {where}", args)
            cursor = await db.execute(
                f"{_FEEDBACK_SELECT} {where} ORDER BY f.id LIMIT ? OFFSET ?", (*args, limit, offset)
            )
            rows = await cursor.fetchall()
        return Page([_feedback(row) for row in rows], total, limit, offset)

    async def pending_feedback_ids(self) -> list[str]:
        async with self._read() as db:
            cursor = await db.execute("SELECT feedback_id FROM feedbacks WHERE status = 'pending' ORDER BY id")
            return [row[0] for row in await cursor.fetchall()]

    async def claim_feedback(self, feedback_id: str, *, now: datetime) -> bool:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE feedbacks SET status = 'processing', updated_at = ?"
                " WHERE feedback_id = ? AND status = 'pending'",
                (_ts(now), feedback_id),
            )
            if cursor.rowcount != 1:
                return False
            await self._audit(
                db,
                now=now,
                actor="system",
                action="generation_started",
                subject_id=feedback_id,
                from_state="pending",
                to_state="processing",
            )
            return True

    async def release_feedback(self, feedback_id: str, *, error: str, actor_id: str, now: datetime) -> None:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE feedbacks SET status = 'pending', error_count = error_count + 1, last_error = ?,"
                " updated_at = ? WHERE feedback_id = ? AND status = 'processing'",
                (error[:2000], _ts(now), feedback_id),
            )
            if cursor.rowcount == 1:
                await self._audit(
                    db,
                    now=now,
                    actor=actor_id,
                    action="generation_failed",
                    subject_id=feedback_id,
                    from_state="processing",
                    to_state="pending",
                    detail={"error": error[:2000]},
                )

    async def finish_feedback_without_rule(
        self,
        feedback_id: str,
        *,
        reason: str,
        actor_id: str,
        now: datetime,
        status: FeedbackStatus = FeedbackStatus.PROCESSED,
    ) -> bool:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE feedbacks SET status = ?, updated_at = ?, last_error = ?"
                " WHERE feedback_id = ? AND status = 'processing'",
                (status.value, _ts(now), None if status is FeedbackStatus.PROCESSED else reason[:2000], feedback_id),
            )
            if cursor.rowcount != 1:
                return False
            await self._audit(
                db,
                now=now,
                actor=actor_id,
                action="feedback_skipped",
                subject_id=feedback_id,
                from_state="processing",
                to_state=status.value,
                detail={"reason": reason},
            )
            return True

    async def requeue_interrupted_feedback(self, *, now: datetime) -> list[str]:
        async with self._tx() as db:
            cursor = await db.execute(
                "SELECT f.feedback_id FROM feedbacks f LEFT JOIN generated_rules r ON r.feedback_id = f.feedback_id"
                " WHERE f.status = 'processing' AND r.rule_id IS NULL"
            )
            ids = [row[0] for row in await cursor.fetchall()]
            for feedback_id in ids:
                await db.execute(
                    "UPDATE feedbacks SET status = 'pending', last_error = ?, updated_at = ? WHERE feedback_id = ?",
                    ("generation interrupted (the process stopped)", _ts(now), feedback_id),
                )
                await self._audit(
                    db,
                    now=now,
                    actor="system",
                    action="feedback_requeued",
                    subject_id=feedback_id,
                    from_state="processing",
                    to_state="pending",
                )
            return ids

    # ------------------------------------------------------------------ rules

    async def create_rule(
        self, feedback_id: str, proposal: RuleProposal, info: GenerationInfo, *, actor_id: str, now: datetime
    ) -> Rule:
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO generated_rules (feedback_id, module_name, rule_type, old_rule, new_rule, reasoning,"
                " confidence, status, warnings, generator, model, input_tokens, output_tokens, latency_ms,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    feedback_id,
                    proposal.module_name,
                    proposal.rule_type.value,
                    proposal.old_rule,
                    proposal.new_rule,
                    proposal.reasoning,
                    proposal.confidence,
                    json.dumps([w.value for w in proposal.warnings]),
                    info.generator,
                    info.model,
                    info.input_tokens,
                    info.output_tokens,
                    info.latency_ms,
                    _ts(now),
                    _ts(now),
                ),
            )
            row_id = cursor.lastrowid
            assert row_id is not None
            rule_id = rule_id_for(row_id)
            await db.execute("UPDATE generated_rules SET rule_id = ? WHERE id = ?", (rule_id, row_id))
            await db.execute(
                "UPDATE feedbacks SET status = 'processed', updated_at = ? WHERE feedback_id = ?",
                (_ts(now), feedback_id),
            )
            await self._audit(
                db,
                now=now,
                actor=actor_id,
                action="rule_created",
                subject_id=rule_id,
                to_state="pending",
                detail={"feedback_id": feedback_id, "generator": info.generator, "model": info.model},
            )
            await self._insert_generation(db, feedback_id, info, outcome="succeeded", now=now, rule_id=rule_id)
            await self._audit(
                db,
                now=now,
                actor=actor_id,
                action="feedback_processed",
                subject_id=feedback_id,
                from_state="processing",
                to_state="processed",
                detail={"rule_id": rule_id},
            )
            return await self._rule_in(db, rule_id)  # type: ignore[return-value]

    async def _rule_in(self, db: aiosqlite.Connection, rule_id: str) -> Rule | None:
        cursor = await db.execute("SELECT * FROM generated_rules WHERE rule_id = ?", (rule_id,))
        row = await cursor.fetchone()
        return _rule(row) if row else None

    async def get_rule(self, rule_id: str) -> Rule | None:
        async with self._read() as db:
            return await self._rule_in(db, rule_id)

    async def get_rule_for_feedback(self, feedback_id: str) -> Rule | None:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM generated_rules WHERE feedback_id = ?", (feedback_id,))
            row = await cursor.fetchone()
            return _rule(row) if row else None

    async def list_rules(
        self, *, status: RuleStatus | None, module_name: str | None, limit: int, offset: int
    ) -> Page[Rule]:
        where, args = _where(("status", status), ("module_name", module_name))
        async with self._read() as db:
            total = await _count(db, f"SELECT COUNT(*) FROM generated_rules {where}", args)
            cursor = await db.execute(
                f"SELECT * FROM generated_rules {where} ORDER BY id LIMIT ? OFFSET ?", (*args, limit, offset)
            )
            rows = await cursor.fetchall()
        return Page([_rule(row) for row in rows], total, limit, offset)

    async def transition_rule(
        self,
        rule_id: str,
        *,
        expected: RuleStatus,
        target: RuleStatus,
        actor_id: str,
        now: datetime,
        reason: str | None = None,
    ) -> Rule | None:
        async with self._tx() as db:
            if not await self._move_rule(db, rule_id, expected, target, actor_id, now, reason):
                return None
            if target is RuleStatus.REJECTED:
                # the feedback behind a rejected rule is closed too
                cursor = await db.execute(
                    "UPDATE feedbacks SET status = 'rejected', updated_at = ? WHERE feedback_id ="
                    " (SELECT feedback_id FROM generated_rules WHERE rule_id = ?) AND status = 'processed'",
                    (_ts(now), rule_id),
                )
                if cursor.rowcount:
                    rule = await self._rule_in(db, rule_id)
                    assert rule is not None
                    await self._audit(
                        db,
                        now=now,
                        actor=actor_id,
                        action="feedback_rejected",
                        subject_id=rule.feedback_id,
                        from_state="processed",
                        to_state="rejected",
                        detail={"rule_id": rule_id},
                    )
            return await self._rule_in(db, rule_id)

    async def _move_rule(
        self,
        db: aiosqlite.Connection,
        rule_id: str,
        expected: RuleStatus,
        target: RuleStatus,
        actor_id: str,
        now: datetime,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        by_column, at_column = _STAMPS[target]
        extra = ", reject_reason = ?" if target is RuleStatus.REJECTED else ""
        args: list[Any] = [target.value, actor_id, _ts(now), _ts(now)]
        if extra:
            args.append(reason)
        cursor = await db.execute(
            f"UPDATE generated_rules SET status = ?, {by_column} = ?, {at_column} = ?, updated_at = ?{extra}"
            " WHERE rule_id = ? AND status = ?",
            (*args, rule_id, expected.value),
        )
        if cursor.rowcount != 1:
            return False
        audit_detail = dict(detail or {})
        if reason:
            audit_detail["reason"] = reason
        await self._audit(
            db,
            now=now,
            actor=actor_id,
            action=f"rule_{target.value}",
            subject_id=rule_id,
            from_state=expected.value,
            to_state=target.value,
            detail=audit_detail or None,
        )
        return True

    async def edit_rule(self, rule_id: str, *, changes: dict[str, Any], actor_id: str, now: datetime) -> Rule | None:
        allowed = {"module_name", "old_rule", "new_rule", "warnings"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot edit {sorted(unknown)}")
        async with self._tx() as db:
            before = await self._rule_in(db, rule_id)
            if before is None or before.status is not RuleStatus.PENDING:
                return None
            values = {
                key: json.dumps([str(w) for w in value]) if key == "warnings" else value
                for key, value in changes.items()
            }
            assignments = ", ".join(f"{key} = ?" for key in values)
            await db.execute(
                f"UPDATE generated_rules SET {assignments}, edited_by = ?, edited_at = ?, updated_at = ?"
                " WHERE rule_id = ? AND status = 'pending'",
                (*values.values(), actor_id, _ts(now), _ts(now), rule_id),
            )
            await self._audit(
                db,
                now=now,
                actor=actor_id,
                action="rule_edited",
                subject_id=rule_id,
                from_state="pending",
                to_state="pending",
                detail={
                    "before": {k: getattr(before, k) for k in ("module_name", "old_rule", "new_rule")},
                    "after": {k: changes.get(k) for k in ("module_name", "old_rule", "new_rule")},
                },
            )
            return await self._rule_in(db, rule_id)

    async def attach_feedback(
        self, rule_id: str, feedback_ids: list[str], *, actor_id: str, now: datetime
    ) -> list[str]:
        """Answer more pending feedback with an existing rule (a cluster): each moves pending → processed, in
        one transaction; returns the ones attached (a feedback no longer pending is left alone)."""
        attached: list[str] = []
        async with self._tx() as db:
            for feedback_id in feedback_ids:
                cursor = await db.execute(
                    "UPDATE feedbacks SET status = 'processed', updated_at = ?"
                    " WHERE feedback_id = ? AND status = 'pending'",
                    (_ts(now), feedback_id),
                )
                if cursor.rowcount != 1:
                    continue
                await db.execute(
                    "INSERT INTO rule_feedbacks (rule_id, feedback_id) VALUES (?, ?)", (rule_id, feedback_id)
                )
                await self._audit(
                    db,
                    now=now,
                    actor=actor_id,
                    action="feedback_clustered",
                    subject_id=feedback_id,
                    from_state="pending",
                    to_state="processed",
                    detail={"rule_id": rule_id},
                )
                attached.append(feedback_id)
            if attached:
                await db.execute(
                    "UPDATE generated_rules SET cluster_size = cluster_size + ?, updated_at = ? WHERE rule_id = ?",
                    (len(attached), _ts(now), rule_id),
                )
        return attached

    async def cluster_feedback_texts(self, rule_id: str, limit: int = 5) -> list[str]:
        """The feedback texts a rule answers besides its own (run-all's cluster), oldest first."""
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT f.feedback_text FROM rule_feedbacks rf JOIN feedbacks f ON f.feedback_id = rf.feedback_id"
                " WHERE rf.rule_id = ? ORDER BY f.id LIMIT ?",
                (rule_id, limit),
            )
            return [row[0] for row in await cursor.fetchall()]

    async def set_deployment_commit(self, deployment_id: int, commit_sha: str) -> None:
        async with self._tx() as db:
            await db.execute("UPDATE deployments SET commit_sha = ? WHERE id = ?", (commit_sha, deployment_id))

    # ------------------------------------------------------------------ deployments

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
            if not await self._move_rule(db, new.rule_id, expected, target, new.deployed_by, now, detail=detail):
                return None
            cursor = await db.execute(
                "INSERT INTO deployments (rule_id, module_name, deployed_by, deployed_at, version_before,"
                " version_after, rollback_of, outcome, state, previous_status, change, rollout_percent)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (
                    new.rule_id,
                    new.module_name,
                    new.deployed_by,
                    _ts(now),
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

    async def complete_deployment(self, deployment_id: int, *, backup_path: str | None, now: datetime) -> Deployment:
        async with self._tx() as db:
            await db.execute(
                "UPDATE deployments SET state = 'applied', backup_path = COALESCE(?, backup_path)"
                " WHERE id = ? AND state = 'pending'",
                (backup_path, deployment_id),
            )
            deployment = await self._deployment_in(db, deployment_id)
            assert deployment is not None
            # the rule's rollout follows its file: 100 or a canary share while deployed, none once rolled back
            await db.execute(
                "UPDATE generated_rules SET rollout_percent = ? WHERE rule_id = ?",
                (None if deployment.rollback_of else deployment.rollout_percent, deployment.rule_id),
            )
            await self._audit(
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
            stamp_by, stamp_at = _STAMPS[RuleStatus(current)]
            await db.execute(
                f"UPDATE generated_rules SET status = ?, {stamp_by} = NULL, {stamp_at} = NULL, updated_at = ?"
                " WHERE rule_id = ?",
                (previous_status, _ts(now), rule_id),
            )
            await self._audit(
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
                await self._audit(
                    db,
                    now=now,
                    actor="system",
                    action="reload_failed",
                    subject_id=row[0] if row else str(deployment_id),
                    detail={"deployment_id": deployment_id, "error": result.error},
                )

    async def _deployment_in(self, db: aiosqlite.Connection, deployment_id: int) -> Deployment | None:
        cursor = await db.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
        row = await cursor.fetchone()
        return _deployment(row) if row else None

    async def get_deployment(self, deployment_id: int) -> Deployment | None:
        async with self._read() as db:
            return await self._deployment_in(db, deployment_id)

    async def active_deployment_for_rule(self, rule_id: str) -> Deployment | None:
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT * FROM deployments WHERE rule_id = ? AND state = 'applied' AND rollback_of IS NULL"
                " ORDER BY id DESC LIMIT 1",
                (rule_id,),
            )
            row = await cursor.fetchone()
            return _deployment(row) if row else None

    async def pending_deployments(self) -> list[Deployment]:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM deployments WHERE state = 'pending' ORDER BY id")
            return [_deployment(row) for row in await cursor.fetchall()]

    async def list_deployments(self, *, rule_id: str | None, limit: int, offset: int) -> Page[Deployment]:
        where, args = _where(("rule_id", rule_id))
        where = f"{where} {'AND' if where else 'WHERE'} state = 'applied'"
        async with self._read() as db:
            total = await _count(db, f"SELECT COUNT(*) FROM deployments {where}", args)
            cursor = await db.execute(
                f"SELECT * FROM deployments {where} ORDER BY id DESC LIMIT ? OFFSET ?", (*args, limit, offset)
            )
            rows = await cursor.fetchall()
        return Page([_deployment(row) for row in rows], total, limit, offset)

    async def deployed_rules(self, module_name: str) -> list[Rule]:
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT * FROM generated_rules WHERE module_name = ? AND status = 'deployed' ORDER BY id",
                (module_name,),
            )
            return [_rule(row) for row in await cursor.fetchall()]

    # ------------------------------------------------------------------ review cards

    async def claim_card(
        self, rule_id: str, *, channel: str, now: datetime, posting_lease_seconds: float
    ) -> int | None:
        lease_expired = _ts(now - timedelta(seconds=posting_lease_seconds))
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO review_cards (rule_id, channel, state, attempts, updated_at)"
                " VALUES (?, ?, 'posting', 1, ?)"
                " ON CONFLICT (rule_id) DO UPDATE SET state = 'posting', attempts = attempts + 1,"
                " channel = excluded.channel, updated_at = excluded.updated_at"
                " WHERE review_cards.state = 'failed'"
                " OR (review_cards.state = 'posting' AND review_cards.updated_at < ?)",
                (rule_id, channel, _ts(now), lease_expired),
            )
            if cursor.rowcount != 1:
                return None
            cursor = await db.execute("SELECT attempts FROM review_cards WHERE rule_id = ?", (rule_id,))
            row = await cursor.fetchone()
            return int(row[0])

    async def card_posted(self, rule_id: str, *, attempt: int, channel: str, message_ts: str, now: datetime) -> bool:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE review_cards SET state = 'posted', channel = ?, message_ts = ?, last_error = NULL,"
                " updated_at = ? WHERE rule_id = ? AND attempts = ?",
                (channel, message_ts, _ts(now), rule_id, attempt),
            )
            return cursor.rowcount == 1

    async def card_failed(self, rule_id: str, *, attempt: int, error: str, now: datetime) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE review_cards SET state = 'failed', last_error = ?, updated_at = ?"
                " WHERE rule_id = ? AND attempts = ? AND state = 'posting'",
                (error[:1000], _ts(now), rule_id, attempt),
            )

    async def get_card(self, rule_id: str) -> ReviewCard | None:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM review_cards WHERE rule_id = ?", (rule_id,))
            row = await cursor.fetchone()
            return ReviewCard.model_validate(dict(row)) if row else None

    async def rules_without_card(
        self, *, now: datetime, retry_after_seconds: float, posting_lease_seconds: float, limit: int
    ) -> list[str]:
        retry_due = _ts(now - timedelta(seconds=retry_after_seconds))
        lease_expired = _ts(now - timedelta(seconds=posting_lease_seconds))
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

    # ------------------------------------------------------------------ generations

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
            await self._insert_generation(db, feedback_id, info, outcome=outcome, now=now, error=error, rule_id=rule_id)

    @staticmethod
    async def _insert_generation(
        db: aiosqlite.Connection,
        feedback_id: str,
        info: GenerationInfo,
        *,
        outcome: str,
        now: datetime,
        error: str | None = None,
        rule_id: str | None = None,
    ) -> None:
        await db.execute(
            "INSERT INTO generations (feedback_id, rule_id, generator, model, outcome, error, input_tokens,"
            " output_tokens, latency_ms, attempts, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
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
                _ts(now),
            ),
        )

    async def generation_totals(self, *, since: datetime | None = None) -> GenerationTotals:
        where, args = ("WHERE at >= ?", (_ts(since),)) if since is not None else ("", ())
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT COUNT(*), SUM(outcome = 'succeeded'), SUM(outcome = 'failed'), SUM(outcome = 'declined'),"
                f" SUM(input_tokens), SUM(output_tokens), AVG(latency_ms) FROM generations {where}",
                args,
            )
            row = await cursor.fetchone()
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

    # ------------------------------------------------------------------ monitoring

    async def metrics_data(
        self, *, now: datetime, error_window_start: datetime, day_start: datetime, approval_window_start: datetime
    ) -> dict[str, Any]:
        async with self._read() as db:
            feedback_by_status = await _grouped(db, "SELECT status, COUNT(*) FROM feedbacks GROUP BY status")
            feedback_by_type = await _grouped(
                db, "SELECT feedback_type, COUNT(*) FROM feedbacks GROUP BY feedback_type"
            )
            rules_by_status = await _grouped(db, "SELECT status, COUNT(*) FROM generated_rules GROUP BY status")
            cursor = await db.execute(
                "SELECT feedback_id, created_at FROM feedbacks WHERE status = 'pending' ORDER BY id LIMIT 1"
            )
            oldest = await cursor.fetchone()
            cursor = await db.execute(
                "SELECT COUNT(*), COALESCE(SUM(outcome = 'failed'), 0) FROM generations WHERE at >= ? AND at <= ?",
                (_ts(error_window_start), _ts(now)),
            )
            attempts, failures = await cursor.fetchone()
            deployed_today = await _count(
                db,
                "SELECT COUNT(*) FROM deployments WHERE state = 'applied' AND rollback_of IS NULL"
                " AND deployed_at >= ? AND deployed_at <= ?",
                (_ts(day_start), _ts(now)),
            )
            approvals = await _approval_seconds(db, _ts(approval_window_start), _ts(now))
        return {
            "pending_feedback": feedback_by_status.get("pending", 0),
            "oldest_pending_feedback_id": oldest[0] if oldest else None,
            "oldest_pending_at": oldest[1] if oldest else None,
            "pending_rules": rules_by_status.get("pending", 0),
            "feedback_by_status": {s.value: feedback_by_status.get(s.value, 0) for s in FeedbackStatus},
            "feedback_by_type": {t.value: feedback_by_type.get(t.value, 0) for t in FeedbackType},
            "rules_by_status": {s.value: rules_by_status.get(s.value, 0) for s in RuleStatus},
            "attempts": int(attempts),
            "failures": int(failures),
            "deployed_today": deployed_today,
            "approval_seconds": approvals,
        }

    async def digest_data(self, *, start: datetime, end: datetime) -> dict[str, Any]:
        period = (_ts(start), _ts(end))
        async with self._read() as db:
            by_type = await _grouped(
                db,
                "SELECT feedback_type, COUNT(*) FROM feedbacks WHERE created_at >= ? AND created_at < ?"
                " GROUP BY feedback_type",
                period,
            )

            async def rules_where(column: str) -> int:
                return await _count(
                    db, f"SELECT COUNT(*) FROM generated_rules WHERE {column} >= ? AND {column} < ?", period
                )

            generated = await rules_where("created_at")
            approved = await rules_where("approved_at")
            rejected = await rules_where("rejected_at")
            deployments = (
                "SELECT COUNT(*) FROM deployments WHERE state = 'applied' AND deployed_at >= ? AND deployed_at < ?"
            )
            deployed = await _count(db, deployments + " AND rollback_of IS NULL", period)
            rolled_back = await _count(db, deployments + " AND rollback_of IS NOT NULL", period)
            pending_feedback = await _count(db, "SELECT COUNT(*) FROM feedbacks WHERE status = 'pending'", ())
            pending_rules = await _count(db, "SELECT COUNT(*) FROM generated_rules WHERE status = 'pending'", ())
            cursor = await db.execute(
                "SELECT feedback_id, created_at FROM feedbacks WHERE status = 'pending' ORDER BY id LIMIT 1"
            )
            oldest = await cursor.fetchone()
            approvals = await _approval_seconds(db, *period, end_inclusive=False)
            cursor = await db.execute(
                "SELECT feedback_text FROM feedbacks WHERE created_at >= ? AND created_at < ? ORDER BY id", period
            )
            texts = [row[0] for row in await cursor.fetchall()]
            cursor = await db.execute(
                "SELECT user_id FROM feedbacks WHERE created_at >= ? AND created_at < ? ORDER BY id", period
            )
            users = [row[0] for row in await cursor.fetchall()]
            cursor = await db.execute(
                "SELECT rule_id, module_name, rollout_percent FROM generated_rules"
                " WHERE status = 'deployed' AND rollout_percent < 100 ORDER BY id"
            )
            canaries = [
                {"rule_id": r[0], "module_name": r[1], "rollout_percent": r[2]} for r in await cursor.fetchall()
            ]
            cursor = await db.execute(
                "SELECT r.rule_id, r.module_name, r.new_rule, c.channel, c.message_ts FROM deployments d"
                " JOIN generated_rules r ON r.rule_id = d.rule_id"
                " LEFT JOIN review_cards c ON c.rule_id = r.rule_id AND c.state = 'posted'"
                " WHERE d.state = 'applied' AND d.rollback_of IS NULL AND d.deployed_at >= ? AND d.deployed_at < ?"
                " ORDER BY d.id",
                period,
            )
            deployed_rules = [
                {"rule_id": r[0], "module_name": r[1], "new_rule": r[2], "channel": r[3], "message_ts": r[4]}
                for r in await cursor.fetchall()
            ]
        return {
            "feedback_by_type": {t.value: by_type.get(t.value, 0) for t in FeedbackType},
            "rules_generated": generated,
            "rules_approved": approved,
            "rules_rejected": rejected,
            "rules_deployed": deployed,
            "rules_rolled_back": rolled_back,
            "pending_feedback": pending_feedback,
            "pending_rules": pending_rules,
            "oldest_pending_feedback_id": oldest[0] if oldest else None,
            "oldest_pending_at": oldest[1] if oldest else None,
            "approval_seconds": approvals,
            "feedback_texts": texts,
            "feedback_users": users,
            "canaries": canaries,
            "deployed": deployed_rules,
        }

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
            _ts(state.since) if state.since else None,
            _ts(state.last_notified_at) if state.last_notified_at else None,
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
        expires = _ts(now + timedelta(seconds=ttl_seconds))
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
                (name, holder, expires, _ts(now)),
            )
            return cursor.rowcount == 1

    async def claim_digest(self, key: str, *, now: datetime) -> bool:
        async with self._tx() as db:
            cursor = await db.execute(
                "INSERT INTO digest_runs (run_key, posted_at) VALUES (?, ?) ON CONFLICT (run_key) DO NOTHING",
                (key, _ts(now)),
            )
            return cursor.rowcount == 1

    # ------------------------------------------------------------------ webhook outbox

    async def enqueue_webhooks(
        self, *, event_id: str, event_type: str, payload: dict[str, Any], urls: tuple[str, ...], now: datetime
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        async with self._tx() as db:
            for url in urls:
                await db.execute(
                    "INSERT INTO webhook_deliveries (event_id, event_type, url, payload, state, next_attempt_at,"
                    " created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                    (event_id, event_type, url, body, _ts(now), _ts(now)),
                )

    async def due_webhooks(self, *, now: datetime, limit: int = 50, lease_seconds: float = 60) -> list[dict[str, Any]]:
        """Claim the deliveries due now: they are pushed `lease_seconds` ahead in the same transaction, so a
        second process does not send them too; one whose sender died is due again after the lease."""
        async with self._tx() as db:
            cursor = await db.execute(
                "SELECT * FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
                (_ts(now), limit),
            )
            rows = [dict(row) for row in await cursor.fetchall()]
            lease = _ts(now + timedelta(seconds=lease_seconds))
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
        """Record one attempt: delivered, retry at next_attempt_at, or failed for good (next_attempt_at None)."""
        state = "delivered" if delivered else ("pending" if next_attempt_at else "failed")
        async with self._tx() as db:
            await db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, state = ?, last_status = ?, last_error = ?,"
                " next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = ? WHERE id = ?",
                (
                    state,
                    status,
                    error[:1000] if error else None,
                    _ts(next_attempt_at) if next_attempt_at else None,
                    _ts(now) if delivered else None,
                    delivery_id,
                ),
            )

    async def list_webhook_deliveries(self, *, limit: int = 100) -> list[dict[str, Any]]:
        async with self._read() as db:
            cursor = await db.execute("SELECT * FROM webhook_deliveries ORDER BY id DESC LIMIT ?", (limit,))
            return [dict(row) for row in await cursor.fetchall()]

    # ------------------------------------------------------------------ reports

    async def counts(self, *, since: datetime) -> dict[str, Any]:
        async with self._read() as db:
            feedback_by_status = await _grouped(db, "SELECT status, COUNT(*) FROM feedbacks GROUP BY status")
            feedback_by_type = await _grouped(
                db, "SELECT feedback_type, COUNT(*) FROM feedbacks GROUP BY feedback_type"
            )
            rules_by_status = await _grouped(db, "SELECT status, COUNT(*) FROM generated_rules GROUP BY status")
            deployments_total = await _count(
                db, "SELECT COUNT(*) FROM deployments WHERE state = 'applied' AND rollback_of IS NULL", ()
            )
            rollbacks_total = await _count(
                db, "SELECT COUNT(*) FROM deployments WHERE state = 'applied' AND rollback_of IS NOT NULL", ()
            )
            deployed_since = await _count(
                db,
                "SELECT COUNT(*) FROM deployments WHERE state = 'applied' AND rollback_of IS NULL AND deployed_at >= ?",
                (_ts(since),),
            )
        return {
            "feedback_by_status": {s.value: feedback_by_status.get(s.value, 0) for s in FeedbackStatus},
            "feedback_by_type": {t.value: feedback_by_type.get(t.value, 0) for t in FeedbackType},
            "rules_by_status": {s.value: rules_by_status.get(s.value, 0) for s in RuleStatus},
            "deployments_total": deployments_total,
            "rollbacks_total": rollbacks_total,
            "deployed_since": deployed_since,
        }

    async def list_audit(self, *, subject_id: str | None, limit: int, offset: int) -> Page[AuditEntry]:
        where, args = _where(("subject_id", subject_id))
        async with self._read() as db:
            total = await _count(db, f"SELECT COUNT(*) FROM audit_log {where}", args)
            cursor = await db.execute(
                f"SELECT * FROM audit_log {where} ORDER BY id LIMIT ? OFFSET ?", (*args, limit, offset)
            )
            rows = await cursor.fetchall()
        return Page(
            [
                AuditEntry(
                    audit_id=row["id"],
                    at=row["at"],
                    actor=row["actor"],
                    action=row["action"],
                    subject_id=row["subject_id"],
                    from_state=row["from_state"],
                    to_state=row["to_state"],
                    detail=json.loads(row["detail"]) if row["detail"] else None,
                )
                for row in rows
            ],
            total,
            limit,
            offset,
        )


def _busy(exc: sqlite3.OperationalError) -> Exception:
    """A locked database is a clear, retryable error; any other operational error stays what it is."""
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreBusy(f"the database is busy (locked by another process); try again shortly ({exc})")
    return exc


def _statements(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def _where(*conditions: tuple[str, Any]) -> tuple[str, tuple[Any, ...]]:
    parts, args = [], []
    for column, value in conditions:
        if value is not None:
            parts.append(f"{column} = ?")
            args.append(value.value if hasattr(value, "value") else value)
    return ("WHERE " + " AND ".join(parts)) if parts else "", tuple(args)


async def _count(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...]) -> int:
    cursor = await db.execute(sql, args)
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _approval_seconds(
    db: aiosqlite.Connection, start: str, end: str, *, end_inclusive: bool = True
) -> list[float]:
    """Seconds from creation to approval of the rules approved in [start, end]."""
    cursor = await db.execute(
        "SELECT created_at, approved_at FROM generated_rules WHERE approved_at >= ? AND approved_at "
        + ("<=" if end_inclusive else "<")
        + " ?",
        (start, end),
    )
    return [
        (datetime.fromisoformat(approved) - datetime.fromisoformat(created)).total_seconds()
        for created, approved in await cursor.fetchall()
    ]


async def _grouped(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...] = ()) -> dict[str, int]:
    cursor = await db.execute(sql, args)
    return {row[0]: int(row[1]) for row in await cursor.fetchall()}


def _feedback(row: aiosqlite.Row) -> Feedback:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"]) if data.get("metadata") else None
    data["flags"] = json.loads(data.get("flags") or "[]")
    return Feedback.model_validate(data)


def _rule(row: aiosqlite.Row) -> Rule:
    data = dict(row)
    data["warnings"] = json.loads(data["warnings"] or "[]")
    return Rule.model_validate(data)


def _deployment(row: aiosqlite.Row) -> Deployment:
    data = dict(row)
    data["deployment_id"] = data.pop("id")
    data["change"] = json.loads(data["change"] or "{}")
    return Deployment.model_validate(data)
