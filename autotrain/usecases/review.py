"""Review: approve, edit or reject a rule before it is deployed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from autotrain.errors import TransitionRefused
from autotrain.i18n import N_
from autotrain.models import EventKind, NewEvent, Rule, RuleProposal, RuleStatus
from autotrain.options import Clock
from autotrain.policy import (
    Action,
    Actor,
    check_flags_acknowledged,
    check_rule_editable,
    check_rule_transition,
    require_permission,
)
from autotrain.ports import FeedbackStore, RuleStore
from autotrain.proposals import deployed_rule_ids, validate_proposal
from autotrain.rulefiles import RuleFiles
from autotrain.usecases.lookup import feedback_or_404, refuse_changed, rule_or_404


class ReviewRules:
    def __init__(
        self,
        *,
        rules: RuleStore,
        feedback: FeedbackStore,
        rule_files: RuleFiles,
        clock: Clock,
        wake: Callable[[], None],
    ) -> None:
        self.rules = rules
        self.feedback = feedback
        self.rule_files = rule_files
        self.clock = clock
        self.wake = wake

    async def approve(self, rule_id: str, actor: Actor, *, acknowledge_flags: bool = False) -> Rule:
        """pending → approved. A flagged rule needs `acknowledge_flags` (its flags are then audited), and is
        approved only as it was read: an edit in between refuses it (409), since the flags may have changed."""
        require_permission(actor, Action.APPROVE)
        rule = await rule_or_404(self.rules, rule_id)
        check_rule_transition(rule_id, rule.status, RuleStatus.APPROVED)
        flags = check_flags_acknowledged(rule, acknowledge_flags=acknowledge_flags)
        return await self._move(
            rule,
            RuleStatus.APPROVED,
            actor,
            EventKind.RULE_APPROVED,
            detail={"acknowledged_flags": [flag.value for flag in flags]} if flags else None,
        )

    async def reject(self, rule_id: str, actor: Actor, reason: str | None = None) -> Rule:
        require_permission(actor, Action.REJECT)
        rule = await rule_or_404(self.rules, rule_id)
        check_rule_transition(rule_id, rule.status, RuleStatus.REJECTED)
        return await self._move(rule, RuleStatus.REJECTED, actor, EventKind.RULE_REJECTED, reason=reason)

    async def _move(
        self,
        rule: Rule,
        target: RuleStatus,
        actor: Actor,
        event: EventKind,
        *,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Rule:
        updated = await self.rules.transition_rule(
            rule.rule_id,
            expected=rule.status,
            target=target,
            actor_id=actor.id,
            now=self.clock(),
            reason=reason,
            event=NewEvent(kind=event, actor_id=actor.id),
            detail=detail,
            as_read=rule if target is RuleStatus.APPROVED else None,
        )
        if updated is None:
            await refuse_changed(self.rules, rule.rule_id, target)
            raise AssertionError("refuse_changed always raises")
        self.wake()
        return updated

    async def rule_for_edit(self, rule_id: str, actor: Actor) -> Rule:
        """The rule an admin is about to edit: refused before a form is shown when it cannot be edited."""
        require_permission(actor, Action.EDIT)
        rule = await rule_or_404(self.rules, rule_id)
        check_rule_editable(rule_id, rule.status)
        return rule

    async def edit(
        self,
        rule_id: str,
        actor: Actor,
        *,
        new_rule: str,
        module_name: str | None = None,
        old_rule: str | None = None,
    ) -> Rule:
        """Change a pending rule's text (and target file) before approval; warnings are recomputed, except the
        generator's confidence warning (the admin wrote this wording). The rule to replace must be in the file
        (ignoring case and accents); an empty `old_rule` appends, None keeps the rule's."""
        rule = await self.rule_for_edit(rule_id, actor)
        current_rules = await asyncio.to_thread(self.rule_files.current_rules)
        feedback = await feedback_or_404(self.feedback, rule.feedback_id)
        deployed = [r for module in self.rule_files.allowed_modules for r in await self.rules.deployed_rules(module)]
        proposal = validate_proposal(
            RuleProposal(
                module_name=module_name or rule.module_name,
                rule_type=rule.rule_type,
                old_rule=old_rule if old_rule is not None else rule.old_rule,
                new_rule=new_rule,
                reasoning=rule.reasoning,
                confidence=rule.confidence,
            ),
            current_rules,
            self.rule_files.allowed_modules,
            # the feedback stays untrusted (an injection stays flagged); an admin may quote it on purpose
            feedback_texts=(feedback.query, feedback.ai_response, feedback.feedback_text),
            check_copy=False,
            admin_edit=True,
            rule_ids=deployed_rule_ids(deployed),
        )
        changes = {
            "module_name": proposal.module_name,
            "old_rule": proposal.old_rule,
            "new_rule": proposal.new_rule,
            "warnings": list(proposal.warnings),
            "warning_details": dict(proposal.warning_details),
        }
        updated = await self.rules.edit_rule(
            rule_id,
            changes=changes,
            actor_id=actor.id,
            now=self.clock(),
            event=NewEvent(kind=EventKind.RULE_EDITED, actor_id=actor.id),
        )
        if updated is None:
            current = await rule_or_404(self.rules, rule_id)
            check_rule_editable(rule_id, current.status)
            raise TransitionRefused(N_("{rule_id} changed while it was being edited"), rule_id=rule_id)
        self.wake()
        return updated
