"""Replay before deploy: a proposed rule is tried before a reviewer sees it (autotrain/evaluation.py says what
an evaluation is).

The complaint, its group and earlier fixes of the same file are asked again with the candidate applied to its
file exactly as a deploy would (`RuleDocument.apply`), each new answer judged; praised answers must stay as
good. Only the new answers are replayed: the answer before is the one the feedback recorded. When the
candidate does not fix the complaint, the judge revises it (at most AUTOTRAIN_EVAL_REVISIONS times) and the
better line by the judgments is proposed. An evaluation is kept per candidate version, so a rule is never
replayed twice for one line; an upstream failure ends in `error`, never blocking review.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from autotrain.errors import AutotrainError, InvalidInput
from autotrain.evaluation import (
    CaseKind,
    ChatbotReplay,
    EvalCase,
    Evaluation,
    EvaluationLimits,
    EvaluationStatus,
    ReplayJudge,
    candidate_version,
    contradictions,
    score,
    summary_line,
    verdict,
)
from autotrain.models import EventKind, Feedback, NewEvent, PipelineEvent, Rule, RuleStatus
from autotrain.options import Clock
from autotrain.policy import SYSTEM_ACTOR, Action, Actor, require_permission
from autotrain.ports import EvaluationStore, RuleStore
from autotrain.rulefiles import RuleFiles, same_rule
from autotrain.usecases.lookup import rule_or_404

log = logging.getLogger("autotrain.evaluation")

REVISER = "auto-revise"  # the actor of a rule's line replaced by the judge's revision


class EvaluateRules:
    def __init__(
        self,
        *,
        rules: RuleStore,
        evaluations: EvaluationStore,
        rule_files: RuleFiles,
        replay: ChatbotReplay | None,
        judge: ReplayJudge | None,
        clock: Clock,
        limits: EvaluationLimits,
        enabled: bool,
        wake: Callable[[], None],
    ) -> None:
        self.rules = rules
        self.evaluations = evaluations
        self.rule_files = rule_files
        self.replay = replay
        self.judge = judge
        self.clock = clock
        self.limits = limits
        self.enabled = enabled  # AUTOTRAIN_EVALUATE=auto: after generation and after an edit
        self.wake = wake
        self._running: dict[tuple[str, str], asyncio.Task[Evaluation]] = {}  # (rule, line version)
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ entry points

    def evaluate_in_background(self, rule_id: str) -> None:
        """After a generation or an edit: try the rule while it waits for review."""
        if not self.enabled:
            return
        task = asyncio.create_task(self._quietly(rule_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def evaluate(self, rule_id: str, actor: Actor = SYSTEM_ACTOR) -> Evaluation:
        """The rule's evaluation for its current line: made now, or the one already made for that line (a
        passed or failed one is never redone; a skipped or failed-upstream one is)."""
        require_permission(actor, Action.GENERATE if actor is SYSTEM_ACTOR else Action.APPROVE)
        rule = await rule_or_404(self.rules, rule_id)
        version = candidate_version(rule.module_name, rule.old_rule, rule.new_rule)
        done = await self.evaluations.latest_evaluation(rule_id, version)
        if done is not None and done.status in (EvaluationStatus.PASSED, EvaluationStatus.FAILED):
            return done
        # per line: a line edited while the one before is being replayed gets a replay of its own
        key = (rule_id, version)
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(self._evaluate(rule, version))
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(task)

    async def latest(self, rule_id: str) -> Evaluation | None:
        return await self.evaluations.latest_evaluation(rule_id)

    # ------------------------------------------------------------------ the work

    async def _quietly(self, rule_id: str) -> None:
        try:
            await self.evaluate(rule_id)
        except AutotrainError as exc:
            log.warning("evaluation of %s: %s", rule_id, exc.message)
        except Exception:
            log.exception("evaluation of %s failed", rule_id)

    async def _evaluate(self, rule: Rule, version: str) -> Evaluation:
        started = time.perf_counter()
        conflicts = await asyncio.to_thread(self._conflicts, rule)
        reason = self._why_not()
        if reason is None and rule.status not in (RuleStatus.PENDING, RuleStatus.APPROVED):
            reason = f"it is {rule.status.value}"
        if reason is not None:
            return await self._save(rule, version, EvaluationStatus.SKIPPED, [], started, conflicts, reason=reason)
        cases = await self._cases(rule)
        budget = [self.limits.token_budget]
        try:
            judged = await self._try(rule.new_rule, rule, cases, budget)
            status, fixes, *_ = verdict(judged)
            revised_from = None
            revisions = self.limits.revisions
            candidate = rule.new_rule
            while fixes is False and revisions > 0 and budget[0] > 0:
                revisions -= 1
                failed = next(c for c in judged if c.kind is CaseKind.COMPLAINT and not c.holds)
                assert self.judge is not None
                revision = await self.judge.revise(candidate, failed, failed.reason or "")
                budget[0] -= revision.tokens
                better = revision.rule
                if not better or same_rule(better, candidate):
                    break
                retried = await self._try(better, rule, cases, budget)
                if score(retried) > score(judged):
                    revised_from, candidate, judged = candidate, better, retried
                    status, fixes, *_ = verdict(judged)
                else:
                    break
        except AutotrainError as exc:
            return await self._save(
                rule, version, EvaluationStatus.ERROR, [], started, conflicts, reason=exc.message[:300]
            )
        if revised_from is not None:
            edited = await self.rules.edit_rule(
                rule.rule_id,
                changes={"new_rule": candidate},
                actor_id=REVISER,
                now=self.clock(),
                expected_new_rule=rule.new_rule,  # never over a line the reviewer wrote while this ran
            )
            if edited is None:  # no longer pending, or re-edited: the reviewer's line stands, the revision is shown
                candidate, revised_from = revised_from, None
        if revised_from is not None:  # kept under the revised line's version: that is the rule's line now
            version = candidate_version(rule.module_name, rule.old_rule, candidate)
        return await self._save(
            rule, version, status, judged, started, conflicts, candidate=candidate, revised_from=revised_from
        )

    def _why_not(self) -> str | None:
        if self.judge is None and self.replay is None:
            return "no chatbot to replay with and no judge (set ANTHROPIC_API_KEY, and AUTOTRAIN_CHATBOT_REPLAY_URL)"
        if self.judge is None:
            return "no judge to read the answers (set ANTHROPIC_API_KEY)"
        if self.replay is None:
            return "no chatbot to replay with (set AUTOTRAIN_CHATBOT_REPLAY_URL or ANTHROPIC_API_KEY)"
        return None

    async def _cases(self, rule: Rule) -> list[EvalCase]:
        def case(kind: CaseKind, feedback: Feedback) -> EvalCase:
            return EvalCase(
                kind=kind,
                feedback_id=feedback.feedback_id,
                query=feedback.query,
                feedback_text=feedback.feedback_text,
                user_id=feedback.user_id,
                answer_before=feedback.ai_response,
                praised_answer=feedback.ai_response if kind is CaseKind.PRAISE else None,
            )

        group = await self.evaluations.group_feedback(rule.rule_id, limit=1 + self.limits.complaints)
        earlier = await self.evaluations.earlier_fixes(
            rule.module_name, exclude=rule.rule_id, limit=self.limits.regressions
        )
        praised = await self.evaluations.praised_feedback(limit=self.limits.praise)
        return (
            [case(CaseKind.COMPLAINT, f) for f in group]
            + [case(CaseKind.REGRESSION, f) for _, f in earlier]
            + [case(CaseKind.PRAISE, f) for f in praised]
        )

    async def _try(self, candidate: str, rule: Rule, cases: Sequence[EvalCase], budget: list[int]) -> list[EvalCase]:
        """Replay and judge every case with `candidate` in place, concurrently, within the token budget (a case
        that would start past it is left out, and the complaint cases go first)."""
        assert self.replay is not None and self.judge is not None
        files = await asyncio.to_thread(self._files_with, rule, candidate)
        gate = asyncio.Semaphore(self.limits.concurrency)
        replay, judge = self.replay, self.judge

        async def one(case: EvalCase) -> EvalCase | None:
            async with gate:
                if budget[0] <= 0:
                    return None
                answer = await replay.replay(case.query, files, user_id=case.user_id)
                tried = case.model_copy(update={"answer_after": answer.answer})
                judgment = await judge.judge(tried, candidate=candidate)
                spent = answer.tokens + judgment.tokens
                budget[0] -= spent
                return tried.model_copy(update={"holds": judgment.holds, "reason": judgment.reason, "tokens": spent})

        done = await asyncio.gather(*(one(c) for c in cases))
        return [c for c in done if c is not None]

    def _files_with(self, rule: Rule, candidate: str) -> dict[str, str]:
        """Every rule file as the chatbot would use it, the candidate applied to its own as a deploy would."""
        from autotrain_client import render_content  # the chatbot's own rendering

        files = {}
        for module_name in self.rule_files.allowed_modules:
            content, document = self.rule_files.read(module_name)
            if module_name == rule.module_name:
                change = document.apply(new_rule=candidate, old_rule=rule.old_rule, entry={}, rollout_percent=100)
                if change.touches_file:
                    content = change.content
            files[module_name] = render_content(module_name, content, None)
        return files

    def _conflicts(self, rule: Rule) -> list[str]:
        try:
            lines = self.rule_files.current_rules().get(rule.module_name, [])
        except InvalidInput:
            return []
        deployed = [line for line in lines if not (rule.old_rule and same_rule(line, rule.old_rule))]
        return contradictions(rule.new_rule, [line for line in deployed if not same_rule(line, rule.new_rule)])

    async def _save(
        self,
        rule: Rule,
        version: str,
        status: EvaluationStatus,
        cases: list[EvalCase],
        started: float,
        conflicts: list[str],
        *,
        reason: str | None = None,
        candidate: str | None = None,
        revised_from: str | None = None,
    ) -> Evaluation:
        _, fixes, broken, lost = verdict(cases) if cases else (status, None, 0, 0)
        summary = summary_line(status, cases, reason)
        if revised_from is not None:
            summary += " (after one revision of the line)"
        evaluation = Evaluation(
            rule_id=rule.rule_id,
            rule_version=version,
            status=status,
            fixes_complaint=fixes,
            regressions=broken,
            praise_lost=lost,
            cases=len(cases),
            summary=summary,
            at=self.clock(),
            new_rule=candidate or rule.new_rule,
            revised_from=revised_from,
            conflicts=conflicts,
            tokens=sum(c.tokens for c in cases),
            latency_ms=int((time.perf_counter() - started) * 1000),
            detail=cases,
        )
        await self.evaluations.save_evaluation(
            evaluation, event=NewEvent(kind=EventKind.RULE_EVALUATED, actor_id=SYSTEM_ACTOR.id)
        )
        self.wake()
        return evaluation


class EvaluateOnChange:
    """A notifier of rule events: a rule just created or edited is evaluated in the background (after the
    action that recorded the event has answered)."""

    def __init__(self, evaluations: EvaluateRules) -> None:
        self.evaluations = evaluations

    async def notify(self, event: PipelineEvent) -> None:
        if event.kind in (EventKind.RULE_CREATED, EventKind.RULE_EDITED) and event.actor_id != REVISER:
            self.evaluations.evaluate_in_background(event.rule.rule_id)
