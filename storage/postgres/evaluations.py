"""Evaluations of rules (replay before deploy) and the feedback they replay. storage/sqlite/evaluations.py in
PostgreSQL's dialect; the schema's trigger on evaluations fills the rule's `conflicts_with_rule` detail, as
migration 17's does on SQLite."""

from __future__ import annotations

import json
from datetime import datetime

from autotrain.evaluation import Evaluation
from autotrain.models import Feedback, NewEvent, Rule, RuleWarning
from storage.postgres.connection import PostgresConnection, ts
from storage.postgres.events import insert_event
from storage.postgres.queries import FEEDBACK_SELECT, audit, feedback_row, figures, rule_in, rule_row


class EvaluationMixin(PostgresConnection):
    async def save_evaluation(self, evaluation: Evaluation, *, event: NewEvent | None = None) -> None:
        async with self._tx() as db:
            # the rule's row before the insert's counters and its trigger's update of the rule (rows first)
            await db.execute("SELECT 1 FROM generated_rules WHERE rule_id = $1 FOR NO KEY UPDATE", evaluation.rule_id)
            await db.execute(
                "INSERT INTO evaluations (rule_id, rule_version, status, body, tokens, latency_ms, at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                evaluation.rule_id,
                evaluation.rule_version,
                evaluation.status.value,
                evaluation.model_dump_json(),
                evaluation.tokens,
                evaluation.latency_ms,
                ts(evaluation.at),
            )
            if evaluation.conflicts:
                rule = await rule_in(db, evaluation.rule_id)
                if rule is not None and RuleWarning.CONFLICTS_WITH_RULE not in rule.warnings:
                    warnings = [w.value for w in rule.warnings] + [RuleWarning.CONFLICTS_WITH_RULE.value]
                    await db.execute(
                        "UPDATE generated_rules SET warnings = $1 WHERE rule_id = $2",
                        json.dumps(warnings),
                        evaluation.rule_id,
                    )
            if event is not None:
                rule = await rule_in(db, evaluation.rule_id)
                if rule is not None:
                    await insert_event(db, event, rule, now=evaluation.at)

    async def latest_evaluation(self, rule_id: str, rule_version: str | None = None) -> Evaluation | None:
        """The rule's newest evaluation (of that candidate version, when given)."""
        sql = "SELECT body FROM evaluations WHERE rule_id = $1"
        args: tuple[str, ...] = (rule_id,)
        if rule_version is not None:
            sql += " AND rule_version = $2"
            args += (rule_version,)
        async with self._read() as db:
            body = await db.fetchval(sql + " ORDER BY id DESC LIMIT 1", *args)
        return Evaluation.model_validate_json(body) if body is not None else None

    async def group_feedback(self, rule_id: str, *, limit: int) -> list[Feedback]:
        """The rule's own feedback first, then the feedback attached to it (newest first)."""
        async with self._read() as db:
            rows = await db.fetch(
                FEEDBACK_SELECT + " WHERE f.feedback_id = (SELECT feedback_id FROM generated_rules WHERE rule_id = $1)"
                " OR f.feedback_id IN (SELECT feedback_id FROM rule_feedbacks WHERE rule_id = $1)"
                " ORDER BY (f.feedback_id = (SELECT feedback_id FROM generated_rules WHERE rule_id = $1)) DESC,"
                " f.id DESC LIMIT $2",
                rule_id,
                limit,
            )
            return [feedback_row(row) for row in rows]

    async def earlier_fixes(self, module_name: str, *, exclude: str, limit: int) -> list[tuple[Rule, Feedback]]:
        """Deployed rules of the same file (newest first) with the feedback each was made from."""
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT * FROM generated_rules WHERE module_name = $1 AND status = 'deployed' AND rule_id != $2"
                " ORDER BY deployed_at DESC LIMIT $3",
                module_name,
                exclude,
                limit,
            )
            rules = [rule_row(row) for row in rows]
            found = []
            for rule in rules:
                row = await db.fetchrow(FEEDBACK_SELECT + " WHERE f.feedback_id = $1", rule.feedback_id)
                if row is not None:
                    found.append((rule, feedback_row(row)))
            return found

    async def praised_feedback(self, *, limit: int) -> list[Feedback]:
        async with self._read() as db:
            rows = await db.fetch(
                FEEDBACK_SELECT + " WHERE f.feedback_type = 'praise' ORDER BY f.id DESC LIMIT $1", limit
            )
            return [feedback_row(row) for row in rows]

    async def evaluation_totals(self) -> dict[str, int]:
        """Evaluations by status, and the tokens and milliseconds they spent (apart from generation)."""
        async with self._read() as db:
            maintained = await figures(db, "evaluation")
        totals = {"runs": 0, "tokens": 0, "latency_ms": 0, "passed": 0, "failed": 0, "skipped": 0, "error": 0}
        for name, n in maintained.values.items():
            kind, status = name.split("|", 1)
            if kind == "evaluation":
                totals[status] = n
                totals["runs"] += n
            else:
                totals["tokens" if kind == "evaluation_tokens" else "latency_ms"] += n
        return totals

    async def record_evaluation_gate(
        self, rule_id: str, *, actor_id: str, status: str, overridden: bool, now: datetime
    ) -> None:
        async with self._tx() as db:
            await audit(
                db,
                now=now,
                actor=actor_id,
                action="evaluation_overridden" if overridden else "deploy_refused_evaluation",
                subject_id=rule_id,
                detail={"evaluation": status},
            )
