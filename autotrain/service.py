"""The pipeline: submit → generate → approve / edit / reject → deploy → rollback, plus run_all and status.

Every edge (REST API, Slack, CLI) calls this service with an Actor; permissions and transitions are decided
here, and every state change is a compare-and-set in the store, so concurrent callers cannot both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as time_module
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, tzinfo
from typing import Any, TypeVar

from autotrain.clustering import DEFAULT_THRESHOLD, FeedbackText, cluster_feedback
from autotrain.content_filter import OFFENSIVE, offensive_terms
from autotrain.errors import (
    AutotrainError,
    CanaryUnsupported,
    GenerationFailed,
    GenerationInProgress,
    InvalidInput,
    NotFound,
    RateLimited,
    RuleFileInvalid,
    StoreBusy,
    TransitionRefused,
)
from autotrain.models import (
    Deployment,
    DeployOutcome,
    EventKind,
    Feedback,
    FeedbackIn,
    FeedbackStatus,
    FeedbackType,
    GenerationInfo,
    PipelineEvent,
    Rule,
    RuleCluster,
    RuleProposal,
    RuleStatus,
    RunAllSummary,
    StatusReport,
)
from autotrain.monitoring import Metrics
from autotrain.policy import (
    AUTO_APPROVER,
    SYSTEM_ACTOR,
    Action,
    Actor,
    auto_approval_refusal,
    check_rule_editable,
    check_rule_transition,
    require_permission,
)
from autotrain.ports import (
    NewDeployment,
    Page,
    PipelineNotifier,
    RateLimiter,
    ReloadHook,
    ReloadResult,
    RuleGenerator,
    RuleHistory,
    Store,
)
from autotrain.proposals import validate_proposal
from autotrain.rulefiles import JsonRuleDocument, RuleFiles, content_version, deploy_entry, normalize_rule_line

log = logging.getLogger(__name__)

RECORD_DEADLINE_SECONDS = 60.0  # how long a written deploy waits for a busy database to record it
T = TypeVar("T")

Clock = Callable[[], datetime]
ProgressCallback = Callable[[int, int, list[dict[str, str]]], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NoRule:
    """A generation that ended without a rule, and why (praise; declined by the generator)."""

    reason: str


@dataclass(frozen=True)
class DeployResult:
    rule: Rule
    deployment: Deployment


@dataclass(frozen=True)
class ReconcileReport:
    deployments_completed: list[int]
    deployments_aborted: list[int]
    feedback_requeued: list[str]


class PipelineService:
    def __init__(
        self,
        *,
        store: Store,
        generator: RuleGenerator,
        rule_files: RuleFiles,
        reload_hook: ReloadHook | None = None,
        notifiers: Sequence[PipelineNotifier] = (),
        clock: Clock = utcnow,
        auto_generate: bool = True,
        run_all_concurrency: int = 4,
        generation_wait_seconds: float = 60.0,
        metrics_provider: Callable[[], Awaitable[Metrics]] | None = None,
        rate_limiter: RateLimiter | None = None,
        timezone: tzinfo = UTC,
        auto_approve_confidence: float | None = None,
        auto_deploy: bool = False,
        require_canary: bool = False,
        cluster_threshold: float | None = DEFAULT_THRESHOLD,
        history: RuleHistory | None = None,
    ) -> None:
        self.store = store
        self.generator = generator
        self.rule_files = rule_files
        self.reload_hook = reload_hook
        self.notifiers = list(notifiers)
        self.clock = clock
        self.auto_generate = auto_generate
        self.run_all_concurrency = run_all_concurrency
        self.generation_wait_seconds = generation_wait_seconds
        self.metrics_provider = metrics_provider
        self.rate_limiter = rate_limiter
        self.timezone = timezone  # "today" in the status report
        self.auto_approve_confidence = auto_approve_confidence
        self.auto_deploy = auto_deploy
        self.require_canary = require_canary
        self.cluster_threshold = cluster_threshold  # None: run-all does not group feedback
        self.history = history
        self._generations: dict[str, asyncio.Task[Rule | NoRule]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._module_locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ feedback

    async def submit(self, data: FeedbackIn, actor: Actor, *, source: str = "api") -> Feedback:
        """Store feedback. Limited per end user; offensive feedback is stored flagged and closed, not dropped."""
        require_permission(actor, Action.SUBMIT)
        user_id = data.user_id or actor.id
        if self.rate_limiter is not None:
            decision = await self.rate_limiter.hit(f"feedback:{user_id}")
            if not decision.allowed:
                raise RateLimited(
                    f"too much feedback from {user_id}; try again in {decision.retry_after} s",
                    retry_after=decision.retry_after,
                )
        offensive = offensive_terms(data.query, data.feedback_text)
        closed_because = None
        if offensive:
            closed_because = (
                "flagged by the content filter (offensive language); stored, but no rule is generated from it"
            )
        feedback = await self.store.create_feedback(
            data,
            user_id=user_id,
            source=source,
            actor_id=actor.id,
            now=self.clock(),
            flags=(OFFENSIVE,) if offensive else (),
            closed_because=closed_because,
        )
        if (
            self.auto_generate
            and feedback.status is FeedbackStatus.PENDING
            and feedback.feedback_type is not FeedbackType.PRAISE
        ):
            self.generate_in_background(feedback.feedback_id)
        return feedback

    async def get_feedback(self, feedback_id: str) -> Feedback:
        feedback = await self.store.get_feedback(feedback_id)
        if feedback is None:
            raise NotFound(f"no feedback {feedback_id}")
        return feedback

    async def list_feedback(
        self,
        *,
        status: FeedbackStatus | None = None,
        feedback_type: FeedbackType | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Feedback]:
        return await self.store.list_feedback(status=status, feedback_type=feedback_type, limit=limit, offset=offset)

    # ------------------------------------------------------------------ generation

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
        """Wait for background work (generations started by submit) to finish."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def generate(self, feedback_id: str, actor: Actor) -> Rule:
        """The rule of this feedback: generated now, or the one it already has (never two at once)."""
        require_permission(actor, Action.GENERATE)
        feedback = await self.get_feedback(feedback_id)
        existing = await self.store.get_rule_for_feedback(feedback_id)
        if existing is not None:
            return existing
        task = self._generations.get(feedback_id)
        if task is None:
            task = asyncio.create_task(self._generate_once(feedback))
            self._generations[feedback_id] = task
            task.add_done_callback(lambda _: self._generations.pop(feedback_id, None))
        outcome = await asyncio.shield(task)
        if isinstance(outcome, NoRule):
            raise TransitionRefused(f"no rule for {feedback_id}: {outcome.reason}")
        return outcome

    async def _generate_once(self, feedback: Feedback) -> Rule | NoRule:
        feedback_id = feedback.feedback_id
        if feedback.status is FeedbackStatus.REJECTED:
            raise TransitionRefused(f"{feedback_id} was rejected; no rule is generated from it")
        if not await self.store.claim_feedback(feedback_id, now=self.clock()):
            return await self._wait_for_other_generation(feedback_id)
        if feedback.feedback_type is FeedbackType.PRAISE:
            await self.store.finish_feedback_without_rule(
                feedback_id, reason="praise", actor_id=SYSTEM_ACTOR.id, now=self.clock()
            )
            return NoRule("it is praise: recorded and counted, but no rule is generated from praise")
        started = time_module.perf_counter()
        info = GenerationInfo(generator=self.generator.name)
        try:
            current_rules = await asyncio.to_thread(self.rule_files.current_rules)
            result = await self.generator.generate(feedback, current_rules)
            info = result.info
            proposal = None
            if result.proposal is not None:
                proposal = validate_proposal(
                    result.proposal,
                    current_rules,
                    self.rule_files.allowed_modules,
                    feedback_texts=(feedback.query, feedback.ai_response, feedback.feedback_text),
                    check_copy=not self.generator.quotes_feedback,
                )
        except asyncio.CancelledError:
            await self.store.release_feedback(
                feedback_id, error="generation cancelled", actor_id=SYSTEM_ACTOR.id, now=self.clock()
            )
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, AutotrainError) else f"{type(exc).__name__}: {exc}"
            spent = getattr(exc, "info", None)
            if not isinstance(spent, GenerationInfo):
                spent = info.model_copy(update={"latency_ms": int((time_module.perf_counter() - started) * 1000)})
            await self.store.record_generation(feedback_id, spent, outcome="failed", error=message, now=self.clock())
            await self.store.release_feedback(feedback_id, error=message, actor_id=SYSTEM_ACTOR.id, now=self.clock())
            raise GenerationFailed(f"rule generation for {feedback_id} failed: {message}") from exc
        if proposal is None:
            reason = result.declined or "the generator proposed no rule"
            await self.store.record_generation(feedback_id, info, outcome="declined", error=reason, now=self.clock())
            await self.store.finish_feedback_without_rule(
                feedback_id,
                reason=f"declined: {reason}",
                actor_id=SYSTEM_ACTOR.id,
                now=self.clock(),
                status=FeedbackStatus.REJECTED,
            )
            return NoRule(f"the generator declined: {reason}")
        rule = await self.store.create_rule(feedback_id, proposal, info, actor_id=SYSTEM_ACTOR.id, now=self.clock())
        await self._notify(EventKind.RULE_CREATED, rule, SYSTEM_ACTOR)
        return await self._auto_approve(rule)

    async def _auto_approve(self, rule: Rule) -> Rule:
        """Above AUTOTRAIN_AUTO_APPROVE_CONFIDENCE, a clean additive rule is approved by the system (and
        deployed when AUTOTRAIN_AUTO_DEPLOY says so); anything else waits for an admin."""
        refusal = auto_approval_refusal(rule, self.auto_approve_confidence, canary_required=self.require_canary)
        if refusal is not None:
            return rule
        reason = f"auto-approved: confidence {rule.confidence:.2f} > {self.auto_approve_confidence:.2f}, no warnings"
        approved = await self.store.transition_rule(
            rule.rule_id,
            expected=RuleStatus.PENDING,
            target=RuleStatus.APPROVED,
            actor_id=AUTO_APPROVER.id,
            now=self.clock(),
            reason=reason,
        )
        if approved is None:
            return rule  # someone acted on it first
        await self._notify(EventKind.RULE_APPROVED, approved, AUTO_APPROVER)
        if not self.auto_deploy:
            return approved
        try:
            return (await self.deploy(rule.rule_id, AUTO_APPROVER)).rule
        except AutotrainError as exc:  # it stays approved, for an admin to deploy
            log.warning("auto-deploy of %s failed: %s", rule.rule_id, exc.message)
            return await self.get_rule(rule.rule_id)

    async def _wait_for_other_generation(self, feedback_id: str) -> Rule | NoRule:
        """Another process is generating this feedback: wait for its rule rather than make a second one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.generation_wait_seconds
        while True:
            rule = await self.store.get_rule_for_feedback(feedback_id)
            if rule is not None:
                return rule
            feedback = await self.get_feedback(feedback_id)
            if feedback.status is FeedbackStatus.PROCESSED:
                return NoRule("it is praise: recorded and counted, but no rule is generated from praise")
            if feedback.status is FeedbackStatus.PENDING:
                raise GenerationFailed(
                    f"rule generation for {feedback_id} failed: {feedback.last_error or 'unknown error'}"
                )
            if feedback.status is FeedbackStatus.REJECTED:
                raise TransitionRefused(f"{feedback_id} was rejected; no rule is generated from it")
            if loop.time() > deadline:
                raise GenerationInProgress(f"{feedback_id} is still being processed; try again shortly")
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ rules

    async def get_rule(self, rule_id: str) -> Rule:
        rule = await self.store.get_rule(rule_id)
        if rule is None:
            raise NotFound(f"no rule {rule_id}")
        return rule

    async def list_rules(
        self,
        *,
        status: RuleStatus | None = None,
        module_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Rule]:
        return await self.store.list_rules(status=status, module_name=module_name, limit=limit, offset=offset)

    async def approve(self, rule_id: str, actor: Actor) -> Rule:
        return await self._transition(rule_id, RuleStatus.APPROVED, actor, Action.APPROVE, EventKind.RULE_APPROVED)

    async def reject(self, rule_id: str, actor: Actor, reason: str | None = None) -> Rule:
        return await self._transition(
            rule_id, RuleStatus.REJECTED, actor, Action.REJECT, EventKind.RULE_REJECTED, reason=reason
        )

    async def _transition(
        self,
        rule_id: str,
        target: RuleStatus,
        actor: Actor,
        action: Action,
        event: EventKind,
        reason: str | None = None,
    ) -> Rule:
        require_permission(actor, action)
        rule = await self.get_rule(rule_id)
        check_rule_transition(rule_id, rule.status, target)
        updated = await self.store.transition_rule(
            rule_id, expected=rule.status, target=target, actor_id=actor.id, now=self.clock(), reason=reason
        )
        if updated is None:
            await self._refuse_changed(rule_id, target)
        assert updated is not None
        await self._notify(event, updated, actor)
        return updated

    async def _refuse_changed(self, rule_id: str, target: RuleStatus) -> None:
        """The compare-and-set lost: someone else changed the rule first. Explain with its state now."""
        current = await self.get_rule(rule_id)
        check_rule_transition(rule_id, current.status, target)
        raise TransitionRefused(f"{rule_id} changed while this was being done; it is now {current.status.value}")

    async def edit(
        self,
        rule_id: str,
        actor: Actor,
        *,
        new_rule: str,
        module_name: str | None = None,
        old_rule: str | None = None,
    ) -> Rule:
        """Change a pending rule's text (and target file) before approval; warnings are recomputed."""
        require_permission(actor, Action.EDIT)
        rule = await self.get_rule(rule_id)
        check_rule_editable(rule_id, rule.status)
        target_module = module_name or rule.module_name
        current_rules = await asyncio.to_thread(self.rule_files.current_rules)
        feedback = await self.get_feedback(rule.feedback_id)
        proposal = validate_proposal(
            RuleProposal(
                module_name=target_module,
                rule_type=rule.rule_type,
                old_rule=old_rule if old_rule is not None else rule.old_rule,
                new_rule=new_rule,
                reasoning=rule.reasoning,
                confidence=rule.confidence,
            ),
            current_rules,
            self.rule_files.allowed_modules,
            # the feedback stays untrusted (an injection stays flagged); an admin may quote it on purpose
            feedback_texts=(feedback.query, feedback.ai_response, feedback.feedback_text),
            check_copy=False,
        )
        changes = {
            "module_name": proposal.module_name,
            "old_rule": proposal.old_rule,
            "new_rule": proposal.new_rule,
            "warnings": list(proposal.warnings),
        }
        updated = await self.store.edit_rule(rule_id, changes=changes, actor_id=actor.id, now=self.clock())
        if updated is None:
            current = await self.get_rule(rule_id)
            check_rule_editable(rule_id, current.status)
            raise TransitionRefused(f"{rule_id} changed while it was being edited")
        await self._notify(EventKind.RULE_EDITED, updated, actor)
        return updated

    # ------------------------------------------------------------------ deploy / rollback

    @contextlib.asynccontextmanager
    async def _file_lock(self, module_name: str) -> AsyncIterator[None]:
        """One writer per rule file: an asyncio lock in this process, flock across processes."""
        self.rule_files.path_for(module_name)
        lock = self._module_locks.setdefault(module_name, asyncio.Lock())
        async with lock:
            acquiring = asyncio.ensure_future(asyncio.to_thread(self.rule_files.acquire, module_name))
            try:
                handle = await asyncio.shield(acquiring)
            except asyncio.CancelledError:
                acquiring.add_done_callback(
                    lambda f: None if f.cancelled() or f.exception() else self.rule_files.release(f.result())
                )
                raise
            try:
                yield
            finally:
                self.rule_files.release(handle)

    async def deploy(self, rule_id: str, actor: Actor, *, rollout_percent: int = 100) -> DeployResult:
        """Deploy to every user, or (rollout_percent below 100, JSON rule files only) as a canary."""
        require_permission(actor, Action.DEPLOY)
        if not 1 <= rollout_percent <= 100:
            raise InvalidInput("rollout_percent must be between 1 and 100")
        rule = await self.get_rule(rule_id)
        check_rule_transition(rule_id, rule.status, RuleStatus.DEPLOYED)
        if rollout_percent < 100 and not rule.module_name.endswith(".json"):
            raise CanaryUnsupported(
                f"{rule.module_name} cannot take a canary: rollouts below 100 % are for JSON rule files"
            )
        async with self._file_lock(rule.module_name):
            await self._settle_pending(rule.module_name)  # one left stuck by a busy database or a crash
            rule = await self.get_rule(rule_id)
            check_rule_transition(rule_id, rule.status, RuleStatus.DEPLOYED)
            previous, document = await asyncio.to_thread(self.rule_files.read, rule.module_name)
            now = self.clock()
            change = document.apply(
                new_rule=rule.new_rule,
                old_rule=rule.old_rule,
                entry=deploy_entry(
                    rule_id=rule.rule_id,
                    feedback_id=rule.feedback_id,
                    confidence=rule.confidence,
                    deployed_at=now,
                ),
                rollout_percent=rollout_percent,
            )
            if rule.old_rule and change.outcome is DeployOutcome.APPENDED:
                change.detail["warning"] = "old_rule_not_found"
            if change.outcome is DeployOutcome.NOOP:
                # Remember which deployed rule put the line there, so rolling both back restores the file.
                provider = next(
                    (r for r in await self.store.deployed_rules(rule.module_name) if r.new_rule == rule.new_rule),
                    None,
                )
                change.detail["provided_by"] = provider.rule_id if provider else None
            deployment = await self._write_change(
                rule,
                actor,
                previous=previous,
                change=change,
                expected=RuleStatus.APPROVED,
                target=RuleStatus.DEPLOYED,
                rollback_of=None,
                rollout_percent=rollout_percent,
            )
        return await self._after_write(rule_id, deployment, actor, EventKind.RULE_DEPLOYED)

    async def promote(self, rule_id: str, actor: Actor) -> DeployResult:
        """Take a canary to every user: the rule it replaces goes for everyone."""
        require_permission(actor, Action.DEPLOY)
        rule = await self.get_rule(rule_id)
        if not rule.canary:
            raise TransitionRefused(f"cannot promote {rule_id}: it is not a canary ({self._describe(rule)})")
        async with self._file_lock(rule.module_name):
            await self._settle_pending(rule.module_name)
            rule = await self.get_rule(rule_id)
            if not rule.canary:
                raise TransitionRefused(f"cannot promote {rule_id}: it is not a canary ({self._describe(rule)})")
            previous, document = await asyncio.to_thread(self.rule_files.read, rule.module_name)
            if not isinstance(document, JsonRuleDocument):
                raise CanaryUnsupported(f"{rule.module_name} is not a JSON rule file")
            change = document.promote(new_rule=rule.new_rule)
            deployment = await self._write_change(
                rule,
                actor,
                previous=previous,
                change=change,
                expected=RuleStatus.DEPLOYED,
                target=RuleStatus.DEPLOYED,
                rollback_of=None,
                rollout_percent=100,
            )
        return await self._after_write(rule_id, deployment, actor, EventKind.RULE_PROMOTED)

    @staticmethod
    def _describe(rule: Rule) -> str:
        if rule.status is RuleStatus.DEPLOYED:
            return f"deployed to {rule.rollout_percent or 100} % of users"
        return rule.status.value

    async def rollback(self, rule_id: str, actor: Actor) -> DeployResult:
        """Revert this rule's change on the current file; later deploys stay."""
        require_permission(actor, Action.ROLLBACK)
        rule = await self.get_rule(rule_id)
        check_rule_transition(rule_id, rule.status, RuleStatus.ROLLED_BACK)
        async with self._file_lock(rule.module_name):
            await self._settle_pending(rule.module_name)
            rule = await self.get_rule(rule_id)
            check_rule_transition(rule_id, rule.status, RuleStatus.ROLLED_BACK)
            original = await self.store.active_deployment_for_rule(rule_id)
            if original is None:
                raise TransitionRefused(f"{rule_id} has no deployment to roll back")
            previous, document = await asyncio.to_thread(self.rule_files.read, rule.module_name)
            others = [r for r in await self.store.deployed_rules(rule.module_name) if r.rule_id != rule_id]
            change = document.revert(
                new_rule=rule.new_rule,
                change=await self._effective_change(original),
                # a line another deployed rule also asks for stays; an old line another rule removed stays out
                keep_new=any(other.new_rule == rule.new_rule for other in others),
                restore_old=not any(rule.old_rule and other.old_rule == rule.old_rule for other in others),
            )
            deployment = await self._write_change(
                rule,
                actor,
                previous=previous,
                change=change,
                expected=RuleStatus.DEPLOYED,
                target=RuleStatus.ROLLED_BACK,
                rollback_of=original.deployment_id,
            )
        return await self._after_write(rule_id, deployment, actor, EventKind.RULE_ROLLED_BACK)

    async def _effective_change(self, deployment: Deployment) -> dict[str, Any]:
        """The file change a rollback undoes. A no-op deploy rode on a line another rule wrote; when that rule
        was rolled back first (the line stayed for this one), undoing this one undoes that rule's change."""
        change = deployment.change
        for _ in range(100):  # a chain of no-ops is short; the bound only guards against a cycle
            provider_id = change.get("provided_by") if change.get("outcome") == "noop" else None
            if not provider_id:
                return change
            provider = await self.store.get_rule(provider_id)
            if provider is None or provider.status is not RuleStatus.ROLLED_BACK:
                return change
            provider_deployment = await self.store.active_deployment_for_rule(provider_id)
            if provider_deployment is None:
                return change
            change = provider_deployment.change
        return change

    async def _write_change(
        self,
        rule: Rule,
        actor: Actor,
        *,
        previous: bytes,
        change: Any,
        expected: RuleStatus,
        target: RuleStatus,
        rollback_of: int | None,
        rollout_percent: int | None = None,
    ) -> Deployment:
        """Claim the transition, write the file, then mark the deployment applied.

        The pending deployment row is committed before the file is written, so a crash in between leaves a
        row that `reconcile` settles by looking at the file (the file is the truth).
        """
        version_before = content_version(previous)
        version_after = content_version(change.content) if change.touches_file else version_before
        deployment_id = await self.store.begin_deployment(
            NewDeployment(
                rule_id=rule.rule_id,
                module_name=rule.module_name,
                deployed_by=actor.id,
                version_before=version_before,
                version_after=version_after,
                outcome=change.outcome,
                change=change.detail,
                rollback_of=rollback_of,
                rollout_percent=rollout_percent,
            ),
            expected=expected,
            target=target,
            now=self.clock(),
        )
        if deployment_id is None:
            await self._refuse_changed(rule.rule_id, target)
        assert deployment_id is not None
        backup_path = None
        if change.touches_file:
            try:
                backup_path = await asyncio.to_thread(
                    self.rule_files.write, rule.module_name, change.content, previous, rule.rule_id
                )
            except BaseException as exc:
                error = exc.message if isinstance(exc, AutotrainError) else repr(exc)
                await self._until_recorded(
                    lambda: self.store.abort_deployment(deployment_id, error=error, actor_id=actor.id, now=self.clock())
                )
                raise
        # The file is written: from here the change is a fact, and recording it may wait for a busy database
        # rather than answer "try again".
        deployment = await self._until_recorded(
            lambda: self.store.complete_deployment(deployment_id, backup_path=backup_path, now=self.clock())
        )
        if change.touches_file and self.history is not None:
            deployment = await self._commit(rule, actor, deployment)
        return deployment

    async def _commit(self, rule: Rule, actor: Actor, deployment: Deployment) -> Deployment:
        """One git commit per change of a rule file (still under the file's lock, so it holds only this one).
        A failed commit is logged: the deploy itself has happened."""
        assert self.history is not None
        if deployment.rollback_of is not None:
            verb = "Roll back"
        elif deployment.outcome is DeployOutcome.PROMOTED:
            verb = "Promote to 100 %:"
        elif deployment.outcome is DeployOutcome.CANARY:
            verb = f"Canary {deployment.rollout_percent} %:"
        else:
            verb = "Deploy"
        message = f"{verb} {rule.rule_id} ({rule.feedback_id}): {rule.new_rule}"
        if rule.old_rule:
            message += f"\n\nReplaces: {rule.old_rule}"
        try:
            sha = await self.history.commit(rule.module_name, author=actor.id, message=message)
        except Exception as exc:
            log.error("git commit of %s for %s failed: %s", rule.module_name, rule.rule_id, exc)
            return deployment
        if sha is None:
            return deployment
        await self.store.set_deployment_commit(deployment.deployment_id, sha)
        return deployment.model_copy(update={"commit_sha": sha})

    async def _until_recorded(self, record: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        deadline = asyncio.get_running_loop().time() + RECORD_DEADLINE_SECONDS
        while True:
            try:
                return await record()
            except StoreBusy:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise  # still pending in the database: the next deploy of this file, or the next start, settles it
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _after_write(self, rule_id: str, deployment: Deployment, actor: Actor, event: EventKind) -> DeployResult:
        if deployment.version_after != deployment.version_before:
            result = await self._reload(deployment)
            await self.store.record_reload(deployment.deployment_id, result, now=self.clock())
            deployment = deployment.model_copy(update={"reload_status": result.status, "reload_error": result.error})
        else:
            await self.store.record_reload(
                deployment.deployment_id, ReloadResult("skipped", "file unchanged"), now=self.clock()
            )
            deployment = deployment.model_copy(update={"reload_status": "skipped", "reload_error": "file unchanged"})
        rule = await self.get_rule(rule_id)
        await self._notify(event, rule, actor, deployment)
        return DeployResult(rule, deployment)

    async def _reload(self, deployment: Deployment) -> ReloadResult:
        if self.reload_hook is None:
            return ReloadResult("skipped", "no reload URL configured")
        try:
            return await self.reload_hook.reload(deployment.module_name, deployment.rule_id, deployment.version_after)
        except Exception as exc:  # the file is written; a failed reload is recorded, not raised
            log.warning("reload after %s failed: %s", deployment.rule_id, exc)
            return ReloadResult("failed", f"{type(exc).__name__}: {exc}")

    async def list_deployments(
        self, *, rule_id: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[Deployment]:
        return await self.store.list_deployments(rule_id=rule_id, limit=limit, offset=offset)

    # ------------------------------------------------------------------ batch, status, start-up

    async def run_all(self, actor: Actor, on_progress: ProgressCallback | None = None) -> RunAllSummary:
        """Generate rules for every pending feedback, a bounded number at a time.

        Near-duplicate feedback is grouped first (character n-gram TF-IDF, accent-insensitive): one rule is
        generated for each group, and the group's other feedback is attached to it instead of making N
        near-identical rules. If that one generation fails, the whole group stays pending.
        """
        require_permission(actor, Action.RUN_ALL)
        feedback_ids = await self.store.pending_feedback_ids()
        groups = await self._group_pending(feedback_ids)
        semaphore = asyncio.Semaphore(self.run_all_concurrency)
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
                    rule = await self.generate(representative, actor)
                    created.append(rule.rule_id)
                    if others:
                        attached = await self.store.attach_feedback(
                            rule.rule_id, others, actor_id=actor.id, now=self.clock()
                        )
                        if attached:
                            clusters.append(RuleCluster(rule_id=rule.rule_id, feedback_ids=[representative, *attached]))
                            grouped = await self.get_rule(rule.rule_id)
                            await self._notify(EventKind.RULE_GROUPED, grouped, actor)
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
        if self.cluster_threshold is None:
            return [(feedback_id,) for feedback_id in feedback_ids]
        by_type: dict[FeedbackType, list[FeedbackText]] = {}
        for feedback_id in feedback_ids:
            feedback = await self.get_feedback(feedback_id)
            by_type.setdefault(feedback.feedback_type, []).append(
                FeedbackText(feedback_id, f"{feedback.feedback_text} {feedback.query}")
            )
        groups: list[tuple[str, ...]] = []
        for kind, items in by_type.items():
            if kind is FeedbackType.PRAISE:
                groups += [(item.feedback_id,) for item in items]
            else:
                groups += [
                    cluster.feedback_ids for cluster in cluster_feedback(items, threshold=self.cluster_threshold)
                ]
        order = {feedback_id: i for i, feedback_id in enumerate(feedback_ids)}
        return sorted(groups, key=lambda group: order[group[0]])

    async def status(self) -> StatusReport:
        now = self.clock()
        local = now.astimezone(self.timezone)
        midnight = datetime.combine(local.date(), time.min, tzinfo=self.timezone).astimezone(UTC)
        counts = await self.store.counts(since=midnight)
        last = await self.store.list_deployments(rule_id=None, limit=5, offset=0)
        return StatusReport(
            feedback_by_status=counts["feedback_by_status"],
            feedback_by_type=counts["feedback_by_type"],
            rules_by_status=counts["rules_by_status"],
            pending_feedback=counts["feedback_by_status"].get(FeedbackStatus.PENDING.value, 0),
            deployments_total=counts["deployments_total"],
            deployed_today=counts["deployed_since"],
            rollbacks_total=counts["rollbacks_total"],
            generator=self.generator.name,
            generation=await self.store.generation_totals(),
            last_deployments=last.items,
            metrics=await self.metrics_provider() if self.metrics_provider else None,
        )

    async def reconcile(self) -> ReconcileReport:
        """Settle what a crash left half done. The rule file is the truth:

        - a pending deployment whose change is in the file is completed; one whose change is not is aborted
          (the rule returns to approved, or to deployed for a rollback);
        - feedback left `processing` with no rule goes back to pending.

        Each file's pending deployments are settled under that file's lock, so a deploy that another process
        has under way is waited for, never mistaken for an interrupted one.
        """
        completed: list[int] = []
        aborted: list[int] = []
        modules = sorted({d.module_name for d in await self.store.pending_deployments()})
        for module_name in modules:
            try:
                async with self._file_lock(module_name):
                    done, undone = await self._settle_pending(module_name)
            except InvalidInput as exc:  # a module no longer allowed: leave it for an admin
                log.error("cannot reconcile deployments of %s: %s", module_name, exc.message)
                continue
            completed += done
            aborted += undone
        requeued = await self.store.requeue_interrupted_feedback(now=self.clock())
        removed = await asyncio.to_thread(self.rule_files.tidy)
        if removed:
            log.info("removed %d temporary rule files left by an interrupted write", removed)
        return ReconcileReport(completed, aborted, requeued)

    async def _settle_pending(self, module_name: str) -> tuple[list[int], list[int]]:
        """Complete or abort the pending deployments of one file. Call with the file's lock held."""
        completed: list[int] = []
        aborted: list[int] = []
        for deployment in await self.store.pending_deployments():
            if deployment.module_name != module_name:
                continue
            try:
                written = await self._change_in_file(deployment)
            except (RuleFileInvalid, InvalidInput) as exc:
                log.error("cannot reconcile deployment %s: %s", deployment.deployment_id, exc.message)
                written = False
            if written:
                await self.store.complete_deployment(deployment.deployment_id, backup_path=None, now=self.clock())
                completed.append(deployment.deployment_id)
            else:
                await self.store.abort_deployment(
                    deployment.deployment_id,
                    error="interrupted before the file was written",
                    actor_id=SYSTEM_ACTOR.id,
                    now=self.clock(),
                )
                aborted.append(deployment.deployment_id)
        if completed or aborted:
            log.warning(
                "settled interrupted deployments of %s: completed %s, aborted %s", module_name, completed, aborted
            )
        return completed, aborted

    async def _change_in_file(self, deployment: Deployment) -> bool:
        content, document = await asyncio.to_thread(self.rule_files.read, deployment.module_name)
        version = content_version(content)
        if deployment.version_after == deployment.version_before:
            return True  # a no-op: nothing had to be written
        if version == deployment.version_after:
            return True
        if version == deployment.version_before:
            return False
        rule = await self.get_rule(deployment.rule_id)
        present = normalize_rule_line(rule.new_rule) in document.rule_lines()
        return present if deployment.rollback_of is None else not present

    # ------------------------------------------------------------------ notifications

    def add_notifier(self, notifier: PipelineNotifier) -> None:
        self.notifiers.append(notifier)

    async def _notify(self, kind: EventKind, rule: Rule, actor: Actor, deployment: Deployment | None = None) -> None:
        event = PipelineEvent(kind=kind, rule=rule, actor_id=actor.id, deployment=deployment)
        for notifier in self.notifiers:
            try:
                await notifier.notify(event)
            except Exception:
                log.exception("notifier %s failed on %s of %s", type(notifier).__name__, kind.value, rule.rule_id)
