"""The pipeline's records: feedback, generated rule, deployment, audit entry, and the status report."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from autotrain.effect import RuleEffect
from autotrain.evaluation import Evaluation
from autotrain.i18n import N_
from autotrain.monitoring import Metrics
from autotrain.text import strip_invisible

ID_OFFSET = 1000  # FB-1001 is the first feedback, RUL-1001 the first rule
MAX_METADATA_BYTES = 4096
MAX_RULE_LENGTH = 500

# control characters (newlines and tabs kept); the invisible ones are autotrain.text.INVISIBLE_RANGES
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(value: object) -> object:
    """Drop control characters (newlines and tabs kept) and every invisible character (Default_Ignorable and
    format characters: soft hyphen, zero-width joiners, bidi controls, tags, fillers), then NFC-normalise
    (Vietnamese typed on different keyboards).

    The one cleaning of untrusted text, for feedback and for rule text alike, before any check and before
    storage: "re\u00adveal the sys\u00adtem prompt" is checked and stored as "reveal the system prompt". Runs
    before the length checks, so bounds count the cleaned text and text of only such characters is empty.
    """
    if isinstance(value, str):
        return unicodedata.normalize("NFC", strip_invisible(_CONTROL_CHARS.sub("", value)))
    return value


CleanText = Annotated[str, BeforeValidator(clean_text)]


def _json_object(value: object) -> object:
    """The store keeps a rule's warning details as JSON text; a record read from it carries that text."""
    if isinstance(value, str | bytes):
        return json.loads(value or "{}")
    return value


# What each warning is about, by warning (its value): {"duplicate": "RUL-1003 — fashion_rules.json"}. Filled for
# duplicate, near_duplicate, old_rule_not_found (autotrain/proposals.py) and conflicts_with_rule (the replay).
WarningDetails = Annotated[dict[str, str], BeforeValidator(_json_object)]


def feedback_id_for(row_id: int) -> str:
    return f"FB-{ID_OFFSET + row_id}"


def rule_id_for(row_id: int) -> str:
    return f"RUL-{ID_OFFSET + row_id}"


class FeedbackType(StrEnum):
    BUG = "bug"
    SUGGESTION = "suggestion"
    PRAISE = "praise"


class FeedbackStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    PROCESSED = "processed"
    REJECTED = "rejected"


class RuleStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DEPLOYED = "deployed"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"


class RuleType(StrEnum):
    PROMPT_UPDATE = "prompt_update"
    SYSTEM_MESSAGE = "system_message"


class RuleWarning(StrEnum):
    OLD_RULE_NOT_FOUND = "old_rule_not_found"
    POSSIBLE_INJECTION = "possible_injection"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    LOW_CONFIDENCE = "low_confidence"
    FLAGGED_CONTENT = "flagged_content"
    CONTAINS_URL = "contains_url"
    CONTAINS_CODE = "contains_code"
    CONTAINS_SECRET = "contains_secret"
    COPIED_FEEDBACK = "copied_feedback"
    EXISTING_RULE_NOT_FOLLOWED = "existing_rule_not_followed"  # the complaint is about a line already there
    RECURRENCE_OF_DEPLOYED_RULE = "recurrence_of_deployed_rule"  # a deployed rule did not prevent it
    CONFLICTS_WITH_RULE = "conflicts_with_rule"  # contradicts a deployed line of its file (replay's check)


# A rule carrying any of these is suspicious: shown as such on its card and never approved automatically.
FLAG_WARNINGS = frozenset(
    {
        RuleWarning.POSSIBLE_INJECTION,
        RuleWarning.FLAGGED_CONTENT,
        RuleWarning.CONTAINS_URL,
        RuleWarning.CONTAINS_CODE,
        RuleWarning.CONTAINS_SECRET,
        RuleWarning.COPIED_FEEDBACK,
    }
)


class DeployOutcome(StrEnum):
    REPLACED = "replaced"
    APPENDED = "appended"
    NOOP = "noop"  # the line was already in the file
    REVERTED = "reverted"
    CANARY = "canary"  # added for a share of users; a replaced rule stays for the others
    PROMOTED = "promoted"  # a canary taken to every user


class FeedbackIn(BaseModel):
    """What a client sends to submit feedback (its bounds are in the README, "REST API")."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    query: CleanText = Field(min_length=1, max_length=2000)
    ai_response: CleanText = Field("", max_length=8000)
    feedback_text: CleanText = Field(min_length=1, max_length=4000)
    feedback_type: FeedbackType
    user_id: CleanText | None = Field(None, min_length=1, max_length=128)
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        try:
            encoded = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
        except ValueError as exc:
            raise ValueError("metadata must be plain JSON (no NaN or Infinity)") from exc
        if len(encoded) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class Feedback(BaseModel):
    feedback_id: str
    user_id: str
    query: str
    ai_response: str
    feedback_text: str
    feedback_type: FeedbackType
    status: FeedbackStatus
    source: str
    metadata: dict[str, Any] | None = None
    error_count: int = 0
    last_error: str | None = None
    flags: list[str] = Field(default_factory=list)  # e.g. "offensive" (content filter)
    rule_id: str | None = None
    recurrence_of: str | None = None  # the deployed rule whose complaint this is again
    created_at: datetime
    updated_at: datetime


class RuleProposal(BaseModel):
    """What a rule generator proposes; the service validates it before it becomes a Rule."""

    module_name: str
    rule_type: RuleType = RuleType.PROMPT_UPDATE
    old_rule: str | None = None
    new_rule: str
    reasoning: str
    confidence: float
    warnings: list[RuleWarning] = Field(default_factory=list)
    warning_details: WarningDetails = Field(default_factory=dict)


class GenerationInfo(BaseModel):
    generator: str
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: int | None = None
    attempts: int = 1  # requests sent, retries included


class GenerationTotals(BaseModel):
    """Every generation attempt so far (from the generations table), for cost and the error-rate alert."""

    attempts: int
    succeeded: int
    failed: int
    declined: int
    error_rate: float
    input_tokens: int
    output_tokens: int
    average_latency_ms: int | None


class Rule(BaseModel):
    rule_id: str
    feedback_id: str
    module_name: str
    rule_type: RuleType
    old_rule: str | None
    new_rule: str
    reasoning: str
    confidence: float
    status: RuleStatus
    warnings: list[RuleWarning] = Field(default_factory=list)
    warning_details: WarningDetails = Field(default_factory=dict)
    generator: str
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: int | None = None
    created_at: datetime
    updated_at: datetime
    approved_by: str | None = None
    approved_at: datetime | None = None
    rejected_by: str | None = None
    rejected_at: datetime | None = None
    reject_reason: str | None = None
    edited_by: str | None = None
    edited_at: datetime | None = None
    deployed_by: str | None = None
    deployed_at: datetime | None = None
    rolled_back_by: str | None = None
    rolled_back_at: datetime | None = None
    rollout_percent: int | None = None  # while deployed: 100, or a canary's share of users
    cluster_size: int = 1  # feedbacks this rule answers (the same complaint is attached to one rule)
    recurrences: int = 0  # feedbacks with the same complaint after it was deployed

    @property
    def canary(self) -> bool:
        return self.status is RuleStatus.DEPLOYED and self.rollout_percent is not None and self.rollout_percent < 100

    @property
    def flagged(self) -> bool:
        return any(warning in FLAG_WARNINGS for warning in self.warnings)


class RuleDetail(Rule):
    """One rule, with the effect of its deploy so far (None unless it is deployed)."""

    effect: RuleEffect | None = None
    evaluation: Evaluation | None = None  # its replay before deploy (the cases: GET /rules/{id}/evaluation)


class Deployment(BaseModel):
    deployment_id: int
    rule_id: str
    module_name: str
    deployed_by: str
    deployed_at: datetime
    version_before: str
    version_after: str
    rollback_of: int | None = None
    outcome: DeployOutcome
    state: str  # "pending" while the file is being written, "applied" once the DB knows it is done
    backup_path: str | None = None
    reload_status: str | None = None  # ok | failed | skipped
    reload_error: str | None = None
    rollout_percent: int | None = None
    commit_sha: str | None = None  # the git commit of this change in the rules folder
    commit_error: str | None = None  # why it is not in git history yet (None once committed)
    pushed_at: datetime | None = None  # when its commit reached AUTOTRAIN_GIT_REMOTE
    push_error: str | None = None  # why it has not yet (None once pushed)
    reload_attempts: int = 0  # chatbot reload calls made for it (a failed one is retried with backoff)
    reload_retry_at: datetime | None = None  # when the next retry is due (None: none pending)
    change: dict[str, Any] = Field(default_factory=dict)


class ReviewCard(BaseModel):
    """Where a rule's review card was posted (a Slack channel and message ts)."""

    rule_id: str
    channel: str
    message_ts: str | None
    state: str  # posting | posted | failed
    attempts: int
    last_error: str | None
    updated_at: datetime


class AuditEntry(BaseModel):
    audit_id: int
    at: datetime
    actor: str
    action: str
    subject_id: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any] | None = None


class RuleCluster(BaseModel):
    rule_id: str
    feedback_ids: list[str]  # the first generated the rule; the others were attached to it


class RunAllSummary(BaseModel):
    total: int
    processed: int
    rules_created: list[str]
    skipped: list[str]
    errors: list[dict[str, str]]
    clusters: list[RuleCluster] = Field(default_factory=list)  # feedback answered by one shared rule


class PipelineCounts(BaseModel):
    """The store's tallies for the status report: every status and type present (0 when none)."""

    feedback_by_status: dict[str, int]
    feedback_by_type: dict[str, int]
    rules_by_status: dict[str, int]
    deployments_total: int  # applied deployments, rollbacks not counted
    deployed_since: int  # of those, applied at or after the `since` asked for
    rollbacks_total: int
    uncommitted_deployments: int = 0  # applied changes whose git commit failed (and none has included since)
    last_commit_error: str | None = None  # the newest of their errors


class HandEditedFile(BaseModel):
    """A rule file found edited by hand in an instance's folder (several instances: the database wins)."""

    module_name: str
    kept_at: str  # where the hand-edited copy is kept, before the file was written from the database
    found_at: datetime
    instance: str | None = None  # whose folder it was (host:pid:…, as leases name an instance)


class StatusReport(BaseModel):
    feedback_by_status: dict[str, int]
    feedback_by_type: dict[str, int]
    rules_by_status: dict[str, int]
    pending_feedback: int
    deployments_total: int
    deployed_today: int
    rollbacks_total: int
    generator: str
    generation: GenerationTotals
    last_deployments: list[Deployment]
    events_undelivered: int = 0  # rule events recorded but not yet told to the review card and webhooks
    evaluation: dict[str, int] = Field(default_factory=dict)  # replays: runs by status, tokens, latency_ms
    git_history: bool = False  # commits kept in the rules folder
    uncommitted_deployments: int = 0  # rule-file changes not in git history yet (their commit failed)
    last_commit_error: str | None = None  # why, for the newest of them
    # PostgreSQL: rule files of this instance's folder found edited by hand, newest last (their copies kept)
    hand_edited_rule_files: list[HandEditedFile] = Field(default_factory=list)
    metrics: Metrics | None = None  # thresholded figures (monitoring), when a monitor is wired


class EventKind(StrEnum):
    RULE_CREATED = "rule_created"
    RULE_EDITED = "rule_edited"
    RULE_APPROVED = "rule_approved"
    RULE_REJECTED = "rule_rejected"
    RULE_DEPLOYED = "rule_deployed"
    RULE_ROLLED_BACK = "rule_rolled_back"
    RULE_PROMOTED = "rule_promoted"
    RULE_GROUPED = "rule_grouped"  # more feedback attached to it (a cluster)
    RULE_RECURRED = "rule_recurred"  # its complaint came back after it was deployed
    RULE_EVALUATED = "rule_evaluated"  # replayed against the chatbot and judged (autotrain/evaluation.py)


class NewEvent(BaseModel):
    """An event a state change records in its own transaction (the outbox). `held`: not delivered until
    the deploy that recorded it has its reload result (`record_reload`), or EVENT_HOLD_SECONDS at most."""

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    actor_id: str
    held: bool = False


class OutboxEvent(BaseModel):
    """A recorded event, as the dispatcher reads it: the rule as it was right after the change."""

    event_id: int
    kind: EventKind
    rule: Rule
    actor_id: str
    deployment_id: int | None = None
    created_at: datetime
    attempts: int = 0


class PipelineEvent(BaseModel):
    """What a notifier is told: the event, the rule as of the event, and the deployment (deploy events)."""

    kind: EventKind
    rule: Rule
    actor_id: str
    deployment: Deployment | None = None
    event_id: int | None = None  # the outbox row; stable across redeliveries
    occurred_at: datetime | None = None  # when the change was recorded (not when it is delivered)


class DeployResult(BaseModel):
    """A deploy, promote or rollback: the rule after it, and the deployment that was recorded."""

    rule: Rule
    deployment: Deployment


class ReconcileReport(BaseModel):
    """What start-up settled after a crash."""

    deployments_completed: list[int]
    deployments_aborted: list[int]
    feedback_requeued: list[str]
    commits_restored: list[int] = []  # deployments whose file change was committed to git only now


# The words the enums above are shown as, marked for the catalogues (an error's `{status}`, a card's title).
STATE_WORDS = (
    N_("pending"),
    N_("processing"),
    N_("processed"),
    N_("rejected"),
    N_("approved"),
    N_("deployed"),
    N_("rolled_back"),
    N_("bug"),
    N_("suggestion"),
    N_("praise"),
    N_("admin"),
    N_("reporter"),
)
