"""A rule generator a test can swap while the runtime runs (the real one, then a failing one, then back)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autotrain.models import Feedback, Rule
from autotrain.ports import GenerationResult, RuleGenerator


class SwitchableGenerator:
    """Passed to `open_runtime(generator=...)`; every generation goes to `inner`, which a test may replace."""

    def __init__(self, inner: RuleGenerator) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def quotes_feedback(self) -> bool:
        return self.inner.quotes_feedback

    async def generate(
        self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]], *, recurrence: Rule | None = None
    ) -> GenerationResult:
        return await self.inner.generate(feedback, current_rules, recurrence=recurrence)
