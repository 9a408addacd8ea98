"""Settling what a crash left half done. The rule file is the truth (the rules folder, or the newest version
stored in the database with several instances: file_truth.py):

- a pending deployment whose change is in the file is completed; one whose change is not is aborted
  (the rule returns to approved, or to deployed for a rollback) — at start, and every few seconds for one
  that another instance, killed mid-deploy, left behind (`settle_left_pending`);
- feedback left `processing` with no rule and an expired generation lease goes back to pending;
- a file change that was written but never committed to git (a crash between the two) is committed, under
  its own rule and author.

Each file's pending deployments are settled under that file's lock, so a deploy that another process has
under way is waited for, never mistaken for an interrupted one.
"""

from __future__ import annotations

import asyncio
import logging

from autotrain.errors import InvalidInput, RuleFileInvalid
from autotrain.models import Deployment, ReconcileReport
from autotrain.options import Clock
from autotrain.policy import SYSTEM_ACTOR
from autotrain.ports import DeploymentStore, FeedbackStore, RuleHistory, RuleStore
from autotrain.rulefiles import RuleFiles, content_version, normalize_rule_line
from autotrain.usecases.commits import commit_change
from autotrain.usecases.file_models import bases_in_use
from autotrain.usecases.file_truth import FolderTruth, RuleFileTruth
from autotrain.usecases.locks import RuleFileLocks

log = logging.getLogger("autotrain.reconcile")


class PendingDeployments:
    """Completes or aborts the pending deployments of one file; call with the file's lock held."""

    def __init__(
        self,
        *,
        rules: RuleStore,
        deployments: DeploymentStore,
        rule_files: RuleFiles,
        history: RuleHistory | None,
        clock: Clock,
        truth: RuleFileTruth | None = None,
    ) -> None:
        self.rules = rules
        self.deployments = deployments
        self.rule_files = rule_files
        self.history = history
        self.clock = clock
        self.truth = truth or FolderTruth(rule_files=rule_files, deployments=deployments)

    async def commit_uncommitted(self, module_name: str) -> list[int]:
        """Commit what was written but never committed (a crash between the two): the file as it is, under
        the newest such change's rule and author, the earlier ones named in the message. So the next deploy's
        commit never carries another rule's change."""
        if self.history is None:
            return []
        missing = await self.deployments.deployments_without_commit(module_name)
        if not missing:
            return []
        last = missing[-1]
        rule = await self.rules.get_rule(last.rule_id)
        if rule is None:
            return []
        sha = await commit_change(self.history, self.deployments, rule, last, also=missing[:-1], clock=self.clock)
        if sha is None:
            return []
        restored = [d.deployment_id for d in missing]
        log.warning("committed %s to git after an interruption: deployments %s", module_name, restored)
        return restored

    async def settle(self, module_name: str) -> tuple[list[int], list[int]]:
        completed: list[int] = []
        aborted: list[int] = []
        for deployment in await self.deployments.pending_deployments():
            if deployment.module_name != module_name:
                continue
            try:
                written = await self._change_in_file(deployment)
            except (RuleFileInvalid, InvalidInput) as exc:
                log.error("cannot reconcile deployment %s: %s", deployment.deployment_id, exc.message)
                written = False
            if written:
                await self.deployments.complete_deployment(deployment.deployment_id, backup_path=None, now=self.clock())
                completed.append(deployment.deployment_id)
            else:
                await self.deployments.abort_deployment(
                    deployment.deployment_id,
                    error="interrupted before the file was written",
                    actor_id=SYSTEM_ACTOR.id,
                    now=self.clock(),
                )
                aborted.append(deployment.deployment_id)
        if completed or aborted:
            log.warning(
                "settled interrupted deployments of %s: completed %s, aborted %s", module_name, completed, aborted
            )
        return completed, aborted

    async def _change_in_file(self, deployment: Deployment) -> bool:
        content, document = await self.truth.read(deployment.module_name)
        version = content_version(content)
        if deployment.version_after == deployment.version_before:
            return True  # a no-op: nothing had to be written
        if version == deployment.version_after:
            return True
        if version == deployment.version_before:
            return False
        rule = await self.rules.get_rule(deployment.rule_id)
        if rule is None:
            return False
        present = normalize_rule_line(rule.new_rule) in document.rule_lines()
        return present if deployment.rollback_of is None else not present


class Reconcile:
    """Start-up: every file with pending deployments settled, interrupted generations requeued."""

    def __init__(
        self,
        *,
        pending: PendingDeployments,
        locks: RuleFileLocks,
        deployments: DeploymentStore,
        feedback: FeedbackStore,
        rule_files: RuleFiles,
        clock: Clock,
    ) -> None:
        self.pending = pending
        self.locks = locks
        self.deployments = deployments
        self.feedback = feedback
        self.rule_files = rule_files
        self.clock = clock

    async def settle_left_pending(self) -> tuple[list[int], list[int]]:
        """Settle every deployment left pending: completed, or aborted (the rule back where it was). Each file's
        are settled under its lock, so a change under way (here, or in another instance) is waited for; once
        the lock is ours, a deployment still pending has lost its process — one killed mid-deploy, whose
        database lock went with its connection. At start (`reconcile`) and every few seconds (the scheduler's
        `settle_pending`): an instance that dies mid-deploy leaves no rule shown `deployed` without its line
        while the others run on."""
        completed: list[int] = []
        aborted: list[int] = []
        modules = sorted({d.module_name for d in await self.deployments.pending_deployments()})
        for module_name in modules:
            try:
                async with self.locks.hold(module_name):
                    done, undone = await self.pending.settle(module_name)
            except InvalidInput as exc:  # a module no longer allowed: leave it for an admin
                log.error("cannot reconcile deployments of %s: %s", module_name, exc.message)
                continue
            completed += done
            aborted += undone
        return completed, aborted

    async def reconcile(self) -> ReconcileReport:
        completed, aborted = await self.settle_left_pending()
        committed: list[int] = []
        pruned = 0
        for module_name in self.rule_files.allowed_modules:
            async with self.locks.hold(module_name):
                committed += await self.pending.commit_uncommitted(module_name)
                keep = await bases_in_use(self.deployments, module_name)
                pruned += await self.pending.truth.prune_bases(module_name, keep)
        if pruned:
            log.info("removed %d kept rule-file bases no active change derives from any more", pruned)
        requeued = await self.feedback.requeue_interrupted_feedback(now=self.clock())
        removed = await asyncio.to_thread(self.rule_files.tidy)
        if removed:
            log.info("removed %d temporary rule files left by an interrupted write", removed)
        return ReconcileReport(
            deployments_completed=completed,
            deployments_aborted=aborted,
            feedback_requeued=requeued,
            commits_restored=committed,
        )
