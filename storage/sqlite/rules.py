"""Generated rules: created from a proposal, moved between states (compare-and-set), edited, clustered."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import aiosqlite

from autotrain.models import GenerationInfo, NewEvent, Rule, RuleProposal, RuleStatus, rule_id_for
from autotrain.pagination import Cursor, Order
from autotrain.ports import Page
from storage.sqlite.connection import SqliteConnection, ts
from storage.sqlite.events import insert_event
from storage.sqlite.figures import figures
from storage.sqlite.generations import insert_generation
from storage.sqlite.queries import audit, keyset, paged, rule_in, rule_row, where

# Columns set when a rule enters a state: who did it and when.
STAMPS = {
    RuleStatus.APPROVED: ("approved_by", "approved_at"),
    RuleStatus.REJECTED: ("rejected_by", "rejected_at"),
    RuleStatus.DEPLOYED: ("deployed_by", "deployed_at"),
    RuleStatus.ROLLED_BACK: ("rolled_back_by", "rolled_back_at"),
}

_EDITABLE = {"module_name", "old_rule", "new_rule", "warnings", "warning_details"}
_JSON_COLUMNS = {"warnings", "warning_details"}


async def move_rule(
    db: aiosqlite.Connection,
    rule_id: str,
    expected: RuleStatus,
    target: RuleStatus,
    actor_id: str,
    now: datetime,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    as_read: Rule | None = None,
) -> bool:
    """expected → target in the caller's transaction, stamped and audited; False when not `expected` (or, with
    `as_read`, when the rule was edited since it was read)."""
    by_column, at_column = STAMPS[target]
    extra = ", reject_reason = ?" if target is RuleStatus.REJECTED else ""
    args: list[Any] = [target.value, actor_id, ts(now), ts(now)]
    if extra:
        args.append(reason)
    condition = " WHERE rule_id = ? AND status = ?"
    condition_args: list[Any] = [rule_id, expected.value]
    if as_read is not None:
        condition += " AND edited_at IS ?"
        condition_args.append(ts(as_read.edited_at) if as_read.edited_at else None)
    cursor = await db.execute(
        f"UPDATE generated_rules SET status = ?, {by_column} = ?, {at_column} = ?, updated_at = ?{extra}{condition}",
        (*args, *condition_args),
    )
    if cursor.rowcount != 1:
        return False
    audit_detail = dict(detail or {})
    if reason:
        audit_detail["reason"] = reason
    await audit(
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


async def _changed(db: aiosqlite.Connection, rule_id: str, event: NewEvent | None, now: datetime) -> Rule:
    """The rule after a change, with its event recorded in the same transaction when one is given."""
    rule = await rule_in(db, rule_id)
    assert rule is not None
    if event is not None:
        await insert_event(db, event, rule, now=now)
    return rule


class RuleMixin(SqliteConnection):
    async def create_rule(
        self,
        feedback_id: str,
        proposal: RuleProposal,
        info: GenerationInfo,
        *,
        actor_id: str,
        now: datetime,
        event: NewEvent | None = None,
    ) -> Rule:
        async with self._tx() as db:
            existing = await db.execute("SELECT rule_id FROM generated_rules WHERE feedback_id = ?", (feedback_id,))
            found = await existing.fetchone()
            if found is not None:  # another generation won the race: its rule is the one (never a second)
                rule = await rule_in(db, found[0])
                assert rule is not None
                return rule
            cursor = await db.execute(
                "INSERT INTO generated_rules (feedback_id, module_name, rule_type, old_rule, new_rule, reasoning,"
                " confidence, status, warnings, warning_details, generator, model, input_tokens, output_tokens,"
                " latency_ms, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    feedback_id,
                    proposal.module_name,
                    proposal.rule_type.value,
                    proposal.old_rule,
                    proposal.new_rule,
                    proposal.reasoning,
                    proposal.confidence,
                    json.dumps([w.value for w in proposal.warnings]),
                    json.dumps(proposal.warning_details, ensure_ascii=False),
                    info.generator,
                    info.model,
                    info.input_tokens,
                    info.output_tokens,
                    info.latency_ms,
                    ts(now),
                    ts(now),
                ),
            )
            row_id = cursor.lastrowid
            assert row_id is not None
            rule_id = rule_id_for(row_id)
            await db.execute("UPDATE generated_rules SET rule_id = ? WHERE id = ?", (rule_id, row_id))
            await db.execute(
                "UPDATE feedbacks SET status = 'processed', updated_at = ? WHERE feedback_id = ?",
                (ts(now), feedback_id),
            )
            await audit(
                db,
                now=now,
                actor=actor_id,
                action="rule_created",
                subject_id=rule_id,
                to_state="pending",
                detail={"feedback_id": feedback_id, "generator": info.generator, "model": info.model},
            )
            await insert_generation(db, feedback_id, info, outcome="succeeded", now=now, rule_id=rule_id)
            await audit(
                db,
                now=now,
                actor=actor_id,
                action="feedback_processed",
                subject_id=feedback_id,
                from_state="processing",
                to_state="processed",
                detail={"rule_id": rule_id},
            )
            return await _changed(db, rule_id, event, now)

    async def get_rule(self, rule_id: str) -> Rule | None:
        async with self._read() as db:
            return await rule_in(db, rule_id)

    async def get_rule_for_feedback(self, feedback_id: str) -> Rule | None:
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT * FROM generated_rules WHERE feedback_id = ? OR rule_id ="
                " (SELECT rule_id FROM rule_feedbacks WHERE feedback_id = ?) LIMIT 1",
                (feedback_id, feedback_id),
            )
            row = await cursor.fetchone()
            return rule_row(row) if row else None

    async def list_rules(
        self,
        *,
        status: RuleStatus | None,
        module_name: str | None,
        limit: int,
        offset: int,
        cursor: Cursor | None = None,
        order: Order = Order.NEWEST,
    ) -> Page[Rule]:
        condition, args = where(("status", status), ("module_name", module_name))
        tail, tail_args = keyset("id", condition, args, cursor=cursor, order=order, limit=limit, offset=offset)
        async with self._read() as db:
            total = (await figures(db, "rule|")).rules(status, module_name)
            found = await db.execute(f"SELECT * FROM generated_rules {tail}", tail_args)
            rows = await found.fetchall()
        return paged(
            [rule_row(row) for row in rows],
            [row["id"] for row in rows],
            total=total,
            limit=limit,
            offset=offset,
            order=order,
        )

    async def deployed_rules(self, module_name: str) -> list[Rule]:
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT * FROM generated_rules WHERE module_name = ? AND status = 'deployed' ORDER BY id",
                (module_name,),
            )
            return [rule_row(row) for row in await cursor.fetchall()]

    async def transition_rule(
        self,
        rule_id: str,
        *,
        expected: RuleStatus,
        target: RuleStatus,
        actor_id: str,
        now: datetime,
        reason: str | None = None,
        event: NewEvent | None = None,
        detail: dict[str, Any] | None = None,
        as_read: Rule | None = None,
    ) -> Rule | None:
        async with self._tx() as db:
            if not await move_rule(db, rule_id, expected, target, actor_id, now, reason, detail, as_read):
                return None
            if target is RuleStatus.REJECTED:
                # the feedback behind a rejected rule is closed too: its own, and what was attached to it
                cursor = await db.execute(
                    "SELECT feedback_id FROM feedbacks WHERE status = 'processed' AND (feedback_id ="
                    " (SELECT feedback_id FROM generated_rules WHERE rule_id = ?) OR feedback_id IN"
                    " (SELECT feedback_id FROM rule_feedbacks WHERE rule_id = ?)) ORDER BY id",
                    (rule_id, rule_id),
                )
                for (feedback_id,) in await cursor.fetchall():
                    await db.execute(
                        "UPDATE feedbacks SET status = 'rejected', updated_at = ? WHERE feedback_id = ?",
                        (ts(now), feedback_id),
                    )
                    await audit(
                        db,
                        now=now,
                        actor=actor_id,
                        action="feedback_rejected",
                        subject_id=feedback_id,
                        from_state="processed",
                        to_state="rejected",
                        detail={"rule_id": rule_id},
                    )
            return await _changed(db, rule_id, event, now)

    async def edit_rule(
        self,
        rule_id: str,
        *,
        changes: dict[str, Any],
        actor_id: str,
        now: datetime,
        event: NewEvent | None = None,
        expected_new_rule: str | None = None,
    ) -> Rule | None:
        unknown = set(changes) - _EDITABLE
        if unknown:
            raise ValueError(f"cannot edit {sorted(unknown)}")
        async with self._tx() as db:
            before = await rule_in(db, rule_id)
            if before is None or before.status is not RuleStatus.PENDING:
                return None
            if expected_new_rule is not None and before.new_rule != expected_new_rule:
                return None  # someone rewrote the line meanwhile: theirs stands
            values = {
                key: json.dumps(value, ensure_ascii=False) if key in _JSON_COLUMNS else value
                for key, value in changes.items()
            }
            assignments = ", ".join(f"{key} = ?" for key in values)
            await db.execute(
                f"UPDATE generated_rules SET {assignments}, edited_by = ?, edited_at = ?, updated_at = ?"
                " WHERE rule_id = ? AND status = 'pending'",
                (*values.values(), actor_id, ts(now), ts(now), rule_id),
            )
            await audit(
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
            return await _changed(db, rule_id, event, now)

    async def attach_feedback(
        self,
        rule_id: str,
        feedback_ids: list[str],
        *,
        actor_id: str,
        now: datetime,
        event: NewEvent | None = None,
    ) -> list[str]:
        """Answer more pending feedback with an existing rule (a cluster): each moves pending → processed, in
        one transaction; returns the ones attached (a feedback no longer pending is left alone, and nothing is
        attached to a rule rejected or rolled back)."""
        attached: list[str] = []
        async with self._tx() as db:
            # matched a moment ago, perhaps rejected or rolled back since: then the feedback keeps its own way
            cursor = await db.execute(
                "SELECT 1 FROM generated_rules WHERE rule_id = ? AND status IN ('pending', 'approved', 'deployed')",
                (rule_id,),
            )
            if await cursor.fetchone() is None:
                return attached
            for feedback_id in feedback_ids:
                cursor = await db.execute(
                    "SELECT status FROM feedbacks WHERE feedback_id = ? AND status IN ('pending', 'processing')"
                    " AND NOT EXISTS (SELECT 1 FROM generated_rules WHERE feedback_id = ?)",
                    (feedback_id, feedback_id),
                )
                found = await cursor.fetchone()
                if found is None:
                    continue
                await db.execute(
                    "UPDATE feedbacks SET status = 'processed', updated_at = ?, generation_lease_until = NULL"
                    " WHERE feedback_id = ?",
                    (ts(now), feedback_id),
                )
                await db.execute(
                    "INSERT INTO rule_feedbacks (rule_id, feedback_id) VALUES (?, ?)", (rule_id, feedback_id)
                )
                await audit(
                    db,
                    now=now,
                    actor=actor_id,
                    action="feedback_clustered",
                    subject_id=feedback_id,
                    from_state=found[0],
                    to_state="processed",
                    detail={"rule_id": rule_id},
                )
                attached.append(feedback_id)
            if attached:
                await db.execute(
                    "UPDATE generated_rules SET cluster_size = cluster_size + ?, updated_at = ? WHERE rule_id = ?",
                    (len(attached), ts(now), rule_id),
                )
                await _changed(db, rule_id, event, now)
        return attached

    async def cluster_feedback_texts(self, rule_id: str, limit: int = 5) -> list[str]:
        """The feedback texts a rule answers besides its own (the same complaint, attached), newest first."""
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT f.feedback_text FROM rule_feedbacks rf JOIN feedbacks f ON f.feedback_id = rf.feedback_id"
                " WHERE rf.rule_id = ? ORDER BY f.id DESC LIMIT ?",
                (rule_id, limit),
            )
            return [row[0] for row in await cursor.fetchall()]
