"""The offline rule generator: known patterns first, otherwise a specific draft rule built from the feedback."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from autotrain.generators.patterns import (
    DEFAULT_MODULE,
    HEURISTIC_PATTERNS,
    MODULE_KEYWORDS,
    HeuristicPattern,
)
from autotrain.models import Feedback, FeedbackType, GenerationInfo, Rule, RuleProposal
from autotrain.ports import GenerationResult
from autotrain.text import PhraseMatcher, looks_vietnamese, shorten

DRAFT_CONFIDENCE = {FeedbackType.BUG: 0.4, FeedbackType.SUGGESTION: 0.45, FeedbackType.PRAISE: 0.3}


class HeuristicRuleGenerator:
    name = "heuristic"
    quotes_feedback = True  # its drafts quote the complaint on purpose, for an admin to rewrite

    def __init__(
        self,
        allowed_modules: Sequence[str],
        patterns: Sequence[HeuristicPattern] = HEURISTIC_PATTERNS,
    ) -> None:
        self.allowed_modules = tuple(allowed_modules)
        self.patterns = tuple(patterns)
        # phrase lists prepared once, not per feedback
        self._matchers = [
            (pattern, PhraseMatcher(pattern.feedback_any), PhraseMatcher(pattern.context_any))
            for pattern in self.patterns
            if pattern.module_name in self.allowed_modules
        ]
        self._module_keywords = [
            (module_name, PhraseMatcher(keywords))
            for module_name, keywords in MODULE_KEYWORDS.items()
            if module_name in self.allowed_modules
        ]

    async def generate(
        self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]], *, recurrence: Rule | None = None
    ) -> GenerationResult:
        started = time.perf_counter()
        proposal = self.propose(feedback)
        latency_ms = int((time.perf_counter() - started) * 1000)
        return GenerationResult(proposal, GenerationInfo(generator=self.name, latency_ms=latency_ms))

    def matching_pattern(self, feedback: Feedback) -> HeuristicPattern | None:
        context = f"{feedback.query} {feedback.ai_response}"
        for pattern, in_feedback, in_context in self._matchers:
            if not in_feedback.matches(feedback.feedback_text):
                continue
            if pattern.context_any and not in_context.matches(context):
                continue
            return pattern
        return None

    def propose(self, feedback: Feedback) -> RuleProposal:
        pattern = self.matching_pattern(feedback)
        if pattern is not None:
            return RuleProposal(
                module_name=pattern.module_name,
                rule_type=pattern.rule_type,
                old_rule=pattern.old_rule,
                new_rule=pattern.new_rule,
                reasoning=pattern.reasoning,
                confidence=pattern.confidence,
            )
        module_name = self.choose_module(feedback)
        return RuleProposal(
            module_name=module_name,
            new_rule=draft_rule(feedback),
            reasoning=(
                f"No known pattern matched this {feedback.feedback_type.value}; the draft turns the "
                f"feedback into an instruction for {module_name}. Edit it before approving."
            ),
            confidence=DRAFT_CONFIDENCE[feedback.feedback_type],
        )

    def choose_module(self, feedback: Feedback) -> str:
        text = f"{feedback.feedback_text} {feedback.query}"
        best, best_score = None, 0
        for module_name, keywords in self._module_keywords:
            score = keywords.count(text)
            if score > best_score:
                best, best_score = module_name, score
        if best is not None:
            return best
        return DEFAULT_MODULE if DEFAULT_MODULE in self.allowed_modules else self.allowed_modules[0]


def draft_rule(feedback: Feedback) -> str:
    """A readable instruction quoting the situation and the complaint, in the feedback's language."""
    query = shorten(feedback.query, 80)
    complaint = shorten(feedback.feedback_text, 160)
    vietnamese = looks_vietnamese(f"{feedback.feedback_text} {feedback.query}")
    if feedback.feedback_type is FeedbackType.PRAISE:
        if vietnamese:
            return f'- Khi khách hỏi "{query}": tiếp tục cách tư vấn được khách khen — "{complaint}"'
        return f'- When a customer asks "{query}": keep doing what the customer praised — "{complaint}"'
    if feedback.feedback_type is FeedbackType.SUGGESTION:
        if vietnamese:
            return f'- Khi khách hỏi "{query}": làm theo góp ý "{complaint}"'
        return f'- When a customer asks "{query}": follow the suggestion "{complaint}"'
    if vietnamese:
        return f'- Khi khách hỏi "{query}": tránh lỗi khách đã phản ánh — "{complaint}"'
    return f'- When a customer asks "{query}": avoid the reported problem — "{complaint}"'
