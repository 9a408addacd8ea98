"""One git commit per change of a rule file: its message, recording its sha on the deployment, and pushing it
to the git remote (AUTOTRAIN_GIT_REMOTE) when one is configured.

Decision: the push runs inline, right after the commit is recorded, with a short timeout (the history's), and
it never fails or undoes the deploy: a failure is logged as a warning and recorded on the deployment
(push_error), and the push is tried again with the next commit — which sends every earlier unpushed commit
too — and by `push_pending`, which the scheduler calls. Inline rather than in a background task: the deploy's
answer already knows whether the remote has its change, and nothing is left running at shutdown; the cost is
a deploy that waits for the remote (a refused connection or a missing path fails at once; only a remote that
does not answer costs the timeout)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from autotrain.errors import StoreBusy
from autotrain.models import Deployment, DeployOutcome, Rule
from autotrain.options import Clock, utcnow
from autotrain.ports import DeploymentStore, RuleHistory

log = logging.getLogger("autotrain.deploys")

ERROR_MAX = 500  # characters of git's reason kept on a deployment


def commit_message(rule: Rule, deployment: Deployment) -> str:
    if deployment.rollback_of is not None:
        verb = "Roll back"
    elif deployment.outcome is DeployOutcome.PROMOTED:
        verb = "Promote to 100 %:"
    elif deployment.outcome is DeployOutcome.CANARY:
        verb = f"Canary {deployment.rollout_percent} %:"
    else:
        verb = "Deploy"
    message = f"{verb} {rule.rule_id} ({rule.feedback_id}): {rule.new_rule}"
    if rule.old_rule:
        message += f"\n\nReplaces: {rule.old_rule}"
    return message


async def commit_change(
    history: RuleHistory,
    deployments: DeploymentStore,
    rule: Rule,
    deployment: Deployment,
    *,
    also: Sequence[Deployment] = (),
    clock: Clock = utcnow,
) -> str | None:
    """Commit the file as it is now for this deployment (and `also` those earlier ones it includes, left
    uncommitted by a crash); the sha, recorded on each, or None. A failed commit is logged, not raised: the
    file change itself has happened. Once recorded, the commit is pushed (`push_pending`)."""
    message = commit_message(rule, deployment)
    if also:
        message += "\n\nAlso includes the uncommitted changes of deployments " + ", ".join(
            f"#{d.deployment_id} ({d.rule_id})" for d in also
        )
    try:
        sha = await history.commit(deployment.module_name, author=deployment.deployed_by, message=message)
    except Exception as exc:
        log.error("git commit of %s for %s failed: %s", deployment.module_name, rule.rule_id, exc)
        error = str(exc) or type(exc).__name__
        with contextlib.suppress(StoreBusy):  # the next catch-up commits it anyway; the error is only shown
            for each in (*also, deployment):
                await deployments.set_deployment_commit_error(each.deployment_id, error[:ERROR_MAX])
        return None
    if sha is not None:
        for each in (*also, deployment):
            await deployments.set_deployment_commit(each.deployment_id, sha)
        try:
            await push_pending(history, deployments, clock=clock)
        except Exception:  # a push never fails the deploy: the change is written and committed
            log.warning("pushing %s for %s failed unexpectedly", sha[:10], rule.rule_id, exc_info=True)
    return sha


async def push_pending(history: RuleHistory, deployments: DeploymentStore, *, clock: Clock = utcnow) -> bool:
    """Push the rules folder's commits to the git remote, and record it: every deployment whose commit the
    remote has now is marked pushed (pushed_at, push_error cleared) — the earlier unpushed ones too, since a
    push sends them. A failure is recorded on each unpushed deployment (push_error, the git_push alert) and
    logged as a warning, never raised: the commits are safe in the rules folder, and the next commit or the
    next call of this (the scheduler's retry) pushes them. True when no commit is left unpushed; without a
    remote, or with nothing to push, it returns True at once (no git call)."""
    if history.remote is None:
        return True
    try:
        waiting = await deployments.unpushed_deployments()
        if not waiting:
            return True
        commits = list(dict.fromkeys(d.commit_sha for d in waiting if d.commit_sha))
        try:
            on_remote = await history.push(commits)
        except Exception as exc:
            error = (str(exc) or type(exc).__name__)[:ERROR_MAX]
            log.warning(
                "the push of %d rule-file commit(s) to the git remote failed (retried with the next commit and"
                " periodically): %s",
                len(commits),
                error,
            )
            await deployments.set_deployments_push_error([d.deployment_id for d in waiting], error)
            return False
        await deployments.set_deployments_pushed(
            [d.deployment_id for d in waiting if d.commit_sha in on_remote], clock()
        )
        astray = [d for d in waiting if d.commit_sha not in on_remote]
        for each in astray:  # pushed, yet not among the commits the remote has: not on the branch any more
            assert each.commit_sha is not None
            error = (
                f"commit {each.commit_sha[:10]} is not on the pushed branch: the rules folder's history was"
                " changed (reset, rebased or another branch checked out) after it was made"
            )
            await deployments.set_deployments_push_error([each.deployment_id], error)
        if astray:
            log.warning(
                "pushed, but the commits of deployments %s are not on the branch any more",
                [d.deployment_id for d in astray],
            )
        return not astray
    except StoreBusy as exc:  # the push itself may have happened; the next one records it
        log.warning("the outcome of a git push is not recorded yet: %s", exc.message)
        return False
