"""The effect of deployed rules (autotrain/effect.py judges the figures), and canaries decided by that
evidence when AUTOTRAIN_CANARY_AUTO_DECIDE is on."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from autotrain.effect import (
    CanaryDecision,
    CanaryOutcome,
    CanarySplit,
    Counts,
    EffectSettings,
    RuleEffect,
    Tally,
    judge,
    not_working,
    split_canary,
)
from autotrain.errors import AutotrainError
from autotrain.models import Rule, RuleStatus
from autotrain.options import Clock
from autotrain.policy import AUTO_CANARY
from autotrain.ports import ComplaintStore
from autotrain.rollout import in_rollout
from autotrain.usecases.deploys import DeployRules

log = logging.getLogger("autotrain.effects")


class RuleEffects:
    def __init__(self, *, complaints: ComplaintStore, clock: Clock, settings: EffectSettings) -> None:
        self._canary_counts: dict[str, _CanaryCount] = {}
        self.complaints = complaints
        self.clock = clock
        self.settings = settings

    async def effect(self, rule: Rule) -> RuleEffect | None:
        """The effect of a deployed rule so far; None for a rule that is not deployed."""
        if rule.status is not RuleStatus.DEPLOYED or rule.deployed_at is None:
            return None
        tallies = await self.complaints.effect_tallies(rule.rule_id, window_days=self.settings.window_days)
        if tallies is None:  # no longer deployed
            return None
        return await self._judged(rule, *tallies)

    async def deployed(
        self, *, min_complaints: int | None = None, deployed_since: datetime | None = None, canaries: bool = False
    ) -> list[RuleEffect]:
        """The effect of every rule deployed now (or of those matching any filter given: at least
        `min_complaints` recurrences since the deploy, deployed since `deployed_since`, a canary), oldest
        deploy first. Read from maintained figures: no feedback is counted here, but a canary's split."""
        found = await self.complaints.deployed_effect_tallies(
            window_days=self.settings.window_days,
            min_complaints=min_complaints,
            deployed_since=deployed_since,
            canaries=canaries,
        )
        effects = [await self._judged(rule, before, since) for rule, before, since in found]
        return sorted(effects, key=lambda e: e.deployed_at)

    async def warm(self) -> None:
        """Count now what a deployed rule's effect is read from, for every deployed rule (serve does, at start)."""
        await self.complaints.deployed_effect_figures(window_days=self.settings.window_days, min_complaints=0)

    async def not_working(self, *, min_complaints: int) -> list[str]:
        """The deployed rules whose complaint came back at least `min_complaints` times and is not rarer than
        before the deploy (the `not_working` verdict), oldest deploy first — from the maintained figures,
        without a statistical test (autotrain/effect.py not_working) and without reading whole rules: what
        /metrics and the alert ask on every call."""
        found = await self.complaints.deployed_effect_figures(
            window_days=self.settings.window_days, min_complaints=min_complaints
        )
        failing = []
        for figures in sorted(found, key=lambda f: f.deployed_at):
            before: Tally | Counts = figures.before
            since: Tally | Counts = figures.since
            if figures.canary:  # only the canary's users have the rule
                assert figures.rollout_percent is not None
                since = (await self._split(figures.rule_id, figures.rollout_percent, figures.deployed_at)).inside
            if since.complaints >= min_complaints and not_working(before, since, self.settings):
                failing.append(figures.rule_id)
        return failing

    async def canaries(self) -> list[tuple[Rule, RuleEffect]]:
        """Every canary now, with its effect."""
        found = await self.complaints.deployed_effect_tallies(window_days=self.settings.window_days, canaries=True)
        return [(rule, await self._judged(rule, before, since)) for rule, before, since in found if rule.canary]

    async def _judged(self, rule: Rule, before: Tally, since: Tally) -> RuleEffect:
        assert rule.deployed_at is not None
        canary = None
        if rule.canary:
            assert rule.rollout_percent is not None
            canary = await self._split(rule.rule_id, rule.rollout_percent, rule.deployed_at)
        if canary is not None:  # only the canary's users have the rule: the others' complaints say nothing of it
            since = canary.inside
        p_value, verdict = judge(before, since, self.settings)
        return RuleEffect(
            rule_id=rule.rule_id,
            deployed_at=rule.deployed_at,
            window_days=self.settings.window_days,
            before=before,
            since=since,
            p_value=p_value,
            verdict=verdict,
            canary=canary,
        )

    async def _split(self, rule_id: str, rollout_percent: int, deployed_at: datetime) -> CanarySplit:
        """The canary's feedback since it started, by the rollout bucket of each feedback's user. Counted once:
        each call reads only the feedback stored since the last (rows are never renumbered, and their user
        and time never change), and the recurrences of this rule (few) anew."""
        key = (rollout_percent, deployed_at)
        counted = self._canary_counts.get(rule_id)
        if counted is None or counted.key != key:  # a new canary, or a wider one: counted from its start
            counted = _CanaryCount(key)
            self._canary_counts[rule_id] = counted
        for row_number, user_id in await self.complaints.feedback_users_since(deployed_at, after=counted.last_row):
            if in_rollout(rule_id, user_id, rollout_percent):
                counted.inside += 1
            else:
                counted.outside += 1
            counted.last_row = max(counted.last_row, row_number)
        recurred = await self.complaints.recurrence_users(rule_id, since=deployed_at)
        inside_complaints = sum(in_rollout(rule_id, user_id, rollout_percent) for user_id in recurred)
        return split_canary(
            rollout_percent,
            Tally(feedback=counted.inside, complaints=inside_complaints),
            Tally(feedback=counted.outside, complaints=len(recurred) - inside_complaints),
            self.settings,
        )


@dataclass
class _CanaryCount:
    """A canary's feedback counted so far, by rollout bucket (for `key`: its share and start)."""

    key: tuple[int, datetime]
    last_row: int = 0
    inside: int = 0
    outside: int = 0


CanaryAnnouncer = Callable[[CanaryOutcome], Awaitable[None]]


class DecideCanaries:
    """Promote a canary whose users repeat its complaint significantly less than the others; roll back one
    whose users repeat it significantly more. Both go through the deploy use case, under the file's lock and
    its state checks, as actor `auto-canary`: an admin's action on the rule first wins, and a rule is never
    both promoted and rolled back."""

    def __init__(self, *, effects: RuleEffects, deploys: DeployRules, announce: CanaryAnnouncer) -> None:
        self.effects = effects
        self.deploys = deploys
        self.announce = announce

    async def run(self) -> list[CanaryOutcome]:
        outcomes = []
        for rule, effect in await self.effects.canaries():
            if effect.canary is None or effect.canary.decision is CanaryDecision.WAIT:
                continue
            try:
                if effect.canary.decision is CanaryDecision.PROMOTE:
                    await self.deploys.promote(rule.rule_id, AUTO_CANARY)
                else:
                    await self.deploys.rollback(rule.rule_id, AUTO_CANARY)
            except AutotrainError as exc:  # an admin acted on it first, or the file cannot be changed now
                log.warning("auto-canary left %s alone: %s", rule.rule_id, exc.message)
                continue
            outcome = CanaryOutcome(
                rule_id=rule.rule_id, module_name=rule.module_name, decision=effect.canary.decision, split=effect.canary
            )
            outcomes.append(outcome)
            try:
                await self.announce(outcome)
            except Exception:  # the decision is made and recorded; a failed message is only logged
                log.exception("announcing the auto-canary decision on %s failed", rule.rule_id)
        return outcomes
