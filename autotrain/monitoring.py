"""Monitoring: metrics computed from the database, threshold alerts with cool-down and resolve, the digest.

Pure rules here (what crosses a threshold, when an alert fires, repeats or resolves, what a digest says);
the store supplies the figures and keeps alert state, so a restart neither re-fires nor forgets; sinks
(Slack, webhooks) are told. Time always comes from the injected clock.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from enum import StrEnum
from itertools import chain
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from autotrain.effect import CanaryOutcome, CanarySplit, RuleEffect
from autotrain.i18n import N_, _, number
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
    hand_edited_files: list[str] = []  # rule files found edited by hand in an instance's folder lately (PostgreSQL)


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


HAND_EDIT_WINDOW = timedelta(days=1)  # a hand edit keeps its alert active this long, then it resolves


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


class Unit(StrEnum):
    """What an alert's figure is, for showing it."""

    COUNT = "count"
    SHARE = "share"  # 0.05 is 5 %
    HOURS = "hours"


def plain_value(unit: Unit, value: float) -> str:
    """The figure as the event records it (`value_text`, for webhooks): 3, 80.0%, 2.0 h, in any language."""
    if unit is Unit.SHARE:
        return f"{value:.1%}"
    if unit is Unit.HOURS:
        return f"{value:.1f} h"
    return f"{value:g}"


def shown_value(unit: Unit, value: float | None) -> str:
    """The figure for a reader, in the current language: 3 · 80% / 2,5% · 2 h / 1,5 giờ."""
    if value is None:
        return _("not measurable")
    if unit is Unit.SHARE:
        return _("{value}%", value=number(round(value * 100, 1)))
    if unit is Unit.HOURS:
        return _("{value} h", value=number(round(value, 1)))
    return number(value)


@dataclass(frozen=True)
class AlertDefinition:
    name: str
    severity: Severity
    title: str  # N_(): translated where it is shown (`alert_title`)
    value: Callable[[Metrics], float | None]  # None: not measurable now (too little data)
    threshold: Callable[[AlertThresholds], float]
    unit: Unit
    advice: str  # N_(), as the title
    action: AlertAction
    subjects: Callable[[Metrics], list[str]] | None = None  # the rules it is about (buttons for each)


ALERTS: tuple[AlertDefinition, ...] = (
    AlertDefinition(
        name="pending_feedback",
        severity=Severity.WARNING,
        title=N_("Pending feedback backlog"),
        value=lambda m: float(m.pending_feedback),
        threshold=lambda t: float(t.pending_max),
        unit=Unit.COUNT,
        advice=N_("Generate rules for the backlog (run-all), or check why generation is not keeping up."),
        action=AlertAction.RUN_ALL,
    ),
    AlertDefinition(
        name="generation_error_rate",
        severity=Severity.CRITICAL,
        title=N_("Rule generation error rate"),
        value=lambda m: m.generation_error_rate if m.generation_attempts_in_window else None,
        threshold=lambda t: t.error_rate_max,
        unit=Unit.SHARE,
        advice=N_(
            "Check the generator (Claude API key, rate limits, outages) and the last errors in "
            "/autotrain status; failed feedback stays pending and can be retried with run-all."
        ),
        action=AlertAction.SHOW_STATUS,
    ),
    AlertDefinition(
        name="deploys_per_day",
        severity=Severity.INFO,
        title=N_("Rules deployed today"),
        value=lambda m: float(m.deployed_today),
        threshold=lambda t: float(t.deploys_per_day_max),
        unit=Unit.COUNT,
        advice=N_("An unusual number of rule changes today: check that the deployments are intended."),
        action=AlertAction.SHOW_DEPLOYMENTS,
    ),
    AlertDefinition(
        name="approval_time",
        severity=Severity.WARNING,
        title=N_("Average time to approve a rule"),
        value=lambda m: m.approval_seconds_avg / 3600 if m.approval_seconds_avg is not None else None,
        threshold=lambda t: t.approval_hours_max,
        unit=Unit.HOURS,
        advice=N_("Rules wait too long for review: look at the pending rules."),
        action=AlertAction.SHOW_PENDING_RULES,
    ),
    AlertDefinition(
        name="git_history",
        severity=Severity.WARNING,
        title=N_("Rule-file changes missing from git history"),
        value=lambda m: float(m.uncommitted_deployments),
        threshold=lambda t: 0.0,  # any: the rules folder's history has a gap until they are committed
        unit=Unit.COUNT,
        advice=N_(
            "Their git commit failed (see the error in /autotrain status, usually a left-over .git/index.lock)."
            " The files are deployed; the next change of the file, or the next start, commits them once git works."
        ),
        action=AlertAction.SHOW_STATUS,
    ),
    AlertDefinition(
        name="git_push",
        severity=Severity.WARNING,
        title=N_("Rule-file commits not pushed to the git remote"),
        value=lambda m: float(m.unpushed_deployments),
        threshold=lambda t: 0.0,  # any: the remote copy of the rules' history is behind
        unit=Unit.COUNT,
        advice=N_(
            "Their push to AUTOTRAIN_GIT_REMOTE failed (the reason is on each deployment, push_error): check"
            " that the remote is reachable, its credentials, and that its branch has not moved on (a push never"
            " forces). The rules are deployed and committed; the next commit, or the periodic retry, pushes them."
        ),
        action=AlertAction.SHOW_STATUS,
    ),
    AlertDefinition(
        name="rule_not_working",
        severity=Severity.WARNING,
        title=N_("Deployed rules whose complaint keeps coming back"),
        value=lambda m: float(len(m.rules_not_working)),
        threshold=lambda t: 0.0,
        unit=Unit.COUNT,
        advice=N_(
            "The complaint each was made for came back at least as often as before it was deployed: roll it"
            " back, or look at the rule and write a better one."
        ),
        action=AlertAction.ROLL_BACK_RULES,
        subjects=lambda m: m.rules_not_working,
    ),
    AlertDefinition(
        name="rule_file_hand_edited",
        severity=Severity.WARNING,
        title=N_("Rule files edited by hand on an instance"),
        value=lambda m: float(len(m.hand_edited_files)),
        threshold=lambda t: 0.0,  # any, in the last day
        unit=Unit.COUNT,
        advice=N_(
            "Someone changed a rule file in an instance's rules folder. With several instances the database"
            " wins: the file was written again from its newest version, and the edited copy kept (where: in"
            " /autotrain status). To keep that change, deploy it as a rule."
        ),
        action=AlertAction.SHOW_STATUS,
    ),
    AlertDefinition(
        name="chatbot_reload",
        severity=Severity.WARNING,
        title=N_("Rule files the chatbot has not reloaded"),
        value=lambda m: float(len(m.failing_reloads)),
        threshold=lambda t: 0.0,
        unit=Unit.COUNT,
        advice=N_(
            "Auto-Train's reload call to AUTOTRAIN_RELOAD_URL keeps failing (it is retried with backoff): check"
            " that the chatbot is up and verifies the signature; until then it serves its previous rules."
        ),
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
    value_text: str  # as recorded, the same in every language (plain_value); a reader sees shown_value
    threshold_text: str
    advice: str
    action: AlertAction
    at: datetime
    since: datetime | None
    subjects: list[str] = []  # the rules it is about (rule_not_working)
    unit: Unit = Unit.COUNT

    # `title` and `advice` are the catalogue's English source (webhooks get them as they are); a reader gets
    # them, and the summary, in the current language:

    @property
    def shown_title(self) -> str:
        return _(self.title)

    @property
    def shown_advice(self) -> str:
        return _(self.advice)

    @property
    def summary(self) -> str:
        """One sentence: the figure and its threshold, in the current language."""
        value, threshold = shown_value(self.unit, self.value), shown_value(self.unit, self.threshold)
        if self.kind is AlertDecision.RESOLVE:
            return _(
                "{title} is back to normal: {value} (threshold {threshold}).",
                title=self.shown_title,
                value=value,
                threshold=threshold,
            )
        return _(
            "{title} is {value}, above the threshold of {threshold}.",
            title=self.shown_title,
            value=value,
            threshold=threshold,
        )


# ---------------------------------------------------------------------- digest


class DigestRule(BaseModel):
    """A rule deployed in the period: listed once however many deployments it had (a canary, its promotion)."""

    rule_id: str
    module_name: str
    new_rule: str
    channel: str | None = None  # where its review card is, for a link
    message_ts: str | None = None
    # Values of DeployOutcome and RuleStatus (autotrain.models imports this module, so not its enums here).
    # How it went in: "noop" (its line was already in the file) if any deployment in the period was one, else
    # its last deployment's outcome ("canary", "promoted", "replaced", "appended").
    outcome: str | None = None
    status: str | None = None  # the rule's status now: "rolled_back" when it was rolled back since

    @property
    def noop(self) -> bool:
        return self.outcome == "noop"

    @property
    def rolled_back(self) -> bool:
        return self.status == "rolled_back"


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


# Words that make no theme on their own nor inside a phrase: Vietnamese function words (as typed, with their
# diacritics), what every complaint about this chatbot says (bot, gợi ý, tư vấn, mặc), and English ones.
VIETNAMESE_STOP_WORDS = frozenset(
    """
    à ạ ấy ai anh bà bác bạn bằng bao bây bị bởi cả các cái cần càng cậu chỉ chị cho chứ chưa chúng có con còn
    của cùng cũng cứ dạ đã đang đâu đây đấy để đến đều đi đó được em gì giờ giữa hả hay hãy hoặc hơi hơn họ khá
    khi không kia là lại lắm làm lên luôn lúc mà mấy mình mọi mỗi một nào này nên nếu ngay nha nhau nhé nhỉ nhiều
    như nhưng những nó nữa ơi ông ở qua quá ra rằng rất rồi sao sau sẽ so sự ta tại thật thế thấy theo thì thôi
    tôi tớ trên trong từ tự vào vẫn về vì với vậy xin ừ
    bot shop admin chatbot gợi ý tư vấn mặc độ
    """.split()
)
ENGLISH_STOP_WORDS = frozenset(
    """
    a an the and or but if then so to of in on at by for from with about as into than too very just also not no
    yes is are was were be been being am do does did done have has had can could would should will may might
    must it its this that these those there here i me my you your we our us they their them he she his her him
    what which who when where why how all any some more most much many such only own same other get got keep
    keeps kept please don doesn didn isn wasn aren won bot ai shop chatbot
    """.split()
)
# A word typed without diacritics is compared with the bare forms of the Vietnamese ones, except those that
# are as often a garment or its shape once their accents are gone: cỡ, da, dáng, dày, đế, đồ / đỏ, mốt, may,
# váy, mới.
_AMBIGUOUS_BARE = frozenset("co da dang day de do mot may vay moi".split())
_BARE_STOP_WORDS = frozenset(fold(word) for word in VIETNAMESE_STOP_WORDS) - _AMBIGUOUS_BARE | ENGLISH_STOP_WORDS
# A clause ends at a line break and at any punctuation but an apostrophe or a hyphen ("knee-length", "it's").
_CLAUSE_END = re.compile(r"[^\w \t'’-]+")
_WORD = re.compile(r"\w+")
LONGEST_THEME = 4  # words: two Vietnamese words of two syllables ("trả lời dài dòng")

Phrase = tuple[str, ...]  # folded words
Spelled = dict[Phrase, Phrase]  # phrases, folded → as spelled (the spelling in one text)


def _content_word(word: str) -> str | None:
    """The folded form of a lower-case NFC word that can be part of a theme; None for a stop word, a number,
    a single letter."""
    bare = fold(word)
    if len(bare) < 2 or bare.isdigit() or " " in bare:
        return None
    if bare == word:  # typed without diacritics: a Vietnamese word with its accents left off, or English
        return None if bare in _BARE_STOP_WORDS else bare
    return None if word in VIETNAMESE_STOP_WORDS else bare


class _Phrases:
    """The phrases and the content words of texts: runs of content words adjacent within a clause, every 2 to
    LONGEST_THEME words of them (and, asked for apart, every word of them). Each distinct word is judged once,
    and each distinct clause and run cut up once: a day's feedback says "trời nóng quá" and "áo khoác" many
    times, and cutting texts up is what a digest spends its time on."""

    def __init__(self) -> None:
        self.words: dict[str, str | None] = {}  # word → folded, None for a stop word
        self.clauses: dict[str, tuple[Spelled, tuple[tuple[str, ...], ...]]] = {}  # → (its phrases, its runs)
        self.runs: dict[tuple[str, ...], Spelled] = {}  # run → its phrases

    def of(self, text: str) -> Spelled:
        """The phrases of `text`, each once."""
        found: Spelled = {}
        clauses = self.clauses
        for clause in self._clauses(text):
            cut = clauses.get(clause)
            if cut is None:
                cut = clauses[clause] = self._clause(clause)
            found.update(cut[0])
        return found

    def single(self, text: str) -> Spelled:
        """The content words of `text` (once `of` has seen it), each once."""
        words, clauses = self.words, self.clauses
        return {
            (words[word],): (word,)  # a word of a run is a content word: never None
            for clause in self._clauses(text)
            for run in clauses[clause][1]
            for word in run
        }

    @staticmethod
    def _clauses(text: str) -> list[str]:
        # stored feedback is NFC already (models.clean_text), for which normalising is a quick check
        return _CLAUSE_END.split(unicodedata.normalize("NFC", text.lower()))

    def _clause(self, clause: str) -> tuple[Spelled, tuple[tuple[str, ...], ...]]:
        phrases: Spelled = {}
        runs: list[tuple[str, ...]] = []
        words, run = self.words, []
        for word in [*_WORD.findall(clause), ""]:  # "": the clause's end ends its last run
            bare = words.get(word, "") if word else None
            if bare == "":
                bare = words[word] = _content_word(word)
            if bare is not None:
                run.append(word)
            elif run:
                spelled = tuple(run)
                runs.append(spelled)
                if len(spelled) > 1:
                    found = self.runs.get(spelled)
                    if found is None:
                        found = self.runs[spelled] = self._run(spelled)
                    phrases.update(found)
                run = []
        return phrases, tuple(runs)

    def _run(self, spelled: tuple[str, ...]) -> Spelled:
        folded = tuple(map(self.words.__getitem__, spelled))
        length = len(spelled)
        if length == 2:  # most runs are one or two words
            return {folded: spelled}
        return {
            folded[start : start + size]: spelled[start : start + size]
            for size in range(2, min(LONGEST_THEME, length) + 1)
            for start in range(length - size + 1)
        }


def _inside(short: Phrase, long: Phrase) -> bool:
    size = len(short)
    return any(long[i : i + size] == short for i in range(len(long) - size + 1))


def _edges_meet(one: Phrase, other: Phrase) -> bool:
    """One's end is the other's start: "khoác dày" and "áo khoác" are the same words, shifted."""
    shortest = min(len(one), len(other))
    return any(one[-k:] == other[:k] or other[-k:] == one[:k] for k in range(1, shortest))


def _overlaps(phrase: Phrase, chosen: Phrase) -> bool:
    """Whether `phrase` and `chosen` share words in a row: a theme of its own shares none."""
    return _inside(phrase, chosen) or _inside(chosen, phrase) or _edges_meet(phrase, chosen)


def _repeats(phrase: Phrase, chosen: Phrase) -> bool:
    """Whether `phrase` says nothing `chosen` does not: inside it, or the same words shifted. One that takes
    `chosen` in and says more ("áo khoác dày" after "áo khoác") is no repeat."""
    return _inside(phrase, chosen) or (not _inside(chosen, phrase) and _edges_meet(phrase, chosen))


def _ranked(found: Iterable[Spelled], minimum: int) -> list[tuple[Phrase, int, Phrase]]:
    """(folded, texts, spelling) of what at least `minimum` texts have: most texts first, then the longer, then
    alphabetically (folded). The spelling is the commonest of those with accents ("troi nong" is "trời nóng"
    with its accents left off: shown so only when nobody typed them)."""
    per_spelling = Counter(chain.from_iterable(spelled.items() for spelled in found))
    totals: Counter[Phrase] = Counter()
    best: dict[Phrase, tuple[bool, int, Phrase]] = {}
    for (key, spelled), n in per_spelling.items():
        totals[key] += n
        candidate = (spelled != key, n, spelled)
        if key not in best or candidate[:2] > best[key][:2]:
            best[key] = candidate
    ranked = [(key, n, best[key][2]) for key, n in totals.items() if n >= minimum]
    ranked.sort(key=lambda item: (-item[1], -len(item[0]), item[0]))
    return ranked


def recurring_themes(texts: Sequence[str], top: int = 5, minimum: int = 2) -> list[tuple[str, int]]:
    """The phrases most feedback texts share (else single words), each as the texts spell it, accents kept.

    A phrase is two to four words next to each other in one clause, none of them a stop word, a number or a
    single letter: "Trời nóng quá, AI còn tư vấn áo khoác" has "trời nóng" and "áo khoác", and nothing that
    spans the comma or takes in "tư vấn". Texts are compared folded ("troi nong" is "trời nóng"), each counts
    a phrase once, and a phrase is shown as most texts typed it with accents. Most texts first; at a tie
    the longer phrase, so that a phrase always inside a longer one gives way to it. Themes of their own come
    first (sharing no words in a row with one chosen before); then, if there is room, phrases that say more of
    a chosen one ("áo khoác dày" ×3 after "áo khoác" ×5; never "khoác dày", the same words shifted); then
    single words.
    """
    phrases = _Phrases()
    ranked = _ranked((phrases.of(text) for text in texts), minimum)
    chosen: list[tuple[Phrase, int, Phrase]] = []
    # first the themes of their own, then, with room left, phrases that say more of one ("áo khoác dày")
    for apart in (_overlaps, _repeats):
        for key, n, spelled in ranked:
            if len(chosen) == top:
                break
            if not any(apart(key, other) for other, _n, _s in chosen):
                chosen.append((key, n, spelled))
    if len(chosen) < top:  # every clause is cut up by now: this pass only looks them up
        covered = {word for key, _n, _s in chosen for word in key}
        words = _ranked((phrases.single(text) for text in texts), minimum)
        chosen += [item for item in words if item[0][0] not in covered][: top - len(chosen)]
    return [(" ".join(spelled), n) for _key, n, spelled in chosen]


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


class HandEditsSince(Protocol):
    """The rule files found edited by hand since a moment (RuleFileVersions.hand_edits), the newest last."""

    async def __call__(self, *, since: datetime | None = None, limit: int = 20) -> Sequence[Any]: ...


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
        hand_edits: HandEditsSince | None = None,
    ) -> None:
        self.hand_edits = hand_edits  # (several instances) the files found edited by hand, for their alert
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
            hand_edited_files=sorted(
                {found.module_name for found in await self.hand_edits(since=now - HAND_EDIT_WINDOW)}
                if self.hand_edits
                else set()
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
                value_text=plain_value(definition.unit, value) if value is not None else "not measurable",
                threshold_text=plain_value(definition.unit, threshold),
                advice=definition.advice,
                action=definition.action,
                at=now,
                since=new_state.since or (state.since if state else None),
                subjects=definition.subjects(metrics) if definition.subjects and crossed else [],
                unit=definition.unit,
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
