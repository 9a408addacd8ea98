"""A rule file as its base plus its active changes, read from the deployments of the file (see
autotrain/ruleset.py): what deploys.py derives a deploy, promote or rollback from."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotrain.models import Deployment, DeployOutcome, Rule, RuleStatus
from autotrain.ports import DeploymentStore, RuleStore
from autotrain.rulefiles import JsonRuleDocument, RuleChange, content_version, same_rule
from autotrain.ruleset import ActiveChange, derivation, with_version

if TYPE_CHECKING:
    from autotrain.usecases.file_truth import RuleFileTruth

log = logging.getLogger("autotrain.deploys")


@dataclass(frozen=True)
class FileModel:
    """A rule file as its base plus its active changes (autotrain/ruleset.py), read from the deployments."""

    base: bytes
    changes: list[ActiveChange]
    orders: dict[str, int]  # rule id -> the id of its first deployment (the order of the changes)

    def ref(self) -> dict[str, Any]:
        """Every change names its base by content version; the base itself is kept under .autotrain/bases/."""
        return {"base": content_version(self.base)}


@dataclass(frozen=True)
class HandEdited:
    """The file is not what its deploys derive: someone edited it since Auto-Train last changed it."""


class FileModels:
    """Reads the model of a file from its deployments (and its base: kept beside it in the rules folder, or a
    version stored in the database; file_truth.py)."""

    def __init__(self, *, rules: RuleStore, deployments: DeploymentStore, bases: RuleFileTruth) -> None:
        self.rules = rules
        self.deployments = deployments
        self.bases = bases

    async def load(self, module_name: str, current: bytes, document: Any) -> FileModel | HandEdited | None:
        """The file as base + active changes, when every active deployment of it recorded its change and the
        file is what they derive; HandEdited when it is not; None for deployments from before the model. A hand
        edit is adopted: the file stays as the human left it, and changes are applied and reverted on it line
        by line until none is active; the next deploy then takes the file as its new base."""
        specs: list[tuple[int, ActiveChange, dict[str, Any], int]] = []
        for deployed in await self.deployments.deployed_rules(module_name):
            deployment = await self.deployments.active_deployment_for_rule(deployed.rule_id)
            ruleset = deployment.change.get("ruleset") if deployment is not None else None
            if deployment is None or not isinstance(ruleset, dict) or "spec" not in ruleset:
                return None
            order = int(ruleset.get("order", deployment.deployment_id))
            specs.append((order, ActiveChange.from_detail(ruleset["spec"]), ruleset, deployment.deployment_id))
        if not specs:
            return FileModel(current, [], {})
        specs.sort(key=lambda item: item[0])
        base_versions = {str(r.get("base")) for _, _, r, _ in specs}
        if len(base_versions) != 1:
            return None
        base = await self.bases.read_base(module_name, base_versions.pop())
        if base is None:
            return None
        model = FileModel(base, [c for _, c, _, _ in specs], {c.rule_id: o for o, c, _, _ in specs})
        if derivation(model.base, model.changes, module_name, version=file_version(document)).content != current:
            log.warning("%s is not what its deploys derive (edited by hand?): adopted as it is", module_name)
            return HandEdited()
        return model

    async def revert_in_place(self, rule: Rule, document: Any, original: Deployment) -> RuleChange:
        """The rollback of a change made before the model (or on a hand-edited file): on the file as it is."""
        others = [r for r in await self.deployments.deployed_rules(rule.module_name) if r.rule_id != rule.rule_id]
        # an old line stays out only when another deployed rule actually removed it (not merely named it)
        removed_by_other = False
        for other in others:
            if rule.old_rule and other.old_rule == rule.old_rule:
                theirs = await self.deployments.active_deployment_for_rule(other.rule_id)
                removed_by_other = removed_by_other or (
                    theirs is not None and theirs.change.get("outcome") == "replaced"
                )
        # nor is a line put back that a rule now rolled back had added (no rolled-back rule's line in a file); a
        # rolled-back rule that only rode on a line already there (a no-op deploy) did not add it
        added_by_rolled_back = False
        if rule.old_rule:
            rolled = await self.rules.list_rules(
                status=RuleStatus.ROLLED_BACK, module_name=rule.module_name, limit=200, offset=0
            )
            for other in rolled.items:
                if other.rule_id == rule.rule_id or not same_rule(other.new_rule, rule.old_rule):
                    continue
                history = await self.deployments.list_deployments(rule_id=other.rule_id, limit=20, offset=0)
                added = [d for d in history.items if d.rollback_of is None and d.outcome is not DeployOutcome.NOOP]
                added_by_rolled_back = added_by_rolled_back or bool(added)
        return document.revert(
            new_rule=rule.new_rule,
            change=await self.effective_change(original),
            keep_new=any(other.new_rule == rule.new_rule for other in others),
            restore_old=not removed_by_other and not added_by_rolled_back,
        )

    async def effective_change(self, deployment: Deployment) -> dict[str, Any]:
        """The file change a rollback undoes. A no-op deploy rode on a line another rule wrote; when that rule
        was rolled back first (the line stayed for this one), undoing this one undoes that rule's change."""
        change = deployment.change
        for _ in range(100):  # a chain of no-ops is short; the bound only guards against a cycle
            provider_id = change.get("provided_by") if change.get("outcome") == "noop" else None
            if not provider_id:
                return change
            provider = await self.rules.get_rule(provider_id)
            if provider is None or provider.status is not RuleStatus.ROLLED_BACK:
                return change
            provider_deployment = await self.deployments.active_deployment_for_rule(provider_id)
            if provider_deployment is None:
                return change
            change = provider_deployment.change
        return change


def removed_entry(document: Any, old_rule: str | None) -> Any:
    """The entry (JSON) or line (text) a replace takes out, as the in-place revert expects it."""
    if isinstance(document, JsonRuleDocument):
        return next((dict(e) for e in document.data["rules"] if old_rule and same_rule(e["rule"], old_rule)), None)
    lines = getattr(document, "lines", [])
    return next((line for line in lines if old_rule and line.startswith("- ") and same_rule(line, old_rule)), None)


def file_version(document: Any) -> int | None:
    """A JSON file's "version" counter (bumped by every write, so not part of what is derived)."""
    return int(document.data.get("version", 0)) if isinstance(document, JsonRuleDocument) else None


def derive_content(
    model: FileModel, changes: list[ActiveChange], module_name: str, document: Any, previous: bytes
) -> tuple[bytes, list[str], bool]:
    """The file these changes derive, its version bumped when it differs from `previous` (and whether it does)."""
    version = file_version(document)
    same = derivation(model.base, changes, module_name, version=version)
    if same.content == previous:
        return previous, same.outcomes, False
    if version is None:
        return same.content, same.outcomes, True
    return with_version(same.content, version + 1), same.outcomes, True  # not a second derivation of a big file


async def bases_in_use(deployments: DeploymentStore, module_name: str) -> set[str]:
    """The base versions a file's active and pending changes derive from (those bases must be kept)."""
    found = [
        await deployments.active_deployment_for_rule(r.rule_id) for r in await deployments.deployed_rules(module_name)
    ]
    found += [d for d in await deployments.pending_deployments() if d.module_name == module_name]
    bases = set()
    for deployment in found:
        ruleset = deployment.change.get("ruleset") if deployment is not None else None
        if isinstance(ruleset, dict) and ruleset.get("base"):
            bases.add(str(ruleset["base"]))
    return bases
