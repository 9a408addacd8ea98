"""Deploy, canary, promote and rollback: each changes a rule file and records it, top to bottom here.

The path of every change: check permission and state → take the file's lock → settle what an earlier
crash left pending (and commit what it wrote but never committed) → read the file → compute the change
(rulefiles) → claim the transition with a pending deployment row → write the file → complete the
deployment (its event recorded in the same transaction) → git commit → tell the chatbot to reload →
record the reload (which releases the event) → wake the dispatcher. Nothing here waits for Slack or a
webhook: those get the event from the outbox.

Where "the file" is (file_truth.py): the rules folder (SQLite, one instance), or the newest version stored in
the database (PostgreSQL, several instances: the lock is the database's, the new version is stored in the
transaction that completes the deployment, and the folder is then written from it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from autotrain.errors import AutotrainError, CanaryUnsupported, EvaluationRequired, StoreBusy, TransitionRefused
from autotrain.evaluation import candidate_version
from autotrain.i18n import N_
from autotrain.models import Deployment, DeployOutcome, DeployResult, EventKind, NewEvent, Rule, RuleStatus
from autotrain.options import Clock, PipelineOptions
from autotrain.policy import Action, Actor, check_rollout, check_rule_transition, require_permission
from autotrain.ports import DeploymentStore, EvaluationStore, NewDeployment, ReloadResult, RuleHistory, RuleStore
from autotrain.rulefiles import JsonRuleDocument, RuleChange, RuleFiles, content_version, deploy_entry, same_rule
from autotrain.ruleset import APPENDED, CANARY, NOOP, PROMOTED_CANARY, REPLACED, ActiveChange
from autotrain.usecases.commits import commit_change
from autotrain.usecases.file_models import FileModel, FileModels, HandEdited, derive_content, removed_entry
from autotrain.usecases.file_truth import FolderTruth, RuleFileTruth
from autotrain.usecases.locks import RuleFileLocks
from autotrain.usecases.lookup import refuse_changed, rule_or_404
from autotrain.usecases.reconcile import PendingDeployments
from autotrain.usecases.reloads import ChatbotReloads

log = logging.getLogger("autotrain.deploys")
T = TypeVar("T")

_DEPLOY_OUTCOMES = {
    REPLACED: DeployOutcome.REPLACED,
    APPENDED: DeployOutcome.APPENDED,
    CANARY: DeployOutcome.CANARY,
    PROMOTED_CANARY: DeployOutcome.PROMOTED,
    NOOP: DeployOutcome.NOOP,
}


class DeployRules:
    def __init__(
        self,
        *,
        rules: RuleStore,
        deployments: DeploymentStore,
        rule_files: RuleFiles,
        locks: RuleFileLocks,
        pending: PendingDeployments,
        history: RuleHistory | None,
        reloads: ChatbotReloads,
        clock: Clock,
        options: PipelineOptions,
        wake: Callable[[], None],
        evaluations: EvaluationStore | None = None,
        truth: RuleFileTruth | None = None,
    ) -> None:
        self.evaluations = evaluations  # the replay gate (AUTOTRAIN_REQUIRE_EVALUATION)
        # where the file's content is the truth (bot/runtime.py decides; the rules folder by default)
        self.truth = truth or FolderTruth(rule_files=rule_files, deployments=deployments)
        self.rules = rules
        self.deployments = deployments
        self.rule_files = rule_files
        self.locks = locks
        self.pending = pending
        self.history = history
        self.reloads = reloads
        self.clock = clock
        self.options = options
        self.wake = wake
        self.models = FileModels(rules=rules, deployments=deployments, bases=self.truth)

    # ------------------------------------------------------------------ the four changes

    async def deploy(
        self, rule_id: str, actor: Actor, *, rollout_percent: int = 100, override_evaluation: bool = False
    ) -> DeployResult:
        """Deploy to every user, or (rollout_percent below 100, JSON rule files only) as a canary."""
        require_permission(actor, Action.DEPLOY)
        rule = await rule_or_404(self.rules, rule_id)
        if not await self._left_pending(rule_id):
            check_rule_transition(rule_id, rule.status, RuleStatus.DEPLOYED)
        check_rollout(rule, rollout_percent)
        await self._check_evaluation(rule, actor, override_evaluation)
        promotions: list[Deployment] = []
        async with self.locks.hold(rule.module_name):
            await self._catch_up(rule.module_name)
            rule = await rule_or_404(self.rules, rule_id)
            check_rule_transition(rule_id, rule.status, RuleStatus.DEPLOYED)
            previous, document, model, hand_edited = await self._read(rule.module_name)
            if rollout_percent >= 100:
                # A full deploy of a line a canary holds takes that canary to every user: promote it first (its
                # own change, event and commit), and this deploy rides on its line — on a file edited by hand too.
                lines = document.rule_lines()
                held = [
                    r
                    for r in await self.deployments.deployed_rules(rule.module_name)
                    if r.canary
                    and same_rule(r.new_rule, rule.new_rule)
                    and any(same_rule(line, r.new_rule) for line in lines)  # (a hand edit may have taken it out)
                ]
                for canary in held:
                    promotions.append(
                        await self._promote(canary, actor, previous, document, model, hand_edited=hand_edited)
                    )
                    previous, document, model, hand_edited = await self._read(rule.module_name)
            entry = deploy_entry(
                rule_id=rule.rule_id, feedback_id=rule.feedback_id, confidence=rule.confidence, deployed_at=self.clock()
            )
            if model is not None:
                new = ActiveChange(rule.rule_id, rule.new_rule, rule.old_rule, rollout_percent, entry)
                content, outcomes, changed = derive_content(
                    model, [*model.changes, new], rule.module_name, document, previous
                )
                outcome = outcomes[-1]
                detail: dict[str, Any] = {"outcome": outcome, "ruleset": {**model.ref(), "spec": new.to_detail()}}
                if outcome == REPLACED:  # what a rollback on a hand-edited file puts back (FileModels.revert_in_place)
                    detail["removed"] = removed_entry(document, rule.old_rule)
                detail["changed"] = changed
                change = RuleChange(content, _DEPLOY_OUTCOMES[outcome], detail, keep_base=model.base)
            else:
                change = document.apply(
                    new_rule=rule.new_rule, old_rule=rule.old_rule, entry=entry, rollout_percent=rollout_percent
                )
            if rule.old_rule and change.outcome is DeployOutcome.APPENDED:
                change.detail["warning"] = "old_rule_not_found"
            if change.outcome is DeployOutcome.NOOP:
                # Remember which deployed rule put the line there, so rolling both back restores the file (also
                # once a hand edit makes the file be changed in place: FileModels.effective_change).
                deployed = await self.deployments.deployed_rules(rule.module_name)
                provider = next((r for r in deployed if r.new_rule == rule.new_rule), None)
                change.detail["provided_by"] = provider.rule_id if provider else None
            if promotions:
                change.detail["promoted_canaries"] = [d.rule_id for d in promotions]
            if hand_edited:
                change.detail["hand_edited"] = True
            deployment = await self._write_change(
                rule,
                actor,
                previous=previous,
                change=change,
                expected=RuleStatus.APPROVED,
                target=RuleStatus.DEPLOYED,
                event=EventKind.RULE_DEPLOYED,
                rollback_of=None,
                rollout_percent=rollout_percent,
            )
        for promotion in promotions:
            await self._after_write(promotion.rule_id, promotion)
        return await self._after_write(rule_id, deployment)

    async def canary(self, rule_id: str, actor: Actor, *, override_evaluation: bool = False) -> DeployResult:
        """Deploy to AUTOTRAIN_CANARY_PERCENT of users."""
        return await self.deploy(
            rule_id, actor, rollout_percent=self.options.canary_percent, override_evaluation=override_evaluation
        )

    async def _check_evaluation(self, rule: Rule, actor: Actor, override: bool) -> None:
        """AUTOTRAIN_REQUIRE_EVALUATION: a rule whose replay has not passed is refused, unless an admin
        overrides (which the audit log records)."""
        if not self.options.require_evaluation or self.evaluations is None:
            return
        # the replay of the line being deployed: a pass of the line before an edit says nothing about this one
        version = candidate_version(rule.module_name, rule.old_rule, rule.new_rule)
        evaluation = await self.evaluations.latest_evaluation(rule.rule_id, version)
        status = evaluation.status.value if evaluation is not None else "none"
        if status == "passed":
            return
        await self.evaluations.record_evaluation_gate(
            rule.rule_id, actor_id=actor.id, status=status, overridden=override, now=self.clock()
        )
        if not override:
            raise EvaluationRequired(
                N_(
                    "{rule_id} has not passed its replay ({status}); run it (POST /autotrain/rules/{rule_id}/evaluate),"
                    " or deploy with override_evaluation"
                ),
                rule_id=rule.rule_id,
                status=status,
            )

    async def promote(self, rule_id: str, actor: Actor) -> DeployResult:
        """Take a canary to every user: the rule it replaces goes for everyone."""
        require_permission(actor, Action.DEPLOY)
        rule = await rule_or_404(self.rules, rule_id)
        if not await self._left_pending(rule_id):
            _check_canary(rule)
        async with self.locks.hold(rule.module_name):
            await self._catch_up(rule.module_name)
            rule = await rule_or_404(self.rules, rule_id)
            _check_canary(rule)
            previous, document, model, hand_edited = await self._read(rule.module_name)
            deployment = await self._promote(rule, actor, previous, document, model, hand_edited=hand_edited)
        return await self._after_write(rule_id, deployment)

    async def _promote(
        self,
        rule: Rule,
        actor: Actor,
        previous: bytes,
        document: Any,
        model: FileModel | None,
        *,
        hand_edited: bool = False,
    ) -> Deployment:
        """Write and record the promote of a canary (call with the file's lock)."""
        if not isinstance(document, JsonRuleDocument):
            raise CanaryUnsupported(N_("{module} is not a JSON rule file"), module=rule.module_name)
        mine = [c for c in model.changes if c.rule_id == rule.rule_id] if model is not None else []
        if model is not None and mine:
            changes = [c.promoted() if c.rule_id == rule.rule_id else c for c in model.changes]
            content, outcomes, changed = derive_content(model, changes, rule.module_name, document, previous)
            spec = mine[0].promoted().to_detail()
            detail = {
                "outcome": outcomes[changes.index(mine[0].promoted())],
                "promoted": True,
                "changed": changed,
                "ruleset": {**model.ref(), "spec": spec, "order": model.orders[rule.rule_id]},
            }
            if detail["outcome"] == REPLACED:
                detail["removed"] = removed_entry(document, rule.old_rule)
            promoted = RuleChange(content, DeployOutcome.PROMOTED, detail)
        else:
            promoted = document.promote(new_rule=rule.new_rule)
        if hand_edited:
            promoted.detail["hand_edited"] = True
        return await self._write_change(
            rule,
            actor,
            previous=previous,
            change=promoted,
            expected=RuleStatus.DEPLOYED,
            target=RuleStatus.DEPLOYED,
            event=EventKind.RULE_PROMOTED,
            rollback_of=None,
            rollout_percent=100,
        )

    async def rollback(self, rule_id: str, actor: Actor) -> DeployResult:
        """Revert this rule's change on the current file; later deploys stay."""
        require_permission(actor, Action.ROLLBACK)
        rule = await rule_or_404(self.rules, rule_id)
        if not await self._left_pending(rule_id):
            check_rule_transition(rule_id, rule.status, RuleStatus.ROLLED_BACK)
        async with self.locks.hold(rule.module_name):
            await self._catch_up(rule.module_name)
            rule = await rule_or_404(self.rules, rule_id)
            check_rule_transition(rule_id, rule.status, RuleStatus.ROLLED_BACK)
            original = await self.deployments.active_deployment_for_rule(rule_id)
            if original is None:
                raise TransitionRefused(N_("{rule_id} has no deployment to roll back"), rule_id=rule_id)
            previous, document, model, hand_edited = await self._read(rule.module_name)
            if model is not None and any(c.rule_id == rule_id for c in model.changes):
                remaining = [c for c in model.changes if c.rule_id != rule_id]
                content, _, changed = derive_content(model, remaining, rule.module_name, document, previous)
                detail = {"outcome": "reverted", "changed": changed}
                change = RuleChange(content, DeployOutcome.REVERTED, detail)
            else:
                change = await self.models.revert_in_place(rule, document, original)
            if hand_edited:
                change.detail["hand_edited"] = True
            # the line stays when another deployed rule has it too: the card and the reply say which
            deployed = await self.deployments.deployed_rules(rule.module_name)
            holders = [r.rule_id for r in deployed if r.rule_id != rule_id and same_rule(r.new_rule, rule.new_rule)]
            if holders:
                change.detail["kept_by"] = holders
            deployment = await self._write_change(
                rule,
                actor,
                previous=previous,
                change=change,
                expected=RuleStatus.DEPLOYED,
                target=RuleStatus.ROLLED_BACK,
                event=EventKind.RULE_ROLLED_BACK,
                rollback_of=original.deployment_id,
            )
        return await self._after_write(rule_id, deployment)

    # ------------------------------------------------------------------ the steps they share

    async def _read(self, module_name: str) -> tuple[bytes, Any, FileModel | None, bool]:
        """The file's bytes, its parsed document, its model (None: changed in place), and whether it was
        edited by hand since Auto-Train last wrote it (then it is adopted as it is; the card says so)."""
        previous, document = await self.truth.read(module_name)
        model = await self.models.load(module_name, previous, document)
        if isinstance(model, HandEdited):
            return previous, document, None, True
        return previous, document, model, False

    async def _left_pending(self, rule_id: str) -> bool:
        """A change of this rule left pending (its outcome could not be recorded: a full disk, a crash): the
        rule's status is not the truth yet, so the early refusal waits for the catch-up under the lock."""
        return any(d.rule_id == rule_id for d in await self.deployments.pending_deployments())

    async def _catch_up(self, module_name: str) -> None:
        """Under the file's lock, before a change: settle a deployment left pending (a busy database or a
        crash), and commit a change written but never committed, so this change's commit holds only it."""
        await self.pending.settle(module_name)
        await self.pending.commit_uncommitted(module_name)

    async def _write_change(
        self,
        rule: Rule,
        actor: Actor,
        *,
        previous: bytes,
        change: RuleChange,
        expected: RuleStatus,
        target: RuleStatus,
        event: EventKind,
        rollback_of: int | None,
        rollout_percent: int | None = None,
    ) -> Deployment:
        """Claim the transition, write the file, then mark the deployment applied (call with the file's lock).

        The pending deployment row is committed before the file is written, so a crash in between leaves a
        row that reconcile settles by looking at the file (the file is the truth).
        """
        version_before = content_version(previous)
        version_after = content_version(change.content) if change.touches_file else version_before
        deployment_id = await self.deployments.begin_deployment(
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
            await refuse_changed(self.rules, rule.rule_id, target)
            raise AssertionError("refuse_changed always raises")
        backup_path = None
        if change.touches_file or change.keep_base is not None:
            try:
                if change.keep_base is not None:
                    await self.truth.keep_base(rule.module_name, change.keep_base)
                if change.touches_file:
                    backup_path = await self.truth.write(rule.module_name, change.content, previous, rule.rule_id)
            except BaseException as exc:
                error = exc.message if isinstance(exc, AutotrainError) else repr(exc)
                try:  # once: the file was not written, so a row left pending is safe (the catch-up aborts it)
                    await self.deployments.abort_deployment(
                        deployment_id, error=error, actor_id=actor.id, now=self.clock()
                    )
                except StoreBusy as unrecorded:
                    log.warning(
                        "%s: the abort of deployment %s is not recorded yet: %s",
                        rule.rule_id,
                        deployment_id,
                        unrecorded.message,
                    )
                raise  # what went wrong with the file, not the database's complaint about the abort
        # The file is written: from here the change is a fact, and recording it may wait for a busy database
        # rather than answer "try again". Its event is held until the reload result is recorded.
        deployment = await self._until_recorded(
            lambda: self.truth.complete(
                deployment_id,
                rule.module_name,
                change.content if change.touches_file else None,
                backup_path=backup_path,
                now=self.clock(),
                event=NewEvent(kind=event, actor_id=actor.id, held=True),
            )
        )
        if change.touches_file and self.history is not None:
            deployment = await self._commit(rule, deployment)
        return deployment

    async def _until_recorded(self, record: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        deadline = asyncio.get_running_loop().time() + self.options.record_deadline_seconds
        while True:
            try:
                return await record()
            except StoreBusy:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise  # still pending in the database: the next deploy of this file, or the next start, settles it
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _commit(self, rule: Rule, deployment: Deployment) -> Deployment:
        """Still under the file's lock, so the commit holds only this change."""
        assert self.history is not None
        sha = await commit_change(self.history, self.deployments, rule, deployment, clock=self.clock)
        return deployment if sha is None else deployment.model_copy(update={"commit_sha": sha})

    async def _after_write(self, rule_id: str, deployment: Deployment) -> DeployResult:
        """Tell the chatbot (when the file changed), record the outcome, and let the event go."""
        if deployment.version_after != deployment.version_before:
            result = await self.reloads.reload(deployment)
        else:
            result = ReloadResult("skipped")  # the file did not change: nothing to reload, and nothing wrong
        await self.deployments.record_reload(deployment.deployment_id, result, now=self.clock())
        self.wake()
        deployment = deployment.model_copy(update={"reload_status": result.status, "reload_error": result.error})
        return DeployResult(rule=await rule_or_404(self.rules, rule_id), deployment=deployment)


def _check_canary(rule: Rule) -> None:
    if not rule.canary:
        described = (
            f"deployed to {rule.rollout_percent or 100} % of users"
            if rule.status is RuleStatus.DEPLOYED
            else rule.status.value
        )
        raise TransitionRefused(
            N_("cannot promote {rule_id}: it is not a canary ({state})"), rule_id=rule.rule_id, state=described
        )
