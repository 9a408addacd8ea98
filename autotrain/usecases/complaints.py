"""One complaint, one rule: is a feedback the same complaint as the feedback of a rule under review (attach
it there), or of a deployed rule (a recurrence: the rule did not prevent it)? Also: a proposed line that a
rule under review already proposes.

The measure is clustering's (character n-gram TF-IDF, accent-insensitive, single link at
AUTOTRAIN_CLUSTER_THRESHOLD), weighted by the stored corpus's document frequencies so that it does not
shift with what else is in a batch; run-all groups with the same measure. Only feedback of the same type is
compared; praise never is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from autotrain.clustering import best_match, complaint_text
from autotrain.models import EventKind, Feedback, FeedbackType, NewEvent, Rule, RuleProposal, RuleStatus
from autotrain.options import PipelineOptions
from autotrain.policy import SYSTEM_ACTOR
from autotrain.ports import ComplaintCandidate, ComplaintStore
from autotrain.rulefiles import same_rule

UNDER_REVIEW = (RuleStatus.PENDING, RuleStatus.APPROVED)


@dataclass(frozen=True)
class ComplaintMatch:
    under_review: Rule | None = None  # attach the feedback to this rule instead of making another
    deployed: Rule | None = None  # the feedback is a recurrence of this deployed rule's complaint


class Complaints:
    def __init__(self, *, complaints: ComplaintStore, options: PipelineOptions) -> None:
        self.complaints = complaints
        self.options = options

    @property
    def enabled(self) -> bool:
        return self.options.cluster_threshold is not None

    async def match(self, feedback: Feedback, *, deployed: bool = True) -> ComplaintMatch:
        """The rule under review and the deployed rule whose feedback is this same complaint, if any."""
        if not self.enabled or feedback.feedback_type is FeedbackType.PRAISE:
            return ComplaintMatch()
        statuses = (*UNDER_REVIEW, RuleStatus.DEPLOYED) if deployed else UNDER_REVIEW
        candidates = [
            c
            for c in await self.complaints.complaint_candidates(statuses)
            if c.feedback_type is feedback.feedback_type and c.rule.feedback_id != feedback.feedback_id
        ]
        if not candidates:
            return ComplaintMatch()
        text = complaint_text(feedback.feedback_text, feedback.query)
        frequencies = await self.complaints.document_frequencies([text, *(t for c in candidates for t in c.texts)])

        def nearest(group: list[ComplaintCandidate]) -> Rule | None:
            found = best_match(
                text, [(c.rule.rule_id, c.texts) for c in group], frequencies, threshold=self._threshold()
            )
            return next(c.rule for c in group if c.rule.rule_id == found[0]) if found else None

        return ComplaintMatch(
            under_review=nearest([c for c in candidates if c.rule.status in UNDER_REVIEW]),
            deployed=nearest([c for c in candidates if c.rule.status is RuleStatus.DEPLOYED]),
        )

    async def mark_recurrence(self, feedback_id: str, rule_id: str, *, now: datetime) -> bool:
        """Record the feedback as a recurrence of deployed rule `rule_id`: its card and webhooks are told."""
        event = NewEvent(kind=EventKind.RULE_RECURRED, actor_id=SYSTEM_ACTOR.id)
        marked = await self.complaints.mark_recurrence(
            feedback_id, rule_id, actor_id=SYSTEM_ACTOR.id, now=now, event=event
        )
        return marked is not None

    async def same_complaint_in(self, feedback: Feedback, others: Sequence[Feedback]) -> Feedback | None:
        """The first of `others` (feedback being generated right now) that is this same complaint."""
        if not self.enabled or feedback.feedback_type is FeedbackType.PRAISE:
            return None
        group = [o for o in others if o.feedback_type is feedback.feedback_type]
        if not group:
            return None
        text = complaint_text(feedback.feedback_text, feedback.query)
        texts = {o.feedback_id: complaint_text(o.feedback_text, o.query) for o in group}
        frequencies = await self.complaints.document_frequencies([text, *texts.values()])
        ranked = [(o.feedback_id, [texts[o.feedback_id]]) for o in group]
        found = best_match(text, ranked, frequencies, threshold=self._threshold())
        return next(o for o in group if o.feedback_id == found[0]) if found else None

    async def rule_proposing(self, proposal: RuleProposal) -> Rule | None:
        """A rule under review that proposes this same line in this same file (fold the two together)."""
        if not self.enabled:
            return None
        for candidate in await self.complaints.complaint_candidates(UNDER_REVIEW, with_texts=False):
            rule = candidate.rule
            if rule.module_name == proposal.module_name and same_rule(rule.new_rule, proposal.new_rule):
                return rule
        return None

    def _threshold(self) -> float:
        assert self.options.cluster_threshold is not None
        return self.options.cluster_threshold
