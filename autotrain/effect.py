"""Did a deployed rule work? Its complaint's rate before the deploy and since, and for a canary, the rate among
the users it reaches against the others — each judged with Fisher's exact test (scipy.stats), not by eye.

A rule's *complaint* is the feedback it was made from (and the feedback attached to it: the same complaint);
after the deploy, a *recurrence* is new feedback that is that same complaint again (autotrain/usecases/
complaints.py). Rates are per 1,000 feedbacks of any kind in the same period, so a busy day does not look
like a failure.

The verdicts:
- `too_early`: fewer than `min_sample` feedbacks since the deploy, or better so far but not significantly;
- `working`: the complaint's rate since the deploy is significantly lower than before it (one-sided Fisher
  test, p < `alpha`);
- `not_working`: enough feedback since the deploy, and the complaint comes at least as often as before.

A canary splits the feedback since it started by the rollout bucket of each feedback's user (autotrain/
rollout.py, the same bucketing the chatbot uses). `promote` when the canary's users repeat the complaint
significantly less often than the others, `roll_back` when significantly more often, `wait` otherwise or
while either group has fewer than `min_sample` feedbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, computed_field


class EffectVerdict(StrEnum):
    WORKING = "working"
    NOT_WORKING = "not_working"
    TOO_EARLY = "too_early"


class CanaryDecision(StrEnum):
    PROMOTE = "promote"
    ROLL_BACK = "roll_back"
    WAIT = "wait"


@dataclass(frozen=True)
class EffectSettings:
    window_days: int = 7  # AUTOTRAIN_EFFECT_WINDOW_DAYS: the period before the deploy compared with since
    min_sample: int = 30  # AUTOTRAIN_EFFECT_MIN_SAMPLE: feedbacks a period (or canary group) needs for a verdict
    alpha: float = 0.05  # AUTOTRAIN_EFFECT_ALPHA: the significance level


class Tally(BaseModel):
    """The complaint in one period or group: how many feedbacks there were, and how many were this complaint."""

    feedback: int
    complaints: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def per_1000(self) -> float | None:
        return round(1000 * self.complaints / self.feedback, 1) if self.feedback else None


class CanarySplit(BaseModel):
    percent: int
    inside: Tally  # the canary's users, since it started
    outside: Tally  # everyone else, since it started
    p_fewer: float | None  # one-sided: the canary's users complain less
    p_more: float | None  # one-sided: they complain more
    decision: CanaryDecision


class RuleEffect(BaseModel):
    rule_id: str
    deployed_at: datetime
    window_days: int
    before: Tally  # the window before the deploy
    since: Tally  # from the deploy until now (a canary: its users only)
    p_value: float | None  # one-sided Fisher: the rate since is lower than before
    verdict: EffectVerdict
    canary: CanarySplit | None = None


class CanaryOutcome(BaseModel):
    """What the auto-decider did with one canary, and the evidence (told to the review channel and webhooks)."""

    rule_id: str
    module_name: str
    decision: CanaryDecision  # promote or roll_back (a canary left waiting is not reported)
    split: CanarySplit


def _fisher(first: Tally, second: Tally, alternative: str) -> float | None:
    """One-sided Fisher exact test that `first` has the higher complaint rate ('greater') or the lower ('less')."""
    if not first.feedback or not second.feedback:
        return None
    from scipy.stats import fisher_exact  # scipy.stats takes a while to import: only when a test is run

    table = [
        [first.complaints, first.feedback - first.complaints],
        [second.complaints, second.feedback - second.complaints],
    ]
    return round(float(fisher_exact(table, alternative=alternative).pvalue), 6)


class Counts(NamedTuple):
    """A Tally's two numbers, without the model (for figures read by the thousand)."""

    feedback: int
    complaints: int


def not_working(before: Tally | Counts, since: Tally | Counts, settings: EffectSettings) -> bool:
    """Enough feedback since the deploy, and the complaint at least as frequent as before it. Needs no test:
    a rate since at least the rate before is never significantly lower (p ≥ 0.5 > alpha), so this is the
    `not_working` verdict of `judge` without computing its p-value (what /metrics needs, for every rule)."""
    if since.feedback < settings.min_sample or not since.complaints:
        return False
    rate_before = before.complaints / before.feedback if before.feedback else 0.0
    return since.complaints / since.feedback >= rate_before


def judge(before: Tally, since: Tally, settings: EffectSettings) -> tuple[float | None, EffectVerdict]:
    """The p-value that the complaint became rarer after the deploy, and the verdict (see the module)."""
    p_value = _fisher(before, since, "greater")
    if since.feedback < settings.min_sample:
        return p_value, EffectVerdict.TOO_EARLY
    if p_value is not None and p_value < settings.alpha:
        return p_value, EffectVerdict.WORKING
    if not_working(before, since, settings):
        return p_value, EffectVerdict.NOT_WORKING
    return p_value, EffectVerdict.TOO_EARLY


def split_canary(percent: int, inside: Tally, outside: Tally, settings: EffectSettings) -> CanarySplit:
    """What the canary's users say against the others, and what the evidence says to do."""
    p_fewer = _fisher(outside, inside, "greater")
    p_more = _fisher(inside, outside, "greater")
    decision = CanaryDecision.WAIT
    if min(inside.feedback, outside.feedback) >= settings.min_sample:
        if p_fewer is not None and p_fewer < settings.alpha:
            decision = CanaryDecision.PROMOTE
        elif p_more is not None and p_more < settings.alpha:
            decision = CanaryDecision.ROLL_BACK
    return CanarySplit(
        percent=percent, inside=inside, outside=outside, p_fewer=p_fewer, p_more=p_more, decision=decision
    )
