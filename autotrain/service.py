"""The pipeline as the edges see it: one object with one method per thing a user can do.

`PipelineService` is a thin facade over the use-case modules in `autotrain/usecases/`: each method is one
call, with no logic of its own. The REST API, Slack and the CLI hold this one object rather than seven use
cases, so an edge depends on a single, stable surface while each use case stays small and takes only the
ports it needs. `bot/runtime.py` builds the use cases and this facade over them.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotrain.effect import CanaryOutcome, RuleEffect
from autotrain.errors import NotFound
from autotrain.evaluation import Evaluation
from autotrain.models import (
    Deployment,
    DeployResult,
    Feedback,
    FeedbackIn,
    FeedbackStatus,
    FeedbackType,
    ReconcileReport,
    Rule,
    RuleDetail,
    RuleStatus,
    RunAllSummary,
    StatusReport,
)
from autotrain.notifications import EventDispatcher
from autotrain.pagination import Order, page_request
from autotrain.policy import Actor
from autotrain.ports import DeploymentStore, FeedbackStore, Page, RuleStore
from autotrain.usecases.deploys import DeployRules
from autotrain.usecases.effects import DecideCanaries, RuleEffects
from autotrain.usecases.evaluate import EvaluateRules
from autotrain.usecases.generation import GenerateRules
from autotrain.usecases.intake import SubmitFeedback
from autotrain.usecases.lookup import feedback_or_404, rule_or_404
from autotrain.usecases.reconcile import Reconcile
from autotrain.usecases.reports import StatusReports
from autotrain.usecases.review import ReviewRules
from autotrain.usecases.rulesets import RuleSet, RuleSetInfo, RuleSets
from autotrain.usecases.run_all import ProgressCallback, RunAll, StartCallback


@dataclass(frozen=True)
class Readers:
    """The stores the facade reads records from (lists and single records)."""

    feedback: FeedbackStore
    rules: RuleStore
    deployments: DeploymentStore


class PipelineService:
    def __init__(
        self,
        *,
        readers: Readers,
        intake: SubmitFeedback,
        generation: GenerateRules,
        run_all: RunAll,
        review: ReviewRules,
        deploys: DeployRules,
        reports: StatusReports,
        reconciler: Reconcile,
        events: EventDispatcher,
        effects: RuleEffects,
        canaries: DecideCanaries,
        rulesets: RuleSets,
        evaluations: EvaluateRules,
    ) -> None:
        self._readers = readers
        self._intake = intake
        self._generation = generation
        self._run_all = run_all
        self._review = review
        self._deploys = deploys
        self._reports = reports
        self._reconciler = reconciler
        self._events = events
        self._effects = effects
        self._canaries = canaries
        self._rulesets = rulesets
        self._evaluations = evaluations

    # feedback
    async def submit(self, data: FeedbackIn, actor: Actor, *, source: str = "api") -> Feedback:
        return await self._intake.submit(data, actor, source=source)

    async def get_feedback(self, feedback_id: str) -> Feedback:
        return await feedback_or_404(self._readers.feedback, feedback_id)

    async def list_feedback(
        self,
        *,
        status: FeedbackStatus | None = None,
        feedback_type: FeedbackType | None = None,
        limit: int = 50,
        offset: int = 0,
        cursor: str | None = None,
        order: Order | None = None,
    ) -> Page[Feedback]:
        after, order = page_request(cursor=cursor, offset=offset, order=order)
        return await self._readers.feedback.list_feedback(
            status=status, feedback_type=feedback_type, limit=limit, offset=offset, cursor=after, order=order
        )

    # generation
    async def generate(self, feedback_id: str, actor: Actor) -> Rule:
        return await self._generation.generate(feedback_id, actor)

    async def run_all(
        self, actor: Actor, on_progress: ProgressCallback | None = None, on_start: StartCallback | None = None
    ) -> RunAllSummary:
        return await self._run_all.run_all(actor, on_progress, on_start)

    # rules and review
    async def get_rule(self, rule_id: str) -> Rule:
        return await rule_or_404(self._readers.rules, rule_id)

    async def rule_detail(self, rule_id: str) -> RuleDetail:
        rule = await rule_or_404(self._readers.rules, rule_id)
        evaluation = await self._evaluations.latest(rule_id)
        return RuleDetail(
            **rule.model_dump(),
            effect=await self._effects.effect(rule),
            evaluation=evaluation.model_copy(update={"detail": []}) if evaluation else None,
        )

    async def rule_effects(self) -> list[RuleEffect]:
        return await self._effects.deployed()

    async def decide_canaries(self) -> list[CanaryOutcome]:
        return await self._canaries.run()

    # rule sets, for a chatbot that reads its rules over HTTP
    async def rulesets(self, actor: Actor) -> list[RuleSetInfo]:
        return await self._rulesets.list(actor)

    async def ruleset(self, module_name: str, actor: Actor, *, user_id: str | None = None) -> RuleSet:
        return await self._rulesets.get(module_name, actor, user_id=user_id)

    async def ruleset_etag(self, module_name: str, actor: Actor) -> str:
        return await self._rulesets.etag(module_name, actor)

    async def list_rules(
        self,
        *,
        status: RuleStatus | None = None,
        module_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
        cursor: str | None = None,
        order: Order | None = None,
    ) -> Page[Rule]:
        after, order = page_request(cursor=cursor, offset=offset, order=order)
        return await self._readers.rules.list_rules(
            status=status, module_name=module_name, limit=limit, offset=offset, cursor=after, order=order
        )

    async def approve(self, rule_id: str, actor: Actor, *, acknowledge_flags: bool = False) -> Rule:
        """A flagged rule (`policy.rule_flags`) needs `acknowledge_flags=True`: else FlagsNotAcknowledged."""
        return await self._review.approve(rule_id, actor, acknowledge_flags=acknowledge_flags)

    async def reject(self, rule_id: str, actor: Actor, reason: str | None = None) -> Rule:
        return await self._review.reject(rule_id, actor, reason)

    async def rule_for_edit(self, rule_id: str, actor: Actor) -> Rule:
        return await self._review.rule_for_edit(rule_id, actor)

    async def edit(
        self, rule_id: str, actor: Actor, *, new_rule: str, module_name: str | None = None, old_rule: str | None = None
    ) -> Rule:
        return await self._review.edit(rule_id, actor, new_rule=new_rule, module_name=module_name, old_rule=old_rule)

    # deploys
    async def deploy(
        self, rule_id: str, actor: Actor, *, rollout_percent: int = 100, override_evaluation: bool = False
    ) -> DeployResult:
        return await self._deploys.deploy(
            rule_id, actor, rollout_percent=rollout_percent, override_evaluation=override_evaluation
        )

    async def canary(self, rule_id: str, actor: Actor, *, override_evaluation: bool = False) -> DeployResult:
        return await self._deploys.canary(rule_id, actor, override_evaluation=override_evaluation)

    # replay before deploy
    async def evaluate(self, rule_id: str, actor: Actor) -> Evaluation:
        return await self._evaluations.evaluate(rule_id, actor)

    async def evaluation(self, rule_id: str) -> Evaluation:
        await rule_or_404(self._readers.rules, rule_id)
        found = await self._evaluations.latest(rule_id)
        if found is None:
            raise NotFound(f"{rule_id} has not been replayed yet")
        return found

    async def promote(self, rule_id: str, actor: Actor) -> DeployResult:
        return await self._deploys.promote(rule_id, actor)

    async def rollback(self, rule_id: str, actor: Actor) -> DeployResult:
        return await self._deploys.rollback(rule_id, actor)

    async def list_deployments(
        self, *, rule_id: str | None = None, limit: int = 50, offset: int = 0, cursor: str | None = None
    ) -> Page[Deployment]:
        """Applied deployments, newest first."""
        after, _ = page_request(cursor=cursor, offset=offset, order=Order.NEWEST)
        return await self._readers.deployments.list_deployments(
            rule_id=rule_id, limit=limit, offset=offset, cursor=after
        )

    # reports and start-up
    async def status(self) -> StatusReport:
        return await self._reports.status()

    async def reconcile(self) -> ReconcileReport:
        return await self._reconciler.reconcile()

    async def settle_left_pending(self) -> tuple[list[int], list[int]]:
        """The deployments left pending by a process that stopped mid-change, settled: (completed, aborted)."""
        return await self._reconciler.settle_left_pending()

    async def drain(self) -> None:
        """Wait for background generations, then deliver the events recorded so far (tests, shutdown)."""
        await self._generation.drain()
        await self._events.drain()
        await self._evaluations.drain()  # replays the events started
        await self._events.drain()
