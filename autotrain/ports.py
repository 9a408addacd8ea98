"""The interfaces the pipeline needs from the outside. storage/ and bot/ implement them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from autotrain.clustering import DocumentFrequencies
from autotrain.effect import Counts, Tally
from autotrain.evaluation import Evaluation
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
    HandEditedFile,
    NewEvent,
    OutboxEvent,
    PipelineCounts,
    PipelineEvent,
    ReviewCard,
    Rule,
    RuleProposal,
    RuleStatus,
)
from autotrain.monitoring import AlertState, DigestData, MetricsData
from autotrain.pagination import Cursor, Order
from autotrain.rulefiles import content_version

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
    next_cursor: str | None = None  # autotrain/pagination.py: None on the last page


@dataclass(frozen=True)
class GenerationResult:
    proposal: RuleProposal | None
    info: GenerationInfo
    declined: str | None = None  # why no rule should come of this feedback (set when proposal is None)


@dataclass(frozen=True)
class Person:
    """Who a Slack user is, as far as Slack tells (each field None when it does not)."""

    user_id: str
    real_name: str | None = None
    email: str | None = None  # needs the users:read.email scope
    locale: str | None = None  # e.g. "vi-VN"


class PeopleDirectory(Protocol):
    """Looks a user id up (Slack's users.info, cached); None when it is not a known user or Slack is off."""

    async def person(self, user_id: str) -> Person | None: ...


class RuleGenerator(Protocol):
    """Turns one feedback into a rule proposal, grounded in the current rule lines of each allowed file.

    Raises GenerationFailed (with the GenerationInfo of what was spent, when known) when it cannot.
    """

    name: str
    quotes_feedback: bool  # True when its rules quote the feedback on purpose (no copy check then)

    async def generate(
        self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]], *, recurrence: Rule | None = None
    ) -> GenerationResult: ...


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

    @property
    def remote(self) -> str | None:
        """Where commits are pushed (AUTOTRAIN_GIT_REMOTE); None: they stay in the rules folder."""
        ...

    async def push(self, commits: Sequence[str]) -> set[str]:
        """Push the branch to the remote, with every earlier commit it lacks; of `commits`, those the remote
        has now. Raises when the push fails (unreachable, refused, timed out)."""
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


# ---------------------------------------------------------------------- the store, by role
#
# Persistence. Every state change is one transaction that checks the current state (compare-and-set):
# methods that change a state return None (or False) when the record was not in the expected state.
# Each part of the pipeline asks for the roles it uses; `Store` is all of them, for the composition root.
#
# A state change given `event=` records that event (the outbox) in its own transaction, with the rule as it
# is right after the change, and only when the change happened.

EVENT_HOLD_SECONDS = 30.0  # a held event (a deploy awaiting its reload result) is delivered after this at most


class FeedbackStore(Protocol):
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
        settled: bool = False,
    ) -> Feedback:
        """Store feedback as pending; with `closed_because`, already rejected (never dropped); `settled`:
        already processed (praise: counted, no rule)."""
        ...

    async def get_feedback(self, feedback_id: str) -> Feedback | None: ...

    async def list_feedback(
        self,
        *,
        status: FeedbackStatus | None,
        feedback_type: FeedbackType | None,
        limit: int,
        offset: int,
        cursor: Cursor | None = None,
        order: Order = Order.NEWEST,
    ) -> Page[Feedback]: ...

    async def pending_feedback_ids(self, *, now: datetime) -> list[str]:
        """Pending feedback, and feedback whose generation lease expired (its process stopped)."""
        ...

    async def claim_feedback(self, feedback_id: str, *, now: datetime, lease_seconds: float) -> bool:
        """pending (or processing with an expired lease) → processing, leased to this generation for
        `lease_seconds`; False when it is not pending, or another generation holds a live lease."""
        ...

    async def renew_generation_lease(self, feedback_id: str, *, now: datetime, lease_seconds: float) -> bool:
        """The heartbeat of a generation in progress: its lease runs `lease_seconds` from now."""
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

    async def requeue_interrupted_feedback(self, *, now: datetime) -> list[str]:
        """processing with no rule and an expired lease → pending (its process stopped); returns the ids.
        A generation another live process is running keeps renewing its lease, so it is never requeued."""
        ...


@dataclass(frozen=True)
class EffectFigures:
    """A deployed rule's figures for its verdict, without the rule (what /metrics reads for every rule):
    (feedback, complaints) in the window before its deploy and since."""

    rule_id: str
    deployed_at: datetime
    rollout_percent: int | None
    before: Counts
    since: Counts

    @property
    def canary(self) -> bool:
        return self.rollout_percent is not None and self.rollout_percent < 100


@dataclass(frozen=True)
class ComplaintCandidate:
    """A rule a new feedback may be the same complaint as: the rule, its feedback's type, and the complaint
    texts (clustering.complaint_text) of its newest feedbacks."""

    rule: Rule
    feedback_type: FeedbackType
    texts: list[str]


class ComplaintStore(Protocol):
    """The complaint corpus (document frequencies over all stored feedback) and the rules to compare with."""

    async def document_frequencies(self, texts: Sequence[str], *, grams: Iterable[str] = ()) -> DocumentFrequencies:
        """The corpus's document frequencies of the n-grams of these texts and of `grams` (and the number of
        documents)."""
        ...

    async def complaint_version(self) -> int:
        """A number that changes whenever a rule is made or changes state (which rules a feedback is compared
        with)."""
        ...

    async def complaint_candidates(
        self, statuses: Sequence[RuleStatus], *, with_texts: bool = True, changed_since: int | None = None
    ) -> list[ComplaintCandidate]:
        """The rules in these states, each with the texts of its newest feedbacks (unless `with_texts` is off).
        With `changed_since` (a complaint_version): the rules made or changed since, in any state (texts only
        for those in these states)."""
        ...

    async def mark_recurrence(
        self, feedback_id: str, rule_id: str, *, actor_id: str, now: datetime, event: NewEvent | None = None
    ) -> Rule | None:
        """Record the feedback as a recurrence of deployed rule `rule_id`; the rule after, or None when the
        feedback was already marked."""
        ...

    async def effect_tallies(self, rule_id: str, *, window_days: int) -> tuple[Tally, Tally] | None:
        """(before, since) the deploy of a deployed rule: all feedback in the `window_days` before it and since
        it, and how much of it was this rule's complaint; None when the rule is not deployed."""
        ...

    async def deployed_effect_figures(self, *, window_days: int, min_complaints: int) -> list[EffectFigures]:
        """The figures of the deployed rules whose complaint came back at least `min_complaints` times."""
        ...

    async def deployed_effect_tallies(
        self,
        *,
        window_days: int,
        rule_id: str | None = None,
        min_complaints: int | None = None,
        deployed_since: datetime | None = None,
        canaries: bool = False,
    ) -> list[tuple[Rule, Tally, Tally]]:
        """(rule, before, since) of every deployed rule, or of those matching any of the filters given: at least
        `min_complaints` recurrences since the deploy, deployed since `deployed_since`, a canary."""
        ...

    async def feedback_users_since(self, since: datetime, *, after: int = 0) -> list[tuple[int, str]]:
        """(row number, user_id) of every feedback created since `since` and stored after row `after`."""
        ...

    async def recurrence_users(self, rule_id: str, *, since: datetime) -> list[str]:
        """The user_id of each feedback since `since` that is a recurrence of this rule's complaint."""
        ...


class RuleStore(Protocol):
    async def create_rule(
        self,
        feedback_id: str,
        proposal: RuleProposal,
        info: GenerationInfo,
        *,
        actor_id: str,
        now: datetime,
        event: NewEvent | None = None,
    ) -> Rule:
        """Insert the rule, move its feedback processing → processed and log the successful generation
        (`info`), in one transaction. When the feedback already has a rule (another generation won a race),
        that rule is returned and nothing is inserted: a feedback never gets two rules, nor a 500."""
        ...

    async def get_rule(self, rule_id: str) -> Rule | None: ...

    async def get_rule_for_feedback(self, feedback_id: str) -> Rule | None: ...

    async def list_rules(
        self,
        *,
        status: RuleStatus | None,
        module_name: str | None,
        limit: int,
        offset: int,
        cursor: Cursor | None = None,
        order: Order = Order.NEWEST,
    ) -> Page[Rule]: ...

    async def deployed_rules(self, module_name: str) -> list[Rule]: ...

    async def transition_rule(
        self,
        rule_id: str,
        *,
        expected: RuleStatus,
        target: RuleStatus,
        actor_id: str,
        now: datetime,
        reason: str | None = None,
        event: NewEvent | None = None,
        detail: dict[str, Any] | None = None,
        as_read: Rule | None = None,
    ) -> Rule | None:
        """expected → target, stamped and audited (`detail` added to the audit row); None when it is not in
        `expected` — or, with `as_read`, when it was edited since it was read like that (what was checked, a
        flag acknowledged, is no longer what would be approved)."""
        ...

    async def edit_rule(
        self,
        rule_id: str,
        *,
        changes: dict[str, Any],
        actor_id: str,
        now: datetime,
        event: NewEvent | None = None,
        expected_new_rule: str | None = None,
    ) -> Rule | None:
        """Change fields of a pending rule; None when it is no longer pending (or, with `expected_new_rule`,
        when its line is no longer that one)."""
        ...

    async def attach_feedback(
        self,
        rule_id: str,
        feedback_ids: list[str],
        *,
        actor_id: str,
        now: datetime,
        event: NewEvent | None = None,
    ) -> list[str]:
        """Answer more pending feedback with this rule (a cluster); returns those attached (the event is
        recorded only when there are some)."""
        ...

    async def cluster_feedback_texts(self, rule_id: str, limit: int = 5) -> list[str]: ...


class DeploymentStore(Protocol):
    async def begin_deployment(
        self, new: NewDeployment, *, expected: RuleStatus, target: RuleStatus, now: datetime
    ) -> int | None:
        """Move the rule expected → target and insert a pending deployment row, in one transaction."""
        ...

    async def complete_deployment(
        self, deployment_id: int, *, backup_path: str | None, now: datetime, event: NewEvent | None = None
    ) -> Deployment:
        """pending → applied; the event (if the row was still pending) carries this deployment's id."""
        ...

    async def abort_deployment(self, deployment_id: int, *, error: str, actor_id: str, now: datetime) -> None:
        """Delete the pending row and put the rule back in the state it had before."""
        ...

    async def record_reload(self, deployment_id: int, result: ReloadResult, *, now: datetime) -> None:
        """Keep the chatbot's answer, and release the deployment's held events (ready now)."""
        ...

    async def set_deployment_commit(self, deployment_id: int, commit_sha: str) -> None:
        """Record the commit holding this change (and clear its commit error)."""
        ...

    async def set_deployment_commit_error(self, deployment_id: int, error: str) -> None:
        """Record why this change is not in git history yet; shown on its card, in /status and as an alert."""
        ...

    async def get_deployment(self, deployment_id: int) -> Deployment | None: ...

    async def active_deployment_for_rule(self, rule_id: str) -> Deployment | None: ...

    async def pending_deployments(self) -> list[Deployment]: ...

    async def deployments_without_commit(self, module_name: str) -> list[Deployment]:
        """Applied changes of this file since its last committed one that have no git commit (a crash between
        the write and the commit, or a commit that failed), oldest first."""
        ...

    async def unpushed_deployments(self) -> list[Deployment]:
        """Deployments with a git commit that has not reached the remote (pushed_at unset), oldest first."""
        ...

    async def set_deployments_pushed(self, deployment_ids: Sequence[int], now: datetime) -> None:
        """Their commit is on the remote: pushed_at set (when not already), push_error cleared."""
        ...

    async def set_deployments_push_error(self, deployment_ids: Sequence[int], error: str) -> None:
        """Why their commit has not reached the remote yet (left alone on those pushed meanwhile)."""
        ...

    async def list_deployments(
        self, *, rule_id: str | None, limit: int, offset: int, cursor: Cursor | None = None
    ) -> Page[Deployment]:
        """Applied deployments, newest first."""
        ...


class ReviewCardStore(Protocol):
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


class GenerationLog(Protocol):
    """Each generation attempt, for cost and the error rate."""

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


class ReportStore(Protocol):
    """Read-only figures: the status report, the audit log, monitoring metrics and the digest."""

    async def counts(self, *, since: datetime) -> PipelineCounts: ...

    async def list_audit(
        self, *, subject_id: str | None, limit: int, offset: int, cursor: Cursor | None = None
    ) -> Page[AuditEntry]:
        """The audit log, oldest first."""
        ...

    async def metrics_data(
        self, *, now: datetime, error_window_start: datetime, day_start: datetime, approval_window_start: datetime
    ) -> MetricsData: ...

    async def digest_data(self, *, start: datetime, end: datetime) -> DigestData: ...


class AlertStateStore(Protocol):
    """What keeps several processes from acting twice: alert state (compare-and-set on a version), leases
    (one scheduler acts) and digest runs (each posted once). Survives restarts."""

    async def get_alert_state(self, name: str) -> AlertState | None: ...

    async def save_alert_state(self, state: AlertState, *, expected_version: int) -> bool: ...

    async def acquire_lease(self, name: str, *, holder: str, now: datetime, ttl_seconds: float) -> bool: ...

    async def claim_digest(self, key: str, *, now: datetime) -> bool: ...


class ReloadLog(Protocol):
    """Chatbot reload calls that failed, retried with backoff."""

    async def schedule_reload_retry(self, deployment_id: int, *, attempts: int, retry_at: datetime | None) -> None: ...

    async def reloads_due(self, *, now: datetime) -> list[Deployment]:
        """Failed reloads due for a retry (only the newest change of each file: older ones are dropped)."""
        ...

    async def reload_retried(
        self, deployment_id: int, result: ReloadResult, *, attempts: int, retry_at: datetime | None
    ) -> None: ...

    async def failing_reloads(self, *, min_attempts: int) -> list[Deployment]: ...


class EvaluationStore(Protocol):
    """Evaluations of rules (replay before deploy), and the feedback they replay."""

    async def save_evaluation(self, evaluation: Evaluation, *, event: NewEvent | None = None) -> None:
        """Keep it (with its conflicts as the rule's `conflicts_with_rule` warning) and its event."""
        ...

    async def latest_evaluation(self, rule_id: str, rule_version: str | None = None) -> Evaluation | None: ...

    async def group_feedback(self, rule_id: str, *, limit: int) -> list[Feedback]: ...

    async def earlier_fixes(self, module_name: str, *, exclude: str, limit: int) -> list[tuple[Rule, Feedback]]: ...

    async def praised_feedback(self, *, limit: int) -> list[Feedback]: ...

    async def record_evaluation_gate(
        self, rule_id: str, *, actor_id: str, status: str, overridden: bool, now: datetime
    ) -> None:
        """Audit the replay gate: a deploy refused for it, or an admin's override."""
        ...

    async def evaluation_totals(self) -> dict[str, int]:
        """runs, passed, failed, skipped, error, tokens, latency_ms (replays and judgments, apart from generation)."""
        ...


class MonitoringStore(ReportStore, AlertStateStore, ReloadLog, Protocol):
    """What the Monitor needs: the figures, and the state that makes one process alert once."""


class WebhookOutbox(Protocol):
    """Webhook deliveries: queued per URL, claimed when due, each attempt recorded (the delivery log)."""

    async def enqueue_webhooks(
        self, *, event_id: str, event_type: str, payload: dict[str, Any], urls: tuple[str, ...], now: datetime
    ) -> None:
        """Queue one delivery per URL; an (event_id, url) already queued is left alone (a redelivered event
        is not sent twice)."""
        ...

    async def due_webhooks(self, *, now: datetime, limit: int = 50, lease_seconds: float = 60) -> list[dict[str, Any]]:
        """Claim the deliveries due now (pushed `lease_seconds` ahead, so no other process sends them too)."""
        ...

    async def webhook_attempted(
        self,
        delivery_id: int,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        """Record one attempt: delivered, retry at next_attempt_at, or failed for good (next_attempt_at None)."""
        ...

    async def list_webhook_deliveries(self, *, limit: int = 100) -> list[dict[str, Any]]: ...


class EventOutbox(Protocol):
    """The rule events recorded by state changes, delivered at least once, in order per rule."""

    async def claim_events(self, *, holder: str, now: datetime, lease_seconds: float, limit: int) -> list[OutboxEvent]:
        """Claim up to `limit` undelivered events that are ready (not held) and not claimed by a live lease,
        in id order. An event whose rule has an earlier undelivered event outside this batch is skipped, so
        that a rule's events are delivered in order even across processes. Each claim counts an attempt."""
        ...

    async def event_delivered(self, event_id: int, *, holder: str, now: datetime) -> bool:
        """Mark it delivered, if `holder` still holds its claim (False when another process took it over)."""
        ...

    async def undelivered_event_count(self) -> int: ...


# ---------------------------------------------------------------------- the rule files' truth in the database
#
# With several instances (PostgreSQL), a rule file's content lives in the database, one row per version; each
# instance's rules folder is a copy made from it (autotrain/usecases/file_truth.py). The SQLite store has none
# of these: there the rules folder is the truth, locked with flock.


@dataclass(frozen=True)
class StoredRuleFile:
    """One version of a rule file as the database keeps it."""

    module_name: str
    number: int  # 1, 2, 3 … per file (1: the seed file the first instance found in its folder)
    content: bytes
    deployment_id: int | None  # the deployment that made it (None: the seed)
    created_at: datetime

    @property
    def version(self) -> str:
        """The content version deployments record."""
        return content_version(self.content)


class RuleFileVersions(Protocol):
    """Every version of every rule file; the newest is the truth every instance's folder is made from."""

    async def latest_rule_file(self, module_name: str) -> StoredRuleFile | None:
        """The newest version (None: nothing stored yet)."""
        ...

    async def latest_rule_file_numbers(self) -> dict[str, tuple[int, str]]:
        """Each stored file's newest version number and content version, without the content (a cheap check)."""
        ...

    async def rule_file_with_version(self, module_name: str, version: str) -> StoredRuleFile | None:
        """The newest stored version of this file whose content version is `version` (None: never stored)."""
        ...

    async def rule_file_number(self, module_name: str, number: int) -> StoredRuleFile | None:
        """Version `number` of this file (1: its seed; None: not stored)."""
        ...

    async def record_hand_edit(self, found: HandEditedFile) -> None:
        """Record that an instance found a file edited by hand (the audit log: every instance reports it)."""
        ...

    async def hand_edits(self, *, since: datetime | None = None, limit: int = 20) -> list[HandEditedFile]:
        """The hand edits any instance found (since `since`), the newest last, at most `limit`."""
        ...

    async def seed_rule_file(self, module_name: str, content: bytes, *, now: datetime) -> StoredRuleFile:
        """Store `content` as version 1 when nothing is stored yet; the newest version either way."""
        ...

    async def complete_deployment_with_file(
        self,
        deployment_id: int,
        *,
        content: bytes,
        backup_path: str | None,
        now: datetime,
        event: NewEvent | None = None,
    ) -> Deployment:
        """DeploymentStore.complete_deployment, and `content` stored as the file's next version, in one
        transaction (the file's newest version must be the deployment's version_before; once the row is applied,
        a second call stores nothing). Every instance is told the file changed (RuleFileChanges)."""
        ...


class RuleFileLock(Protocol):
    """One writer per rule file across every instance (held for a whole deploy, promote or rollback)."""

    def hold_rule_file(self, module_name: str) -> AbstractAsyncContextManager[None]: ...


class RuleFileChanges(Protocol):
    """Told when a rule file's stored version changes, whichever instance changed it."""

    async def watch_rule_files(self, on_change: Callable[[str], None]) -> bool:
        """Listen (again, when the listening connection was lost): `on_change(module_name)` on each change.
        True when it (re)started listening now: changes made meanwhile may have been missed."""
        ...

    async def stop_watching_rule_files(self) -> None: ...


@dataclass(frozen=True)
class SharedCommit:
    """One commit of the rule files' git history every instance shares (PostgreSQL): made once, by the instance
    whose change it records, and rebuilt byte for byte — the same sha — by every other one from these fields.

    A commit's tree is its parent's with `files` set (path → the content version of a stored rule-file
    version; `.gitignore` → Auto-Train's own). A row with no parent and no files is a base: the history
    continues from that commit of the git remote."""

    sha: str
    parent: str | None
    files: Mapping[str, str]
    author_name: str
    author_email: str
    committed_at: datetime  # whole seconds (git's resolution), the author's and the committer's date
    message: str
    seq: int = 0  # its place in the history: 1, 2, 3 … (0: not stored yet)

    @property
    def is_base(self) -> bool:
        return self.parent is None and not self.files


class SharedHistory(Protocol):
    """The order of the shared git history (one list for every instance), appended under one lock."""

    def hold_shared_history(self) -> AbstractAsyncContextManager[None]:
        """The one writer of the history across every instance (held while a commit is made and appended)."""
        ...

    async def shared_commit(self, sha: str) -> SharedCommit | None:
        """The commit of the history with this sha (None: not one of its commits)."""
        ...

    async def shared_commits(self, *, after: str | None) -> list[SharedCommit]:
        """The commits after the one whose sha is `after`, oldest first; all of them when `after` is None or
        no commit of the history."""
        ...

    async def append_shared_commit(self, commit: SharedCommit) -> SharedCommit:
        """Append the next commit (call with the lock held; its parent must be the newest one's sha, or None
        on an empty history); every instance is notified. The commit with its `seq`."""
        ...


class Store(
    FeedbackStore,
    ComplaintStore,
    RuleStore,
    DeploymentStore,
    ReviewCardStore,
    GenerationLog,
    ReportStore,
    AlertStateStore,
    WebhookOutbox,
    EventOutbox,
    ReloadLog,
    EvaluationStore,
    Protocol,
):
    """Every role, and the lifecycle: what the composition root opens and hands out."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...
