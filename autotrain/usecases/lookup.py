"""Reading a record that must exist, and explaining a lost compare-and-set: shared by the use cases."""

from __future__ import annotations

from autotrain.errors import NotFound, TransitionRefused
from autotrain.i18n import N_
from autotrain.models import Feedback, Rule, RuleStatus
from autotrain.policy import check_rule_transition
from autotrain.ports import FeedbackStore, RuleStore


async def rule_or_404(rules: RuleStore, rule_id: str) -> Rule:
    rule = await rules.get_rule(rule_id)
    if rule is None:
        raise NotFound(N_("no rule {rule_id}"), rule_id=rule_id)
    return rule


async def feedback_or_404(feedback: FeedbackStore, feedback_id: str) -> Feedback:
    found = await feedback.get_feedback(feedback_id)
    if found is None:
        raise NotFound(N_("no feedback {feedback_id}"), feedback_id=feedback_id)
    return found


async def refuse_changed(rules: RuleStore, rule_id: str, target: RuleStatus) -> None:
    """The compare-and-set lost: someone else changed the rule first. Explain with its state now."""
    current = await rule_or_404(rules, rule_id)
    check_rule_transition(rule_id, current.status, target)
    raise TransitionRefused(
        N_("{rule_id} changed while this was being done; it is now {status}"), rule_id=rule_id, status=current.status
    )
