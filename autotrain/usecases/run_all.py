"""Run-all: a rule for every pending feedback, a bounded number at a time, near-duplicates grouped first.

Near-duplicate feedback is grouped (character n-gram TF-IDF, accent-insensitive): one rule is generated for
each group, and the group's other feedback is attached to it instead of making N near-identical rules. If
that one generation fails, the whole group stays pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from autotrain.clustering import FeedbackText, cluster_feedback, complaint_text
from autotrain.errors import AutotrainError, TransitionRefused
from autotrain.models import EventKind, FeedbackType, NewEvent, RuleCluster, RunAllSummary
from autotrain.options import Clock, PipelineOptions
from autotrain.policy import Action, Actor, require_permission
from autotrain.ports import ComplaintStore, FeedbackStore, RuleStore
from autotrain.usecases.generation import GenerateRules
from autotrain.usecases.lookup import feedback_or_404

log = logging.getLogger("autotrain.run_all")

# (done, total, errors so far), after each group
ProgressCallback = Callable[[int, int, list[dict[str, str]]], Awaitable[None]]
# (total): once, after the permission check and before any generation (where to post a progress message)
StartCallback = Callable[[int], Awaitable[None]]


class RunAll:
    def __init__(
        self,
        *,
        feedback: FeedbackStore,
        rules: RuleStore,
        complaints: ComplaintStore,
        generation: GenerateRules,
        clock: Clock,
        options: PipelineOptions,
        wake: Callable[[], None],
    ) -> None:
        self.feedback = feedback
        self.rules = rules
        self.complaints = complaints
        self.generation = generation
        self.clock = clock
        self.options = options
        self.wake = wake

    async def run_all(
        self, actor: Actor, on_progress: ProgressCallback | None = None, on_start: StartCallback | None = None
    ) -> RunAllSummary:
        require_permission(actor, Action.RUN_ALL)
        feedback_ids = await self.feedback.pending_feedback_ids(now=self.clock())
        if on_start is not None:
            await on_start(len(feedback_ids))
        groups = await self._group_pending(feedback_ids)
        semaphore = asyncio.Semaphore(self.options.run_all_concurrency)
        created: list[str] = []
        skipped: list[str] = []
        errors: list[dict[str, str]] = []
        clusters: list[RuleCluster] = []
        done = 0

        async def process(group: tuple[str, ...]) -> None:
            nonlocal done
            representative, others = group[0], list(group[1:])
            async with semaphore:
                try:
                    rule = await self.generation.generate(representative, actor)
                    created.append(rule.rule_id)
                    if others:
                        attached = await self.rules.attach_feedback(
                            rule.rule_id,
                            others,
                            actor_id=actor.id,
                            now=self.clock(),
                            event=NewEvent(kind=EventKind.RULE_GROUPED, actor_id=actor.id),
                        )
                        if attached:
                            clusters.append(RuleCluster(rule_id=rule.rule_id, feedback_ids=[representative, *attached]))
                            self.wake()
                except TransitionRefused:
                    skipped.append(representative)
                except AutotrainError as exc:
                    errors.append({"feedback_id": representative, "error": exc.message})
                done += len(group)
                if on_progress is not None:
                    try:
                        await on_progress(done, len(feedback_ids), list(errors))
                    except Exception:
                        log.exception("run-all progress report failed")

        await asyncio.gather(*(process(group) for group in groups))
        return RunAllSummary(
            total=len(feedback_ids),
            processed=len(created) + len(skipped) + sum(len(c.feedback_ids) - 1 for c in clusters),
            rules_created=sorted(created),
            skipped=sorted(skipped),
            errors=sorted(errors, key=lambda e: e["feedback_id"]),
            clusters=sorted(clusters, key=lambda c: c.rule_id),
        )

    async def _group_pending(self, feedback_ids: list[str]) -> list[tuple[str, ...]]:
        """Pending feedback in groups of near-duplicates (praise and type apart); singletons when off."""
        threshold = self.options.cluster_threshold
        if threshold is None:
            return [(feedback_id,) for feedback_id in feedback_ids]
        by_type: dict[FeedbackType, list[FeedbackText]] = {}
        for feedback_id in feedback_ids:
            feedback = await feedback_or_404(self.feedback, feedback_id)
            by_type.setdefault(feedback.feedback_type, []).append(
                FeedbackText(feedback_id, complaint_text(feedback.feedback_text, feedback.query))
            )
        # weighted by the stored corpus, as intake compares (autotrain/usecases/complaints.py): a group does
        # not shift with what else is pending
        frequencies = await self.complaints.document_frequencies(
            [item.text for kind, items in by_type.items() if kind is not FeedbackType.PRAISE for item in items]
        )
        groups: list[tuple[str, ...]] = []
        for kind, items in by_type.items():
            if kind is FeedbackType.PRAISE:
                groups += [(item.feedback_id,) for item in items]
            else:
                clusters = cluster_feedback(items, threshold=threshold, frequencies=frequencies)
                groups += [cluster.feedback_ids for cluster in clusters]
        order = {feedback_id: i for i, feedback_id in enumerate(feedback_ids)}
        return sorted(groups, key=lambda group: order[group[0]])
