"""The maintained figures (counters the triggers of either store keep in the transaction of every change: SQLite's
migration 14, PostgreSQL's schema), as both stores read them: one query, then these sums."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from autotrain.models import FeedbackStatus, FeedbackType, RuleStatus


@dataclass(frozen=True)
class Figures:
    values: dict[str, int]
    _rules: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def of(cls, values: dict[str, int]) -> Figures:
        rules: dict[tuple[str, str], int] = defaultdict(int)
        for name, n in values.items():
            if name.startswith("rule|"):
                _, status, module = name.split("|", 2)
                rules[(status, module)] += n
        return cls(values, dict(rules))

    def get(self, name: str) -> int:
        return self.values.get(name, 0)

    def feedback(self, status: FeedbackStatus | None = None, feedback_type: FeedbackType | None = None) -> int:
        statuses = [status] if status is not None else list(FeedbackStatus)
        types = [feedback_type] if feedback_type is not None else list(FeedbackType)
        return sum(self.get(f"feedback|{s.value}|{t.value}") for s in statuses for t in types)

    def rules(self, status: RuleStatus | None = None, module_name: str | None = None) -> int:
        return sum(
            n
            for (s, module), n in self._rules.items()
            if (status is None or s == status.value) and (module_name is None or module == module_name)
        )

    def deployments(self, *, state: str = "applied", rollback: bool | None = None) -> int:
        kinds = ["deploy", "rollback"] if rollback is None else ["rollback" if rollback else "deploy"]
        return sum(self.get(f"deployment|{state}|{kind}") for kind in kinds)

    def feedback_by_status(self) -> dict[str, int]:
        return {s.value: self.feedback(status=s) for s in FeedbackStatus}

    def feedback_by_type(self) -> dict[str, int]:
        return {t.value: self.feedback(feedback_type=t) for t in FeedbackType}

    def rules_by_status(self) -> dict[str, int]:
        return {s.value: self.rules(status=s) for s in RuleStatus}
