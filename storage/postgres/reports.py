"""Read-only figures: the status counts, the audit log, and what monitoring's metrics and digest need.

As storage/sqlite/reports.py, query by query; what differs is PostgreSQL's: `$n` parameters, `COUNT(*)
FILTER (WHERE …)` for SQLite's sum of a comparison, and the seconds to approve worked out the way SQLite's
`julianday` does (each time rounded to the millisecond), so that both backends give the same figures.
"""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from autotrain.models import AuditEntry, FeedbackStatus, FeedbackType, PipelineCounts, RuleStatus
from autotrain.monitoring import CanaryRule, DigestData, DigestRule, MetricsData
from autotrain.pagination import Cursor, Order
from autotrain.ports import Page
from storage.postgres.connection import PostgresConnection, ts
from storage.postgres.queries import count, figures, grouped, keyset, paged, where

_APPLIED = "SELECT COUNT(*) FROM deployments WHERE state = 'applied'"
_UNCOMMITTED = "FROM deployments WHERE state = 'applied' AND commit_sha IS NULL AND commit_error IS NOT NULL"
# a push was tried and failed (a deployment from before AUTOTRAIN_GIT_REMOTE was set, never tried, is not counted)
_UNPUSHED = "FROM deployments WHERE commit_sha IS NOT NULL AND pushed_at IS NULL AND push_error IS NOT NULL"
_OLDEST_PENDING = "SELECT feedback_id, created_at FROM feedbacks WHERE status = 'pending' ORDER BY id LIMIT 1"
# SQLite's julianday keeps whole milliseconds (each time rounded half up): the same here, in exact numerics
_MS = "round(EXTRACT(EPOCH FROM {}) * 1000)"
_APPROVAL_SECONDS = (
    f"SELECT ({_MS.format('approved_at')} - {_MS.format('created_at')}) / 1000.0 FROM generated_rules"
    " WHERE approved_at >= $1 AND approved_at {} $2"
)


async def _approval_seconds(
    db: asyncpg.Connection, start: datetime, end: datetime, *, end_inclusive: bool = True
) -> list[float]:
    """Seconds from creation to approval of the rules approved in [start, end]."""
    rows = await db.fetch(_APPROVAL_SECONDS.format("<=" if end_inclusive else "<"), ts(start), ts(end))
    return [round(float(row[0]), 3) for row in rows]


def _each_rule_once(rows: list[asyncpg.Record]) -> list[DigestRule]:
    """The deployed rules of a period, each once (a canary and its promotion are two deployments of one rule),
    in the order of their first deployment; a no-op deployment (its line was already in the file) marks it."""
    rules: dict[str, DigestRule] = {}
    for rule_id, module_name, new_rule, channel, message_ts, outcome, status in rows:
        seen = rules.get(rule_id)
        if seen is None:
            rules[rule_id] = DigestRule(
                rule_id=rule_id,
                module_name=module_name,
                new_rule=new_rule,
                channel=channel,
                message_ts=message_ts,
                outcome=outcome,
                status=status,
            )
        elif not seen.noop:
            seen.outcome = outcome
    return list(rules.values())


class ReportMixin(PostgresConnection):
    async def counts(self, *, since: datetime) -> PipelineCounts:
        async with self._read() as db:
            maintained = await figures(db)
            deployed_since = await count(db, f"{_APPLIED} AND rollback_of IS NULL AND deployed_at >= $1", (ts(since),))
            uncommitted = await count(db, f"SELECT COUNT(*) {_UNCOMMITTED}")
            last_error = await db.fetchval(f"SELECT commit_error {_UNCOMMITTED} ORDER BY id DESC LIMIT 1")
        return PipelineCounts(
            feedback_by_status=maintained.feedback_by_status(),
            feedback_by_type=maintained.feedback_by_type(),
            rules_by_status=maintained.rules_by_status(),
            deployments_total=maintained.deployments(rollback=False),
            deployed_since=deployed_since,
            rollbacks_total=maintained.deployments(rollback=True),
            uncommitted_deployments=uncommitted,
            last_commit_error=last_error,
        )

    async def list_audit(
        self, *, subject_id: str | None, limit: int, offset: int, cursor: Cursor | None = None
    ) -> Page[AuditEntry]:
        condition, args = where(("subject_id", subject_id))
        tail, tail_args = keyset("id", condition, args, cursor=cursor, order=Order.OLDEST, limit=limit, offset=offset)
        async with self._read() as db:
            if subject_id is None:
                total = (await figures(db, "audit")).get("audit")
            else:
                total = await count(db, f"SELECT COUNT(*) FROM audit_log {condition}", args)
            rows = await db.fetch(f"SELECT * FROM audit_log {tail}", *tail_args)
        entries = [
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
        ]
        return paged(entries, [row["id"] for row in rows], total=total, limit=limit, offset=offset, order=Order.OLDEST)

    async def metrics_data(
        self, *, now: datetime, error_window_start: datetime, day_start: datetime, approval_window_start: datetime
    ) -> MetricsData:
        async with self._read() as db:
            maintained = await figures(db)
            feedback_by_status, rules_by_status = maintained.feedback_by_status(), maintained.rules_by_status()
            oldest = await db.fetchrow(_OLDEST_PENDING)
            row = await db.fetchrow(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE outcome = 'failed') FROM generations"
                " WHERE at >= $1 AND at <= $2",
                ts(error_window_start),
                ts(now),
            )
            assert row is not None
            deployed_today = await count(
                db,
                f"{_APPLIED} AND rollback_of IS NULL AND deployed_at >= $1 AND deployed_at <= $2",
                (ts(day_start), ts(now)),
            )
            approvals = await _approval_seconds(db, approval_window_start, now)
            uncommitted = await count(db, f"SELECT COUNT(*) {_UNCOMMITTED}")
            unpushed = await count(db, f"SELECT COUNT(*) {_UNPUSHED}")
        return MetricsData(
            pending_feedback=feedback_by_status[FeedbackStatus.PENDING.value],
            oldest_pending_feedback_id=oldest[0] if oldest else None,
            oldest_pending_at=oldest[1] if oldest else None,
            pending_rules=rules_by_status[RuleStatus.PENDING.value],
            feedback_by_status=feedback_by_status,
            feedback_by_type=maintained.feedback_by_type(),
            rules_by_status=rules_by_status,
            generation_attempts=int(row[0]),
            generation_failures=int(row[1]),
            deployed_today=deployed_today,
            approval_seconds=approvals,
            uncommitted_deployments=uncommitted,
            unpushed_deployments=unpushed,
        )

    async def digest_data(self, *, start: datetime, end: datetime) -> DigestData:
        period = (ts(start), ts(end))
        async with self._read() as db:
            by_type = await grouped(
                db,
                "SELECT feedback_type, COUNT(*) FROM feedbacks WHERE created_at >= $1 AND created_at < $2"
                " GROUP BY feedback_type",
                period,
            )

            async def rules_where(column: str) -> int:
                return await count(
                    db, f"SELECT COUNT(*) FROM generated_rules WHERE {column} >= $1 AND {column} < $2", period
                )

            generated = await rules_where("created_at")
            approved = await rules_where("approved_at")
            rejected = await rules_where("rejected_at")
            in_period = f"{_APPLIED} AND deployed_at >= $1 AND deployed_at < $2"
            rolled_back = await count(db, in_period + " AND rollback_of IS NOT NULL", period)
            maintained = await figures(db)
            pending_feedback = maintained.feedback(status=FeedbackStatus.PENDING)
            pending_rules = maintained.rules(status=RuleStatus.PENDING)
            oldest = await db.fetchrow(_OLDEST_PENDING)
            approvals = await _approval_seconds(db, start, end, end_inclusive=False)
            feedback = await db.fetch(
                "SELECT feedback_text, user_id FROM feedbacks WHERE created_at >= $1 AND created_at < $2 ORDER BY id",
                *period,
            )
            canaries = [
                CanaryRule(rule_id=r[0], module_name=r[1], rollout_percent=r[2])
                for r in await db.fetch(
                    "SELECT rule_id, module_name, rollout_percent FROM generated_rules"
                    " WHERE status = 'deployed' AND rollout_percent < 100 ORDER BY id"
                )
            ]
            # each deployment of the period (ix_deployments_applied_at: a range of the window), with its rule
            deployed_rules = _each_rule_once(
                await db.fetch(
                    "SELECT r.rule_id, r.module_name, r.new_rule, c.channel, c.message_ts, d.outcome, r.status"
                    " FROM deployments d"
                    " JOIN generated_rules r ON r.rule_id = d.rule_id"
                    " LEFT JOIN review_cards c ON c.rule_id = r.rule_id AND c.state = 'posted'"
                    " WHERE d.state = 'applied' AND d.rollback_of IS NULL AND d.deployed_at >= $1"
                    " AND d.deployed_at < $2"
                    " ORDER BY d.id",
                    *period,
                )
            )
        return DigestData(
            feedback_by_type={t.value: by_type.get(t.value, 0) for t in FeedbackType},
            rules_generated=generated,
            rules_approved=approved,
            rules_rejected=rejected,
            rules_deployed=len(deployed_rules),
            rules_rolled_back=rolled_back,
            pending_feedback=pending_feedback,
            pending_rules=pending_rules,
            oldest_pending_feedback_id=oldest[0] if oldest else None,
            oldest_pending_at=oldest[1] if oldest else None,
            approval_seconds=approvals,
            feedback_texts=[row[0] for row in feedback],
            feedback_users=[row[1] for row in feedback],
            canaries=canaries,
            deployed=deployed_rules,
        )
