"""One complaint, one rule: is a feedback the same complaint as the feedback of a rule under review (attach
it there), or of a deployed rule (a recurrence: the rule did not prevent it)? Also: a proposed line that a
rule under review already proposes.

The measure is clustering's (character n-gram TF-IDF, accent-insensitive, single link at
AUTOTRAIN_CLUSTER_THRESHOLD), weighted by the stored corpus's document frequencies so that it does not
shift with what else is in a batch; run-all groups with the same measure. Only feedback of the same type is
compared; praise never is."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from autotrain.clustering import ComplaintIndex, DocumentFrequencies, best_match, complaint_text, ngrams
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


COMPARED = (*UNDER_REVIEW, RuleStatus.DEPLOYED)
CATCH_UP_MAX = 200  # rules changed since the index was built that it takes in one by one (more: built again)
REFRESH_SECONDS = 60.0  # what other instances attached is seen by this one's index within this long
REWEIGH_GROWTH = 0.10  # the stored texts are weighed again once the corpus grew by this share


@dataclass(frozen=True)
class _ComplaintIndex:
    """The rules a new feedback is compared with, as of `version`, and their texts indexed."""

    version: int
    built_at: float
    candidates: dict[str, ComplaintCandidate]
    index: ComplaintIndex


def _index_of(
    frequencies: DocumentFrequencies, found: Sequence[ComplaintCandidate], grams: dict[str, list[Counter[str]]]
) -> ComplaintIndex:
    index = ComplaintIndex(frequencies)
    for candidate in found:
        for counted in grams[candidate.rule.rule_id]:
            index.add(candidate.rule.rule_id, counted)
    index.seal()
    return index


def _caught_up(current: _ComplaintIndex, version: int, changed: Sequence[ComplaintCandidate]) -> _ComplaintIndex:
    """The index with the rules changed since it was built: one now compared with has its texts added (once),
    one that left the compared states is dropped (its rows stay, never allowed again)."""
    candidates = dict(current.candidates)
    for candidate in changed:
        rule_id = candidate.rule.rule_id
        if candidate.rule.status not in COMPARED:
            candidates.pop(rule_id, None)
            continue
        if rule_id not in candidates:
            for text in candidate.texts:
                current.index.add(rule_id, text)
        candidates[rule_id] = candidate
    return _ComplaintIndex(version, current.built_at, candidates, current.index)


class Complaints:
    def __init__(self, *, complaints: ComplaintStore, options: PipelineOptions) -> None:
        self.complaints = complaints
        self.options = options
        self._index: _ComplaintIndex | None = None
        self._building = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.options.cluster_threshold is not None

    async def match(self, feedback: Feedback, *, deployed: bool = True) -> ComplaintMatch:
        """The rule under review and the deployed rule whose feedback is this same complaint, if any."""
        if not self.enabled or feedback.feedback_type is FeedbackType.PRAISE:
            return ComplaintMatch()
        current = await self._current()
        if not current.candidates:
            return ComplaintMatch()
        text = complaint_text(feedback.feedback_text, feedback.query)
        frequencies = await self.complaints.document_frequencies([text])
        if frequencies.documents > current.index.frequencies.documents * (1 + REWEIGH_GROWTH) + 100:
            self._index = None  # weighed with a corpus much smaller than today's: rebuilt on the next call

        def nearest(statuses: Sequence[RuleStatus]) -> Rule | None:
            def allowed(rule_id: str) -> bool:
                candidate = current.candidates[rule_id]
                return (
                    candidate.rule.status in statuses
                    and candidate.feedback_type is feedback.feedback_type
                    and candidate.rule.feedback_id != feedback.feedback_id
                )

            found = current.index.best(text, frequencies, threshold=self._threshold(), allowed=allowed)
            return current.candidates[found[0]].rule if found else None

        return ComplaintMatch(
            under_review=nearest(UNDER_REVIEW),
            deployed=nearest((RuleStatus.DEPLOYED,)) if deployed else None,
        )

    def remember(self, rule_id: str, feedback: Feedback) -> None:
        """A feedback this process attached to a rule, or marked as its recurrence: compared with from now on
        (another instance's index takes it in at its next rebuild)."""
        current = self._index
        if current is not None and rule_id in current.candidates:
            current.index.add(rule_id, complaint_text(feedback.feedback_text, feedback.query))

    async def warm(self) -> None:
        """Build the index now (serve does, at start), so that the first feedback does not wait for it."""
        if self.enabled:
            await self._current()

    async def _current(self) -> _ComplaintIndex:
        """The index: caught up with the rules changed since it was built (the store keeps a version of which
        rules to compare with); built again when it is older than REFRESH_SECONDS (what other instances
        attached), when many rules changed, or when the corpus grew enough to change the weights."""
        version = await self.complaints.complaint_version()
        if self._fresh(version):
            assert self._index is not None
            return self._index
        async with self._building:  # one build at a time; the others use it
            if self._fresh(version):
                assert self._index is not None
                return self._index
            current = self._index
            if current is not None and time.monotonic() - current.built_at < REFRESH_SECONDS:
                changed = await self.complaints.complaint_candidates(COMPARED, changed_since=current.version)
                if len(changed) <= CATCH_UP_MAX:
                    self._index = _caught_up(current, version, changed)
                    return self._index
            built_at = time.monotonic()
            found = await self.complaints.complaint_candidates(COMPARED)
            # the counting off the event loop: a big corpus takes seconds, and requests go on meanwhile
            grams = await asyncio.to_thread(lambda: {c.rule.rule_id: [ngrams(t) for t in c.texts] for c in found})
            frequencies = await self.complaints.document_frequencies(
                [], grams={gram for counted in grams.values() for each in counted for gram in each}
            )
            index = await asyncio.to_thread(_index_of, frequencies, found, grams)
            self._index = _ComplaintIndex(version, built_at, {c.rule.rule_id: c for c in found}, index)
            return self._index

    def _fresh(self, version: int) -> bool:
        current = self._index
        return (
            current is not None and current.version == version and time.monotonic() - current.built_at < REFRESH_SECONDS
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
