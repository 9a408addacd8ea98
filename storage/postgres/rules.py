"""Generated rules: created from a proposal, moved between states (compare-and-set), edited, clustered.

storage/sqlite/rules.py in PostgreSQL's dialect. SQLite runs one writer at a time; here transactions run side
by side (READ COMMITTED), and what SQLite's one writer gives for free is kept by two rules:

- A change that reads a rule before writing it first locks its row (`SELECT ... FOR NO KEY UPDATE`, the lock
  an UPDATE takes); a state change checks the state in its UPDATE's WHERE (a concurrent change of the row is
  waited for, and the WHERE is checked again against what it committed).
- Locks are taken in one order: rows first (the rule's, then its feedback's or its deployment's), then the
  maintained figures' counter rows (the schema's triggers, each held until commit) in one order of kinds, the
  rule's (`complaints|version`, `rule|...`) before the feedback's, the deployment's, the generation's and the
  evaluation's, and the audit rows last of all (`AuditTrail`), `audit` being the counter every writer shares.
  Two transactions then never wait on each other in a circle (a deadlock, which PostgreSQL breaks after a
  second by failing one of them: StoreBusy).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from autotrain.models import GenerationInfo, NewEvent, Rule, RuleProposal, RuleStatus, rule_id_for
from autotrain.pagination import Cursor, Order
from autotrain.ports import Page
from storage.postgres.connection import PostgresConnection, rowcount, ts
from storage.postgres.events import insert_event
from storage.postgres.generations import insert_generation
from storage.postgres.queries import AuditTrail, audit, figures, keyset, paged, rule_in, rule_row, where

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
    db: asyncpg.Connection,
    rule_id: str,
    expected: RuleStatus,
    target: RuleStatus,
    actor_id: str,
    now: datetime,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    as_read: Rule | None = None,
    *,
    audits: AuditTrail,
) -> bool:
    """expected → target in the caller's transaction, stamped, its audit row added to `audits` (the caller writes
    them last); False when not `expected` (or, with `as_read`, when the rule was edited since it was read)."""
    by_column, at_column = STAMPS[target]
    args: list[Any] = [target.value, actor_id, ts(now)]
    extra = ""
    if target is RuleStatus.REJECTED:
        args.append(reason)
        extra = f", reject_reason = ${len(args)}"
    args += [rule_id, expected.value]
    condition = f" WHERE rule_id = ${len(args) - 1} AND status = ${len(args)}"
    if as_read is not None:
        args.append(ts(as_read.edited_at) if as_read.edited_at else None)
        condition += f" AND edited_at IS NOT DISTINCT FROM ${len(args)}::timestamptz"
    status = await db.execute(
        f"UPDATE generated_rules SET status = $1, {by_column} = $2, {at_column} = $3, updated_at = $3"
        f"{extra}{condition}",
        *args,
    )
    if rowcount(status) != 1:
        return False
    audit_detail = dict(detail or {})
    if reason:
        audit_detail["reason"] = reason
    audits.add(
        now=now,
        actor=actor_id,
        action=f"rule_{target.value}",
        subject_id=rule_id,
        from_state=expected.value,
        to_state=target.value,
        detail=audit_detail or None,
    )
    return True


async def _changed(db: asyncpg.Connection, rule_id: str, event: NewEvent | None, now: datetime) -> Rule:
    """The rule after a change, with its event recorded in the same transaction when one is given."""
    rule = await rule_in(db, rule_id)
    assert rule is not None
    if event is not None:
        await insert_event(db, event, rule, now=now)
    return rule


async def _close_feedback(
    db: asyncpg.Connection,
    rows: list[asyncpg.Record],
    rule_id: str,
    *,
    actor_id: str,
    now: datetime,
    audits: AuditTrail,
) -> None:
    """processed → rejected for a rejected rule's feedback (`rows`: feedback_id and feedback_type, in row order):
    the status changes in one order of types (each bumps its type's counters), their audit rows in row order."""
    closed = set()
    for row in sorted(rows, key=lambda row: row["feedback_type"]):  # stable: row order within a type
        changed = await db.execute(
            "UPDATE feedbacks SET status = 'rejected', updated_at = $1 WHERE feedback_id = $2 AND status = 'processed'",
            ts(now),
            row["feedback_id"],
        )
        if rowcount(changed) == 1:
            closed.add(row["feedback_id"])
    for row in rows:
        if row["feedback_id"] in closed:
            audits.add(
                now=now,
                actor=actor_id,
                action="feedback_rejected",
                subject_id=row["feedback_id"],
                from_state="processed",
                to_state="rejected",
                detail={"rule_id": rule_id},
            )


class RuleMixin(PostgresConnection):
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
            # the feedback's row first (rows before counters, see the module): a second generation of it waits
            await db.execute("SELECT 1 FROM feedbacks WHERE feedback_id = $1 FOR NO KEY UPDATE", feedback_id)
            existing = await db.fetchrow("SELECT * FROM generated_rules WHERE feedback_id = $1", feedback_id)
            if existing is not None:  # another generation won the race: its rule is the one (never a second)
                return rule_row(existing)
            # ON CONFLICT: the same race, its insert not committed when we looked (it is waited for)
            row_id = await db.fetchval(
                "INSERT INTO generated_rules (feedback_id, module_name, rule_type, old_rule, new_rule, reasoning,"
                " confidence, status, warnings, warning_details, generator, model, input_tokens, output_tokens,"
                " latency_ms, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11, $12, $13, $14, $15, $15)"
                " ON CONFLICT (feedback_id) DO NOTHING RETURNING id",
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
            )
            if row_id is None:
                found = await db.fetchrow("SELECT * FROM generated_rules WHERE feedback_id = $1", feedback_id)
                assert found is not None
                return rule_row(found)
            rule_id = rule_id_for(row_id)
            await db.execute("UPDATE generated_rules SET rule_id = $1 WHERE id = $2", rule_id, row_id)
            await db.execute(
                "UPDATE feedbacks SET status = 'processed', updated_at = $1 WHERE feedback_id = $2",
                ts(now),
                feedback_id,
            )
            await insert_generation(db, feedback_id, info, outcome="succeeded", now=now, rule_id=rule_id)
            audits = AuditTrail()
            audits.add(
                now=now,
                actor=actor_id,
                action="rule_created",
                subject_id=rule_id,
                to_state="pending",
                detail={"feedback_id": feedback_id, "generator": info.generator, "model": info.model},
            )
            audits.add(
                now=now,
                actor=actor_id,
                action="feedback_processed",
                subject_id=feedback_id,
                from_state="processing",
                to_state="processed",
                detail={"rule_id": rule_id},
            )
            await audits.write(db)
            return await _changed(db, rule_id, event, now)

    async def get_rule(self, rule_id: str) -> Rule | None:
        async with self._read() as db:
            return await rule_in(db, rule_id)

    async def get_rule_for_feedback(self, feedback_id: str) -> Rule | None:
        async with self._read() as db:
            row = await db.fetchrow(
                "SELECT * FROM generated_rules WHERE feedback_id = $1 OR rule_id ="
                " (SELECT rule_id FROM rule_feedbacks WHERE feedback_id = $1) LIMIT 1",
                feedback_id,
            )
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
            rows = await db.fetch(f"SELECT * FROM generated_rules {tail}", *tail_args)
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
            rows = await db.fetch(
                "SELECT * FROM generated_rules WHERE module_name = $1 AND status = 'deployed' ORDER BY id",
                module_name,
            )
            return [rule_row(row) for row in rows]

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
            rows: list[asyncpg.Record] = []
            if target is RuleStatus.REJECTED:
                # the feedback behind a rejected rule is closed too: its own, and what was attached to it; the rows
                # locked before any change (the rule's, then its feedback's: attach_feedback's order)
                await db.execute("SELECT 1 FROM generated_rules WHERE rule_id = $1 FOR NO KEY UPDATE", rule_id)
                rows = await db.fetch(
                    "SELECT feedback_id, feedback_type FROM feedbacks WHERE status = 'processed' AND (feedback_id ="
                    " (SELECT feedback_id FROM generated_rules WHERE rule_id = $1) OR feedback_id IN"
                    " (SELECT feedback_id FROM rule_feedbacks WHERE rule_id = $1)) ORDER BY id FOR NO KEY UPDATE",
                    rule_id,
                )
            audits = AuditTrail()
            if not await move_rule(
                db, rule_id, expected, target, actor_id, now, reason, detail, as_read, audits=audits
            ):
                return None
            if rows:
                await _close_feedback(db, rows, rule_id, actor_id=actor_id, now=now, audits=audits)
            await audits.write(db)
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
            before = await rule_in(db, rule_id, lock=True)  # a concurrent edit waits: it compares with this one
            if before is None or before.status is not RuleStatus.PENDING:
                return None
            if expected_new_rule is not None and before.new_rule != expected_new_rule:
                return None  # someone rewrote the line meanwhile: theirs stands
            values = [
                json.dumps(value, ensure_ascii=False) if key in _JSON_COLUMNS else value
                for key, value in changes.items()
            ]
            assignments = ", ".join(f"{key} = ${i}" for i, key in enumerate(changes, start=1))
            n = len(values)
            await db.execute(
                f"UPDATE generated_rules SET {assignments}, edited_by = ${n + 1}, edited_at = ${n + 2},"
                f" updated_at = ${n + 2} WHERE rule_id = ${n + 3} AND status = 'pending'",
                *values,
                actor_id,
                ts(now),
                rule_id,
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
            # (the row locked: a rejection waits for the attached feedback, to close it too)
            found_rule = await db.fetchval(
                "SELECT 1 FROM generated_rules WHERE rule_id = $1 AND status IN ('pending', 'approved', 'deployed')"
                " FOR NO KEY UPDATE",
                rule_id,
            )
            if found_rule is None:
                return attached
            # every feedback's row locked before any change, in row order (two clusters never wait on each other
            # in a circle, nor on a counter row a change of ours would hold)
            await db.execute(
                "SELECT 1 FROM feedbacks WHERE feedback_id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE",
                list(feedback_ids),
            )
            eligible: dict[str, str] = {}  # feedback → its status, in the order given
            for feedback_id in feedback_ids:
                found = await db.fetchval(
                    "SELECT status FROM feedbacks WHERE feedback_id = $1 AND status IN ('pending', 'processing')"
                    " AND NOT EXISTS (SELECT 1 FROM generated_rules WHERE feedback_id = $1)",
                    feedback_id,
                )
                if found is not None:
                    eligible.setdefault(feedback_id, found)
            if not eligible:
                return attached
            # the status changes (each bumps its feedback type's counters) in one order of types
            for (feedback_id,) in await db.fetch(
                "SELECT feedback_id FROM feedbacks WHERE feedback_id = ANY($1::text[]) ORDER BY feedback_type, id",
                list(eligible),
            ):
                await db.execute(
                    "UPDATE feedbacks SET status = 'processed', updated_at = $1, generation_lease_until = NULL"
                    " WHERE feedback_id = $2",
                    ts(now),
                    feedback_id,
                )
            audits = AuditTrail()
            for feedback_id, status in eligible.items():
                await db.execute(
                    "INSERT INTO rule_feedbacks (rule_id, feedback_id) VALUES ($1, $2)", rule_id, feedback_id
                )
                audits.add(
                    now=now,
                    actor=actor_id,
                    action="feedback_clustered",
                    subject_id=feedback_id,
                    from_state=status,
                    to_state="processed",
                    detail={"rule_id": rule_id},
                )
                attached.append(feedback_id)
            await db.execute(
                "UPDATE generated_rules SET cluster_size = cluster_size + $1, updated_at = $2 WHERE rule_id = $3",
                len(attached),
                ts(now),
                rule_id,
            )
            await audits.write(db)
            await _changed(db, rule_id, event, now)
        return attached

    async def cluster_feedback_texts(self, rule_id: str, limit: int = 5) -> list[str]:
        """The feedback texts a rule answers besides its own (the same complaint, attached), newest first."""
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT f.feedback_text FROM rule_feedbacks rf JOIN feedbacks f ON f.feedback_id = rf.feedback_id"
                " WHERE rf.rule_id = $1 ORDER BY f.id DESC LIMIT $2",
                rule_id,
                limit,
            )
            return [row[0] for row in rows]
