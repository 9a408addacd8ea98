"""Monitoring: metrics computed from the database, threshold alerts with cool-down and resolve, the digest.

Pure rules here (what crosses a threshold, when an alert fires, repeats or resolves, what a digest says);
the store supplies the figures and keeps alert state, so a restart neither re-fires nor forgets; sinks
(Slack, webhooks) are told. Time always comes from the injected clock.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from enum import StrEnum
from itertools import chain, pairwise
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from autotrain.effect import CanaryOutcome, CanarySplit, RuleEffect
from autotrain.rollout import in_rollout
from autotrain.text import fold

if TYPE_CHECKING:  # ports imports this module's models; the Monitor only needs the protocol for its hint
    from autotrain.ports import MonitoringStore

log = logging.getLogger(__name__)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Metrics(BaseModel):
    at: datetime
    pending_feedback: int
    oldest_pending_feedback_id: str | None
    oldest_pending_at: datetime | None
    pending_rules: int
    feedback_by_status: dict[str, int]
    feedback_by_type: dict[str, int]
    rules_by_status: dict[str, int]
    error_rate_window_minutes: int
    generation_attempts_in_window: int
    generation_failures_in_window: int
    generation_error_rate: float
    deployed_today: int
    approval_window_days: int
    approvals_in_window: int
    approval_seconds_avg: float | None
    approval_seconds_p90: float | None
    uncommitted_deployments: int = 0  # rule-file changes whose git commit failed
    unpushed_deployments: int = 0  # rule-file commits whose push to AUTOTRAIN_GIT_REMOTE failed (not pushed since)
    rules_not_working: list[str] = []  # deployed rules whose complaint keeps coming back (autotrain/effect.py)
    failing_reloads: list[str] = []  # rule files whose newest change the chatbot still has not reloaded


class MetricsData(BaseModel):
    """The raw figures behind Metrics, as the store reads them; the monitor derives the rates and percentiles."""

    pending_feedback: int
    oldest_pending_feedback_id: str | None
    oldest_pending_at: datetime | None
    pending_rules: int
    feedback_by_status: dict[str, int]
    feedback_by_type: dict[str, int]
    rules_by_status: dict[str, int]
    generation_attempts: int  # in the error-rate window
    generation_failures: int
    deployed_today: int
    approval_seconds: list[float]  # creation to approval, of each rule approved in the approval window
    uncommitted_deployments: int = 0
    unpushed_deployments: int = 0


@dataclass(frozen=True)
class AlertThresholds:
    pending_max: int = 100
    error_rate_max: float = 0.05
    error_rate_window_minutes: int = 60
    error_rate_min_attempts: int = 5  # below this many generations in the window, the rate is noise
    deploys_per_day_max: int = 50
    approval_hours_max: float = 24
    cooldown_seconds: int = 3600
    recurrences_min: int = 3  # rule_not_working: recurrences since the deploy before it can fire
    reload_attempts_min: int = 3  # chatbot_reload: failed reload calls of a file's newest change before it fires


class AlertAction(StrEnum):
    RUN_ALL = "run_all"
    SHOW_PENDING_RULES = "show_pending_rules"
    SHOW_STATUS = "show_status"
    SHOW_DEPLOYMENTS = "show_deployments"
    ROLL_BACK_RULES = "roll_back_rules"  # Roll back / Show rule, for each rule the alert names


@dataclass(frozen=True)
class AlertDefinition:
    name: str
    severity: Severity
    title: str
    value: Callable[[Metrics], float | None]  # None: not measurable now (too little data)
    threshold: Callable[[AlertThresholds], float]
    show: Callable[[float], str]
    advice: str
    action: AlertAction
    subjects: Callable[[Metrics], list[str]] | None = None  # the rules it is about (buttons for each)


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _hours(value: float) -> str:
    return f"{value:.1f} h"


def _count(value: float) -> str:
    return f"{value:g}"


ALERTS: tuple[AlertDefinition, ...] = (
    AlertDefinition(
        name="pending_feedback",
        severity=Severity.WARNING,
        title="Pending feedback backlog",
        value=lambda m: float(m.pending_feedback),
        threshold=lambda t: float(t.pending_max),
        show=_count,
        advice="Generate rules for the backlog (run-all), or check why generation is not keeping up.",
        action=AlertAction.RUN_ALL,
    ),
    AlertDefinition(
        name="generation_error_rate",
        severity=Severity.CRITICAL,
        title="Rule generation error rate",
        value=lambda m: m.generation_error_rate if m.generation_attempts_in_window else None,
        threshold=lambda t: t.error_rate_max,
        show=_percent,
        advice="Check the generator (Claude API key, rate limits, outages) and the last errors in "
        "/autotrain status; failed feedback stays pending and can be retried with run-all.",
        action=AlertAction.SHOW_STATUS,
    ),
    AlertDefinition(
        name="deploys_per_day",
        severity=Severity.INFO,
        title="Rules deployed today",
        value=lambda m: float(m.deployed_today),
        threshold=lambda t: float(t.deploys_per_day_max),
        show=_count,
        advice="An unusual number of rule changes today: check that the deployments are intended.",
        action=AlertAction.SHOW_DEPLOYMENTS,
    ),
    AlertDefinition(
        name="approval_time",
        severity=Severity.WARNING,
        title="Average time to approve a rule",
        value=lambda m: m.approval_seconds_avg / 3600 if m.approval_seconds_avg is not None else None,
        threshold=lambda t: t.approval_hours_max,
        show=_hours,
        advice="Rules wait too long for review: look at the pending rules.",
        action=AlertAction.SHOW_PENDING_RULES,
    ),
    AlertDefinition(
        name="git_history",
        severity=Severity.WARNING,
        title="Rule-file changes missing from git history",
        value=lambda m: float(m.uncommitted_deployments),
        threshold=lambda t: 0.0,  # any: the rules folder's history has a gap until they are committed
        show=_count,
        advice="Their git commit failed (see the error in /autotrain status, usually a left-over .git/index.lock)."
        " The files are deployed; the next change of the file, or the next start, commits them once git works.",
        action=AlertAction.SHOW_STATUS,
    ),
    AlertDefinition(
        name="git_push",
        severity=Severity.WARNING,
        title="Rule-file commits not pushed to the git remote",
        value=lambda m: float(m.unpushed_deployments),
        threshold=lambda t: 0.0,  # any: the remote copy of the rules' history is behind
        show=_count,
        advice="Their push to AUTOTRAIN_GIT_REMOTE failed (the reason is on each deployment, push_error): check"
        " that the remote is reachable, its credentials, and that its branch has not moved on (a push never"
        " forces). The rules are deployed and committed; the next commit, or the periodic retry, pushes them.",
        action=AlertAction.SHOW_STATUS,
    ),
    AlertDefinition(
        name="rule_not_working",
        severity=Severity.WARNING,
        title="Deployed rules whose complaint keeps coming back",
        value=lambda m: float(len(m.rules_not_working)),
        threshold=lambda t: 0.0,
        show=_count,
        advice="The complaint each was made for came back at least as often as before it was deployed: roll it"
        " back, or look at the rule and write a better one.",
        action=AlertAction.ROLL_BACK_RULES,
        subjects=lambda m: m.rules_not_working,
    ),
    AlertDefinition(
        name="chatbot_reload",
        severity=Severity.WARNING,
        title="Rule files the chatbot has not reloaded",
        value=lambda m: float(len(m.failing_reloads)),
        threshold=lambda t: 0.0,
        show=_count,
        advice="Auto-Train's reload call to AUTOTRAIN_RELOAD_URL keeps failing (it is retried with backoff): check"
        " that the chatbot is up and verifies the signature; until then it serves its previous rules.",
        action=AlertAction.SHOW_STATUS,
    ),
)


def measured_value(definition: AlertDefinition, metrics: Metrics, thresholds: AlertThresholds) -> float | None:
    if definition.name == "generation_error_rate" and (
        metrics.generation_attempts_in_window < thresholds.error_rate_min_attempts
    ):
        return None
    return definition.value(metrics)


class AlertState(BaseModel):
    name: str
    active: bool
    since: datetime | None = None
    last_notified_at: datetime | None = None
    last_value: float | None = None
    version: int = 0  # compare-and-set: an update names the version it read


class AlertDecision(StrEnum):
    FIRE = "fired"
    REPEAT = "repeated"
    RESOLVE = "resolved"
    NONE = "none"


def decide(state: AlertState | None, crossed: bool, now: datetime, cooldown_seconds: int) -> AlertDecision:
    """Fire on crossing, repeat at most once per cool-down while crossed, resolve when it clears."""
    active = state is not None and state.active
    if crossed and not active:
        return AlertDecision.FIRE
    if crossed and active:
        last = state.last_notified_at if state else None
        if last is None or now - last >= timedelta(seconds=cooldown_seconds):
            return AlertDecision.REPEAT
        return AlertDecision.NONE
    if active:
        return AlertDecision.RESOLVE
    return AlertDecision.NONE


class AlertEvent(BaseModel):
    name: str
    title: str
    severity: Severity
    kind: AlertDecision
    value: float | None
    threshold: float
    value_text: str
    threshold_text: str
    advice: str
    action: AlertAction
    at: datetime
    since: datetime | None
    subjects: list[str] = []  # the rules it is about (rule_not_working)

    @property
    def summary(self) -> str:
        if self.kind is AlertDecision.RESOLVE:
            return f"{self.title} is back to normal: {self.value_text} (threshold {self.threshold_text})."
        return f"{self.title} is {self.value_text}, above the threshold of {self.threshold_text}."


# ---------------------------------------------------------------------- digest


class DigestRule(BaseModel):
    rule_id: str
    module_name: str
    new_rule: str
    channel: str | None = None  # where its review card is, for a link
    message_ts: str | None = None


class DigestCanary(BaseModel):
    """A rule deployed to a share of users, and the feedback from users in and out of it since it started."""

    rule_id: str
    module_name: str
    rollout_percent: int
    feedback_in_canary: int
    feedback_outside: int
    split: CanarySplit | None = None  # its complaint in and out of the canary, and what the evidence says


class CanaryRule(BaseModel):
    """A rule deployed to a share of users (the store's part of a DigestCanary)."""

    rule_id: str
    module_name: str
    rollout_percent: int


class DigestData(BaseModel):
    """The raw figures of a digest period, as the store reads them; the monitor adds themes and canary splits."""

    feedback_by_type: dict[str, int]
    rules_generated: int
    rules_approved: int
    rules_rejected: int
    rules_deployed: int
    rules_rolled_back: int
    pending_feedback: int
    pending_rules: int
    oldest_pending_feedback_id: str | None
    oldest_pending_at: datetime | None
    approval_seconds: list[float]
    feedback_texts: list[str]  # of the period, oldest first
    feedback_users: list[str]  # who sent each of them (same order)
    canaries: list[CanaryRule]
    deployed: list[DigestRule]


class Digest(BaseModel):
    start: datetime
    end: datetime
    feedback_by_type: dict[str, int]
    rules_generated: int
    rules_approved: int
    rules_rejected: int
    rules_deployed: int
    rules_rolled_back: int
    pending_feedback: int
    pending_rules: int
    oldest_pending_feedback_id: str | None
    oldest_pending_at: datetime | None
    approval_seconds_avg: float | None
    approval_seconds_p90: float | None
    themes: list[tuple[str, int]]
    deployed: list[DigestRule]
    canaries: list[DigestCanary] = []
    effects: list[RuleEffect] = []  # "Did it work?": rules deployed in the effect window, before / since

    @property
    def feedback_received(self) -> int:
        return sum(self.feedback_by_type.values())

    @property
    def quiet(self) -> bool:
        return not (
            self.feedback_received
            or self.rules_generated
            or self.rules_approved
            or self.rules_rejected
            or self.rules_deployed
            or self.rules_rolled_back
        )


# Words too common to be a theme (folded: no accents), Vietnamese and English.
STOPWORDS = frozenset(
    """
    a ai anh ban bao bi bot cai cho chi co con cua cung da dang day de den di duoc em gi giup hay hon khi
    khong la lai lam len luc ma minh moi mot nay neu nhe nhieu nhu nhung noi qua ra rat roi sao se shop
    so ta tai thay the thi tien toi tra trong tu tuong van ve vi voi xin vay nao kia do o va cac
    the is are was were be to of and or in on for it this that with not but too very so my me i you
    your we they he she at as an by from have has had do does did can could would should will just
    """.split()
)


def recurring_themes(texts: Sequence[str], top: int = 5, minimum: int = 2) -> list[tuple[str, int]]:
    """The most frequent meaningful two-word phrases (else words) across feedback texts, folded.

    Each text counts a phrase once, so one long complaint does not make a theme. (Counted by Counter's C loop
    over all texts at once: a day's digest folds and counts ten thousand of them.)
    """
    meaningful = [
        [w for w in fold(text).split() if w not in STOPWORDS and not w.isdigit() and len(w) > 1] for text in texts
    ]
    unigrams = Counter(chain.from_iterable(set(words) for words in meaningful))
    bigrams = Counter(chain.from_iterable({f"{a} {b}" for a, b in pairwise(words)} for words in meaningful))
    themes = [(phrase, n) for phrase, n in bigrams.most_common(top) if n >= minimum]
    if len(themes) < top:
        covered = {word for phrase, _ in themes for word in phrase.split()}
        themes += [(word, n) for word, n in unigrams.most_common(top * 3) if n >= minimum and word not in covered][
            : top - len(themes)
        ]
    return themes


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (p90 of 10 values is the 9th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def average(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------- sinks and the monitor


class MonitoringSink(Protocol):
    """Where alerts and digests go (Slack channels, webhooks)."""

    async def alert(self, event: AlertEvent) -> None: ...

    async def digest(self, digest: Digest) -> None: ...

    async def canary_decided(self, outcome: CanaryOutcome) -> None: ...


class EffectsOf(Protocol):
    """The effects of deployed rules (autotrain/usecases/effects.py RuleEffects.deployed), filtered."""

    async def __call__(
        self, *, min_complaints: int | None = None, deployed_since: datetime | None = None, canaries: bool = False
    ) -> list[RuleEffect]: ...


class NotWorking(Protocol):
    """The deployed rules judged `not_working` (RuleEffects.not_working)."""

    async def __call__(self, *, min_complaints: int) -> list[str]: ...


class Monitor:
    """Computes metrics, evaluates alerts and builds digests; tells the sinks."""

    def __init__(
        self,
        *,
        store: MonitoringStore,
        thresholds: AlertThresholds,
        sinks: Sequence[MonitoringSink] = (),
        clock: Callable[[], datetime],
        timezone: tzinfo,
        approval_window_days: int = 7,
        holder: str = "autotrain",
        effects: EffectsOf | None = None,
        not_working: NotWorking | None = None,
        effect_window_days: int = 7,
    ) -> None:
        self.effects = effects  # the effect of deployed rules (autotrain/usecases/effects.py)
        self.not_working = not_working  # the deployed rules whose complaint keeps coming back
        self.effect_window_days = effect_window_days
        self.store = store
        self.thresholds = thresholds
        self.sinks = list(sinks)
        self.clock = clock
        self.timezone = timezone
        self.approval_window_days = approval_window_days
        self.holder = holder

    def day_start(self, now: datetime) -> datetime:
        local = now.astimezone(self.timezone)
        return datetime.combine(local.date(), time.min, tzinfo=self.timezone).astimezone(UTC)

    async def metrics(self) -> Metrics:
        now = self.clock()
        window = self.thresholds.error_rate_window_minutes
        data = await self.store.metrics_data(
            now=now,
            error_window_start=now - timedelta(minutes=window),
            day_start=self.day_start(now),
            approval_window_start=now - timedelta(days=self.approval_window_days),
        )
        attempts, failures, approvals = data.generation_attempts, data.generation_failures, data.approval_seconds
        return Metrics(
            at=now,
            pending_feedback=data.pending_feedback,
            oldest_pending_feedback_id=data.oldest_pending_feedback_id,
            oldest_pending_at=data.oldest_pending_at,
            pending_rules=data.pending_rules,
            feedback_by_status=data.feedback_by_status,
            feedback_by_type=data.feedback_by_type,
            rules_by_status=data.rules_by_status,
            error_rate_window_minutes=window,
            generation_attempts_in_window=attempts,
            generation_failures_in_window=failures,
            generation_error_rate=round(failures / attempts, 4) if attempts else 0.0,
            deployed_today=data.deployed_today,
            approval_window_days=self.approval_window_days,
            approvals_in_window=len(approvals),
            approval_seconds_avg=average(approvals),
            approval_seconds_p90=percentile(approvals, 0.9),
            uncommitted_deployments=data.uncommitted_deployments,
            unpushed_deployments=data.unpushed_deployments,
            failing_reloads=[
                d.module_name
                for d in await self.store.failing_reloads(min_attempts=self.thresholds.reload_attempts_min)
            ],
            rules_not_working=(
                await self.not_working(min_complaints=self.thresholds.recurrences_min) if self.not_working else []
            ),
        )

    async def check_alerts(self) -> list[AlertEvent]:
        """Evaluate every threshold once; notify what fired, repeated or resolved. Returns those events."""
        metrics = await self.metrics()
        now = metrics.at
        events = []
        for definition in ALERTS:
            value = measured_value(definition, metrics, self.thresholds)
            threshold = definition.threshold(self.thresholds)
            crossed = value is not None and value > threshold
            state = await self.store.get_alert_state(definition.name)
            decision = decide(state, crossed, now, self.thresholds.cooldown_seconds)
            if decision is AlertDecision.NONE:
                continue
            version = state.version if state else 0
            new_state = AlertState(
                name=definition.name,
                active=decision is not AlertDecision.RESOLVE,
                since=(state.since if state and state.active else now) if crossed else None,
                last_notified_at=now,
                last_value=value,
                version=version + 1,
            )
            # compare-and-set: of two processes evaluating at once, one notifies
            if not await self.store.save_alert_state(new_state, expected_version=version):
                continue
            event = AlertEvent(
                name=definition.name,
                title=definition.title,
                severity=definition.severity,
                kind=decision,
                value=value,
                threshold=threshold,
                value_text=definition.show(value) if value is not None else "not measurable",
                threshold_text=definition.show(threshold),
                advice=definition.advice,
                action=definition.action,
                at=now,
                since=new_state.since or (state.since if state else None),
                subjects=definition.subjects(metrics) if definition.subjects and crossed else [],
            )
            events.append(event)
            errors = await self._tell("alert", event)
            if self.sinks and len(errors) == len(self.sinks):
                # nobody was told: put the state back, so that the next check tries again (not after the
                # cool-down, and a resolve is not lost)
                previous = state or AlertState(name=definition.name, active=False)
                restored = previous.model_copy(update={"version": new_state.version + 1})
                await self.store.save_alert_state(restored, expected_version=new_state.version)
        return events

    async def run_alert_job(self, interval_seconds: float) -> list[AlertEvent]:
        """The scheduled check: only the process holding the lease evaluates (a second `serve` stays quiet)."""
        if not await self.store.acquire_lease(
            "alerts", holder=self.holder, now=self.clock(), ttl_seconds=interval_seconds * 2
        ):
            return []
        return await self.check_alerts()

    async def build_digest(self, *, end: datetime | None = None, hours: float = 24) -> Digest:
        end = end or self.clock()
        start = end - timedelta(hours=hours)
        data = await self.store.digest_data(start=start, end=end)
        recent = end - timedelta(days=self.effect_window_days)
        # the rules deployed lately ("Did it work?") and the canaries (their split)
        found = await self.effects(deployed_since=recent, canaries=True) if self.effects else []
        effects = {e.rule_id: e for e in found}
        users = data.feedback_users
        canaries = []
        for canary in data.canaries:
            split = effects[canary.rule_id].canary if canary.rule_id in effects else None
            if split is not None:  # since the canary started, not the period's raw feedback
                inside, outside = split.inside.feedback, split.outside.feedback
            else:
                inside = sum(in_rollout(canary.rule_id, user, canary.rollout_percent) for user in users)
                outside = len(users) - inside
            canaries.append(
                DigestCanary(**canary.model_dump(), feedback_in_canary=inside, feedback_outside=outside, split=split)
            )
        return Digest(
            start=start,
            end=end,
            feedback_by_type=data.feedback_by_type,
            rules_generated=data.rules_generated,
            rules_approved=data.rules_approved,
            rules_rejected=data.rules_rejected,
            rules_deployed=data.rules_deployed,
            rules_rolled_back=data.rules_rolled_back,
            pending_feedback=data.pending_feedback,
            pending_rules=data.pending_rules,
            oldest_pending_feedback_id=data.oldest_pending_feedback_id,
            oldest_pending_at=data.oldest_pending_at,
            approval_seconds_avg=average(data.approval_seconds),
            approval_seconds_p90=percentile(data.approval_seconds, 0.9),
            themes=recurring_themes(data.feedback_texts),
            deployed=data.deployed,
            canaries=canaries,
            effects=[e for e in effects.values() if e.deployed_at >= recent],
        )

    async def announce_canary(self, outcome: CanaryOutcome) -> None:
        """Tell the sinks what the auto-decider did with a canary (the review channel, webhooks)."""
        await self._tell("canary_decided", outcome)

    async def post_digest(self, *, key: str | None = None, raise_errors: bool = False) -> Digest | None:
        """Build and send the digest. With a key (the scheduled run's), only the first process to claim it
        sends; on demand (no key) it is always sent. With raise_errors, a sink's failure is raised (after
        every sink was tried), so that whoever asked can be told."""
        now = self.clock()
        if key is not None and not await self.store.claim_digest(key, now=now):
            return None
        digest = await self.build_digest(end=now)
        errors = await self._tell("digest", digest)
        if raise_errors and errors:
            raise errors[0]
        return digest

    async def _tell(self, what: str, item: Any) -> list[Exception]:
        errors = []
        for sink in self.sinks:
            try:
                await getattr(sink, what)(item)
            except Exception as exc:
                log.exception("%s sink %s failed", what, type(sink).__name__)
                errors.append(exc)
        return errors
