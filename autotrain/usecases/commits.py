"""One git commit per change of a rule file: its message, and recording its sha on the deployment."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from autotrain.errors import StoreBusy
from autotrain.models import Deployment, DeployOutcome, Rule
from autotrain.ports import DeploymentStore, RuleHistory

log = logging.getLogger("autotrain.deploys")


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
) -> str | None:
    """Commit the file as it is now for this deployment (and `also` those earlier ones it includes, left
    uncommitted by a crash); the sha, recorded on each, or None. A failed commit is logged, not raised: the
    file change itself has happened."""
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
                await deployments.set_deployment_commit_error(each.deployment_id, error[:500])
        return None
    if sha is not None:
        for each in (*also, deployment):
            await deployments.set_deployment_commit(each.deployment_id, sha)
    return sha
