"""Evaluations of rules (replay before deploy) and the feedback they replay."""

from __future__ import annotations

import json
from datetime import datetime

from autotrain.evaluation import Evaluation
from autotrain.models import Feedback, NewEvent, Rule, RuleWarning
from storage.sqlite.connection import SqliteConnection, ts
from storage.sqlite.events import insert_event
from storage.sqlite.figures import figures
from storage.sqlite.queries import FEEDBACK_SELECT, audit, feedback_row, rule_in, rule_row


class EvaluationMixin(SqliteConnection):
    async def save_evaluation(self, evaluation: Evaluation, *, event: NewEvent | None = None) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO evaluations (rule_id, rule_version, status, body, tokens, latency_ms, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    evaluation.rule_id,
                    evaluation.rule_version,
                    evaluation.status.value,
                    evaluation.model_dump_json(),
                    evaluation.tokens,
                    evaluation.latency_ms,
                    ts(evaluation.at),
                ),
            )
            if evaluation.conflicts:
                rule = await rule_in(db, evaluation.rule_id)
                if rule is not None and RuleWarning.CONFLICTS_WITH_RULE not in rule.warnings:
                    warnings = [w.value for w in rule.warnings] + [RuleWarning.CONFLICTS_WITH_RULE.value]
                    await db.execute(
                        "UPDATE generated_rules SET warnings = ? WHERE rule_id = ?",
                        (json.dumps(warnings), evaluation.rule_id),
                    )
            if event is not None:
                rule = await rule_in(db, evaluation.rule_id)
                if rule is not None:
                    await insert_event(db, event, rule, now=evaluation.at)

    async def latest_evaluation(self, rule_id: str, rule_version: str | None = None) -> Evaluation | None:
        """The rule's newest evaluation (of that candidate version, when given)."""
        sql = "SELECT body FROM evaluations WHERE rule_id = ?"
        args: tuple[str, ...] = (rule_id,)
        if rule_version is not None:
            sql += " AND rule_version = ?"
            args += (rule_version,)
        async with self._read() as db:
            cursor = await db.execute(sql + " ORDER BY id DESC LIMIT 1", args)
            row = await cursor.fetchone()
        return Evaluation.model_validate_json(row[0]) if row else None

    async def group_feedback(self, rule_id: str, *, limit: int) -> list[Feedback]:
        """The rule's own feedback first, then the feedback attached to it (newest first)."""
        async with self._read() as db:
            cursor = await db.execute(
                FEEDBACK_SELECT + " WHERE f.feedback_id = (SELECT feedback_id FROM generated_rules WHERE rule_id = ?)"
                " OR f.feedback_id IN (SELECT feedback_id FROM rule_feedbacks WHERE rule_id = ?)"
                " ORDER BY (f.feedback_id = (SELECT feedback_id FROM generated_rules WHERE rule_id = ?)) DESC,"
                " f.id DESC LIMIT ?",
                (rule_id, rule_id, rule_id, limit),
            )
            return [feedback_row(row) for row in await cursor.fetchall()]

    async def earlier_fixes(self, module_name: str, *, exclude: str, limit: int) -> list[tuple[Rule, Feedback]]:
        """Deployed rules of the same file (newest first) with the feedback each was made from."""
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT * FROM generated_rules WHERE module_name = ? AND status = 'deployed' AND rule_id != ?"
                " ORDER BY deployed_at DESC LIMIT ?",
                (module_name, exclude, limit),
            )
            rules = [rule_row(row) for row in await cursor.fetchall()]
            found = []
            for rule in rules:
                cursor = await db.execute(FEEDBACK_SELECT + " WHERE f.feedback_id = ?", (rule.feedback_id,))
                row = await cursor.fetchone()
                if row is not None:
                    found.append((rule, feedback_row(row)))
            return found

    async def praised_feedback(self, *, limit: int) -> list[Feedback]:
        async with self._read() as db:
            cursor = await db.execute(
                FEEDBACK_SELECT + " WHERE f.feedback_type = 'praise' ORDER BY f.id DESC LIMIT ?", (limit,)
            )
            return [feedback_row(row) for row in await cursor.fetchall()]

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
