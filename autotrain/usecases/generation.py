"""Generation: the rule of one feedback, made once (never two at once, in this process or another), then
auto-approved (and auto-deployed) when the settings allow it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from autotrain.errors import AutotrainError, GenerationFailed, GenerationInProgress, TransitionRefused
from autotrain.evaluation import Evaluation
from autotrain.i18n import N_
from autotrain.models import (
    EventKind,
    Feedback,
    FeedbackStatus,
    FeedbackType,
    GenerationInfo,
    NewEvent,
    Rule,
    RuleStatus,
    RuleWarning,
)
from autotrain.options import Clock, PipelineOptions
from autotrain.policy import AUTO_APPROVER, SYSTEM_ACTOR, Action, Actor, auto_approval_refusal, require_permission
from autotrain.ports import FeedbackStore, GenerationLog, RuleGenerator, RuleStore
from autotrain.proposals import deployed_rule_ids, validate_proposal
from autotrain.rulefiles import RuleFiles
from autotrain.usecases.complaints import Complaints
from autotrain.usecases.deploys import DeployRules
from autotrain.usecases.lookup import feedback_or_404, rule_or_404

log = logging.getLogger("autotrain.generation")

PRAISE = "it is praise: recorded and counted, but no rule is generated from praise"


@dataclass(frozen=True)
class NoRule:
    """A generation that ended without a rule, and why (praise; declined by the generator)."""

    reason: str


class GenerateRules:
    def __init__(
        self,
        *,
        feedback: FeedbackStore,
        rules: RuleStore,
        generation_log: GenerationLog,
        generator: RuleGenerator,
        rule_files: RuleFiles,
        deploys: DeployRules,
        complaints: Complaints,
        clock: Clock,
        options: PipelineOptions,
        wake: Callable[[], None],
        evaluate: Callable[[str], Awaitable[Evaluation]] | None = None,
    ) -> None:
        self.evaluate = evaluate  # replay before review (usecases/evaluate.py), so auto-approve sees its result
        self.feedback = feedback
        self.complaints = complaints
        self.rules = rules
        self.generation_log = generation_log
        self.generator = generator
        self.rule_files = rule_files
        self.deploys = deploys
        self.clock = clock
        self.options = options
        self.wake = wake
        self._generations: dict[str, asyncio.Task[Rule | NoRule]] = {}
        self._generating: dict[str, Feedback] = {}  # in the order they started (see _rule_of_same_complaint)
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ in the background

    def generate_in_background(self, feedback_id: str) -> None:
        """Start a generation after the caller has answered; failures are recorded on the feedback."""
        task = asyncio.create_task(self._generate_quietly(feedback_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _generate_quietly(self, feedback_id: str) -> None:
        try:
            await self.generate(feedback_id, SYSTEM_ACTOR)
        except AutotrainError as exc:
            log.warning("background generation of %s: %s", feedback_id, exc.message)
        except Exception:
            log.exception("background generation of %s failed", feedback_id)

    async def drain(self) -> None:
        """Wait for background generations to finish."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ------------------------------------------------------------------ one feedback

    async def generate(self, feedback_id: str, actor: Actor) -> Rule:
        """The rule of this feedback: generated now, or the one it already has (never two at once)."""
        require_permission(actor, Action.GENERATE)
        feedback = await feedback_or_404(self.feedback, feedback_id)
        existing = await self.rules.get_rule_for_feedback(feedback_id)
        if existing is not None:
            return existing
        task = self._generations.get(feedback_id)
        if task is None:
            task = asyncio.create_task(self._generate_once(feedback))
            self._generations[feedback_id] = task
            self._generating[feedback_id] = feedback

            def forget(_: object) -> None:
                self._generations.pop(feedback_id, None)
                self._generating.pop(feedback_id, None)

            task.add_done_callback(forget)
        outcome = await asyncio.shield(task)
        if isinstance(outcome, NoRule):
            raise TransitionRefused(
                N_("no rule for {feedback_id}: {reason}"), feedback_id=feedback_id, reason=outcome.reason
            )
        return outcome

    async def _generate_once(self, feedback: Feedback) -> Rule | NoRule:
        feedback_id = feedback.feedback_id
        if feedback.status is FeedbackStatus.REJECTED:
            raise TransitionRefused(
                N_("{feedback_id} was rejected; no rule is generated from it"), feedback_id=feedback_id
            )
        if not await self._claim(feedback_id):
            return await self._wait_for_other_generation(feedback)
        return await self._generate_leased(feedback)

    async def _claim(self, feedback_id: str) -> bool:
        lease = self.options.generation_lease_seconds
        return await self.feedback.claim_feedback(feedback_id, now=self.clock(), lease_seconds=lease)

    async def _generate_leased(self, feedback: Feedback) -> Rule | NoRule:
        heartbeat = asyncio.create_task(self._keep_lease(feedback.feedback_id))
        try:
            return await self._generate_claimed(feedback)
        finally:
            heartbeat.cancel()

    async def _keep_lease(self, feedback_id: str) -> None:
        """Renew the claim while the generator works, so no other process takes the feedback for abandoned."""
        lease = self.options.generation_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.feedback.renew_generation_lease(feedback_id, now=self.clock(), lease_seconds=lease)
            except AutotrainError as exc:  # a busy database: the next beat tries again, well inside the lease
                log.warning("could not renew the generation lease of %s: %s", feedback_id, exc.message)

    async def _generate_claimed(self, feedback: Feedback) -> Rule | NoRule:
        feedback_id = feedback.feedback_id
        if feedback.feedback_type is FeedbackType.PRAISE:
            await self.feedback.finish_feedback_without_rule(
                feedback_id, reason="praise", actor_id=SYSTEM_ACTOR.id, now=self.clock()
            )
            return NoRule(PRAISE)
        same = await self._rule_of_same_complaint(feedback)
        if same is not None:
            return same
        recurrence = await self.rules.get_rule(feedback.recurrence_of) if feedback.recurrence_of else None
        started = time.perf_counter()
        info = GenerationInfo(generator=self.generator.name)
        try:
            current_rules = await asyncio.to_thread(self.rule_files.current_rules)
            result = await self.generator.generate(feedback, current_rules, recurrence=recurrence)
            info = result.info
            proposal = None
            if result.proposal is not None:
                modules = self.rule_files.allowed_modules
                texts = (feedback.query, feedback.ai_response, feedback.feedback_text)
                check_copy = not self.generator.quotes_feedback
                proposal = validate_proposal(
                    result.proposal, current_rules, modules, feedback_texts=texts, check_copy=check_copy
                )
                if RuleWarning.DUPLICATE in proposal.warnings:
                    # named by the deployed rule whose line it is: read only then (deployed rules can be many)
                    deployed = [r for module in modules for r in await self.rules.deployed_rules(module)]
                    proposal = validate_proposal(
                        result.proposal,
                        current_rules,
                        modules,
                        feedback_texts=texts,
                        check_copy=check_copy,
                        rule_ids=deployed_rule_ids(deployed),
                    )
        except asyncio.CancelledError:
            await self.feedback.release_feedback(
                feedback_id, error="generation cancelled", actor_id=SYSTEM_ACTOR.id, now=self.clock()
            )
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, AutotrainError) else f"{type(exc).__name__}: {exc}"
            spent = getattr(exc, "info", None)
            if not isinstance(spent, GenerationInfo):
                spent = info.model_copy(update={"latency_ms": int((time.perf_counter() - started) * 1000)})
            await self.generation_log.record_generation(
                feedback_id, spent, outcome="failed", error=message, now=self.clock()
            )
            await self.feedback.release_feedback(feedback_id, error=message, actor_id=SYSTEM_ACTOR.id, now=self.clock())
            raise GenerationFailed(
                N_("rule generation for {feedback_id} failed: {reason}"), feedback_id=feedback_id, reason=message
            ) from exc
        if proposal is None:
            reason = result.declined or "the generator proposed no rule"
            await self.generation_log.record_generation(
                feedback_id, info, outcome="declined", error=reason, now=self.clock()
            )
            await self.feedback.finish_feedback_without_rule(
                feedback_id,
                reason=f"declined: {reason}",
                actor_id=SYSTEM_ACTOR.id,
                now=self.clock(),
                status=FeedbackStatus.REJECTED,
            )
            return NoRule(f"the generator declined: {reason}")
        proposing = await self.complaints.rule_proposing(proposal)
        if proposing is not None:  # another rule under review proposes this very line: one card, not two
            attached = await self._attach(proposing.rule_id, feedback_id)
            if attached is not None:  # else create_rule below records the generation (once)
                await self.generation_log.record_generation(feedback_id, info, outcome="succeeded", now=self.clock())
                return attached
        rule = await self.rules.create_rule(
            feedback_id,
            proposal,
            info,
            actor_id=SYSTEM_ACTOR.id,
            now=self.clock(),
            event=NewEvent(kind=EventKind.RULE_CREATED, actor_id=SYSTEM_ACTOR.id),
        )
        self.wake()
        return await self._auto_approve(rule)

    # ------------------------------------------------------------------ one complaint, one rule

    async def attach_to_same_complaint(self, feedback: Feedback) -> Feedback:
        """A feedback that just arrived: marked as a recurrence when it is the complaint of a deployed rule,
        and attached to the rule under review of the same complaint when there is one (no second rule, no
        second card). The feedback as it is after."""
        match = await self.complaints.match(feedback)
        changed = False
        if match.deployed is not None:
            changed = await self.complaints.mark_recurrence(
                feedback.feedback_id, match.deployed.rule_id, now=self.clock()
            )
            if changed:
                self.complaints.remember(match.deployed.rule_id, feedback)
        if match.under_review is not None and await self._attach(match.under_review.rule_id, feedback.feedback_id):
            self.complaints.remember(match.under_review.rule_id, feedback)
            changed = True
        if changed:
            self.wake()
            return await feedback_or_404(self.feedback, feedback.feedback_id)
        return feedback

    async def _rule_of_same_complaint(self, feedback: Feedback) -> Rule | None:
        """Before generating: the same complaint may have got a rule since this feedback arrived, or one is
        being generated right now in this process (then wait for it). Only generations that started earlier
        are waited for, so two never wait for each other."""
        earlier = []
        for feedback_id, other in self._generating.items():
            if feedback_id == feedback.feedback_id:
                break
            earlier.append(other)
        first = await self.complaints.same_complaint_in(feedback, earlier)
        task = self._generations.get(first.feedback_id) if first is not None else None
        if task is not None:
            await asyncio.wait([task])
        match = await self.complaints.match(feedback, deployed=False)
        if match.under_review is None:
            return None
        return await self._attach(match.under_review.rule_id, feedback.feedback_id)

    async def _attach(self, rule_id: str, feedback_id: str) -> Rule | None:
        """Attach a feedback to the rule of its complaint (its card shows one more); the rule, or None."""
        attached = await self.rules.attach_feedback(
            rule_id,
            [feedback_id],
            actor_id=SYSTEM_ACTOR.id,
            now=self.clock(),
            event=NewEvent(kind=EventKind.RULE_GROUPED, actor_id=SYSTEM_ACTOR.id),
        )
        if not attached:
            return None
        self.wake()
        return await rule_or_404(self.rules, rule_id)

    async def _auto_approve(self, rule: Rule) -> Rule:
        """Above AUTOTRAIN_AUTO_APPROVE_CONFIDENCE, a clean additive rule is approved by the system (and
        deployed when AUTOTRAIN_AUTO_DEPLOY says so); anything else waits for an admin."""
        threshold = self.options.auto_approve_confidence
        if auto_approval_refusal(rule, threshold, canary_required=self.options.require_canary) is not None:
            return rule
        if self.evaluate is not None:  # never auto-approve a rule whose replay did not pass
            evaluation = await self.evaluate(rule.rule_id)
            refusal = auto_approval_refusal(
                rule, threshold, canary_required=self.options.require_canary, evaluation_status=evaluation.status.value
            )
            if refusal is not None and evaluation.status.value != "skipped":
                log.info("%s is not auto-approved: %s", rule.rule_id, refusal)
                return await rule_or_404(self.rules, rule.rule_id)
        assert threshold is not None
        approved = await self.rules.transition_rule(
            rule.rule_id,
            expected=RuleStatus.PENDING,
            target=RuleStatus.APPROVED,
            actor_id=AUTO_APPROVER.id,
            now=self.clock(),
            reason=f"auto-approved: confidence {rule.confidence:.2f} > {threshold:.2f}, no warnings",
            event=NewEvent(kind=EventKind.RULE_APPROVED, actor_id=AUTO_APPROVER.id),
        )
        if approved is None:
            return rule  # someone acted on it first
        self.wake()
        if not self.options.auto_deploy:
            return approved
        try:
            return (await self.deploys.deploy(rule.rule_id, AUTO_APPROVER)).rule
        except AutotrainError as exc:  # it stays approved, for an admin to deploy
            log.warning("auto-deploy of %s failed: %s", rule.rule_id, exc.message)
            return await rule_or_404(self.rules, rule.rule_id)

    async def _wait_for_other_generation(self, claimed: Feedback) -> Rule | NoRule:
        """Another process is generating this feedback: wait for its rule rather than make a second one. If
        that process stops (its lease runs out), take the feedback over."""
        feedback_id = claimed.feedback_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.generation_wait_seconds
        next_try = loop.time() + 1.0  # a take-over is a write: try it once a second, not every poll
        while True:
            rule = await self.rules.get_rule_for_feedback(feedback_id)
            if rule is not None:
                return rule
            feedback = await feedback_or_404(self.feedback, feedback_id)
            if feedback.status is FeedbackStatus.PROCESSED:
                return NoRule(PRAISE)
            if feedback.status is FeedbackStatus.PENDING:
                raise GenerationFailed(
                    N_("rule generation for {feedback_id} failed: {reason}"),
                    feedback_id=feedback_id,
                    reason=feedback.last_error or "unknown error",
                )
            if feedback.status is FeedbackStatus.REJECTED:
                raise TransitionRefused(
                    N_("{feedback_id} was rejected; no rule is generated from it"), feedback_id=feedback_id
                )
            if loop.time() >= next_try:
                if await self._claim(feedback_id):  # its lease expired: the other process is gone
                    return await self._generate_leased(feedback)
                next_try = loop.time() + 1.0
            if loop.time() > deadline:
                raise GenerationInProgress(
                    N_("{feedback_id} is still being processed; try again shortly"), feedback_id=feedback_id
                )
            await asyncio.sleep(0.1)
