"""The interfaces the pipeline needs from the outside. storage/ and bot/ implement them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from autotrain.models import (
    AuditEntry,
    Deployment,
    DeployOutcome,
    Feedback,
    FeedbackIn,
    FeedbackStatus,
    FeedbackType,
    GenerationInfo,
    GenerationTotals,
    PipelineEvent,
    ReviewCard,
    Rule,
    RuleProposal,
    RuleStatus,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class GenerationResult:
    proposal: RuleProposal | None
    info: GenerationInfo
    declined: str | None = None  # why no rule should come of this feedback (set when proposal is None)


class RuleGenerator(Protocol):
    """Turns one feedback into a rule proposal, grounded in the current rule lines of each allowed file.

    Raises GenerationFailed (with the GenerationInfo of what was spent, when known) when it cannot.
    """

    name: str
    quotes_feedback: bool  # True when its rules quote the feedback on purpose (no copy check then)

    async def generate(self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]]) -> GenerationResult: ...


@dataclass(frozen=True)
class ReloadResult:
    status: str  # ok | failed | skipped
    error: str | None = None


class ReloadHook(Protocol):
    """Tells the chatbot that a rule file changed."""

    async def reload(self, module_name: str, rule_id: str, version: str) -> ReloadResult: ...


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int = 0  # seconds until allowed, when not


class RateLimiter(Protocol):
    """Counts hits per key in a moving window."""

    async def hit(self, key: str) -> RateDecision: ...


class RuleHistory(Protocol):
    """Version history of the rule files (git): one commit per deploy, promote and rollback."""

    async def commit(self, module_name: str, *, author: str, message: str) -> str | None:
        """Commit the file as it is now; its sha, or None when nothing changed."""
        ...


class PipelineNotifier(Protocol):
    """Told of every rule event (Slack cards, webhooks). Its failures are logged, never break the pipeline."""

    async def notify(self, event: PipelineEvent) -> None: ...


@dataclass(frozen=True)
class NewDeployment:
    rule_id: str
    module_name: str
    deployed_by: str
    version_before: str
    version_after: str
    outcome: DeployOutcome
    change: dict[str, Any]
    rollback_of: int | None = None
    rollout_percent: int | None = None  # 100, or a canary's share; None for a rollback


class Store(Protocol):
    """Persistence. Every state change is one transaction that checks the current state (compare-and-set):
    methods that change a state return None (or False) when the record was not in the expected state."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # feedback
    async def create_feedback(
        self,
        data: FeedbackIn,
        *,
        user_id: str,
        source: str,
        actor_id: str,
        now: datetime,
        flags: tuple[str, ...] = (),
        closed_because: str | None = None,
    ) -> Feedback:
        """Store feedback as pending; or, with `closed_because`, stored already rejected (never dropped)."""
        ...

    async def get_feedback(self, feedback_id: str) -> Feedback | None: ...

    async def list_feedback(
        self,
        *,
        status: FeedbackStatus | None,
        feedback_type: FeedbackType | None,
        limit: int,
        offset: int,
    ) -> Page[Feedback]: ...

    async def pending_feedback_ids(self) -> list[str]: ...

    async def claim_feedback(self, feedback_id: str, *, now: datetime) -> bool:
        """pending → processing; False when the feedback was not pending."""
        ...

    async def release_feedback(self, feedback_id: str, *, error: str, actor_id: str, now: datetime) -> None:
        """processing → pending, error count + 1, last error kept."""
        ...

    async def finish_feedback_without_rule(
        self,
        feedback_id: str,
        *,
        reason: str,
        actor_id: str,
        now: datetime,
        status: FeedbackStatus = FeedbackStatus.PROCESSED,
    ) -> bool:
        """processing → processed (praise) or rejected (declined by the generator), with no rule."""
        ...

    async def requeue_interrupted_feedback(self, *, now: datetime) -> list[str]: ...

    # rules
    async def create_rule(
        self, feedback_id: str, proposal: RuleProposal, info: GenerationInfo, *, actor_id: str, now: datetime
    ) -> Rule:
        """Insert the rule, move its feedback processing → processed and log the successful generation
        (`info`), in one transaction."""
        ...

    async def get_rule(self, rule_id: str) -> Rule | None: ...

    async def get_rule_for_feedback(self, feedback_id: str) -> Rule | None: ...

    async def list_rules(
        self, *, status: RuleStatus | None, module_name: str | None, limit: int, offset: int
    ) -> Page[Rule]: ...

    async def transition_rule(
        self,
        rule_id: str,
        *,
        expected: RuleStatus,
        target: RuleStatus,
        actor_id: str,
        now: datetime,
        reason: str | None = None,
    ) -> Rule | None: ...

    async def edit_rule(
        self,
        rule_id: str,
        *,
        changes: dict[str, Any],
        actor_id: str,
        now: datetime,
    ) -> Rule | None:
        """Change fields of a pending rule; None when it is no longer pending."""
        ...

    async def attach_feedback(
        self, rule_id: str, feedback_ids: list[str], *, actor_id: str, now: datetime
    ) -> list[str]:
        """Answer more pending feedback with this rule (a cluster); returns those attached."""
        ...

    async def cluster_feedback_texts(self, rule_id: str, limit: int = 5) -> list[str]: ...

    async def set_deployment_commit(self, deployment_id: int, commit_sha: str) -> None: ...

    # deployments
    async def begin_deployment(
        self, new: NewDeployment, *, expected: RuleStatus, target: RuleStatus, now: datetime
    ) -> int | None:
        """Move the rule expected → target and insert a pending deployment row, in one transaction."""
        ...

    async def complete_deployment(
        self, deployment_id: int, *, backup_path: str | None, now: datetime
    ) -> Deployment: ...

    async def abort_deployment(self, deployment_id: int, *, error: str, actor_id: str, now: datetime) -> None:
        """Delete the pending row and put the rule back in the state it had before."""
        ...

    async def record_reload(self, deployment_id: int, result: ReloadResult, *, now: datetime) -> None: ...

    async def get_deployment(self, deployment_id: int) -> Deployment | None: ...

    async def active_deployment_for_rule(self, rule_id: str) -> Deployment | None: ...

    async def pending_deployments(self) -> list[Deployment]: ...

    async def list_deployments(self, *, rule_id: str | None, limit: int, offset: int) -> Page[Deployment]: ...

    async def deployed_rules(self, module_name: str) -> list[Rule]: ...

    # review cards
    async def claim_card(
        self, rule_id: str, *, channel: str, now: datetime, posting_lease_seconds: float
    ) -> int | None:
        """Take the right to post this rule's card; returns the attempt number, or None when a card exists or
        another attempt is under way (a `posting` claim younger than the lease). A failed attempt may be
        claimed again at once. Two processes or a double event never post two cards."""
        ...

    async def card_posted(self, rule_id: str, *, attempt: int, channel: str, message_ts: str, now: datetime) -> bool:
        """Record the posted card, if `attempt` still holds the claim."""
        ...

    async def card_failed(self, rule_id: str, *, attempt: int, error: str, now: datetime) -> None: ...

    async def get_card(self, rule_id: str) -> ReviewCard | None: ...

    async def rules_without_card(
        self, *, now: datetime, retry_after_seconds: float, posting_lease_seconds: float, limit: int
    ) -> list[str]:
        """Rules still under review (pending, approved) whose card was never posted, failed more than
        `retry_after_seconds` ago, or whose posting claim outlived its lease (the poster died)."""
        ...

    # generations (each attempt, for cost and the error rate)
    async def record_generation(
        self,
        feedback_id: str,
        info: GenerationInfo,
        *,
        outcome: str,
        now: datetime,
        error: str | None = None,
        rule_id: str | None = None,
    ) -> None:
        """Log a generation that made no rule; outcome: failed | declined (create_rule logs successes)."""
        ...

    async def generation_totals(self, *, since: datetime | None = None) -> GenerationTotals: ...

    # reports
    async def counts(self, *, since: datetime) -> dict[str, Any]: ...

    async def list_audit(self, *, subject_id: str | None, limit: int, offset: int) -> Page[AuditEntry]: ...
