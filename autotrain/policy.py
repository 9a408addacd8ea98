"""Who may do what, and which state transitions exist. Every edge (REST, Slack, CLI) goes through these."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from autotrain.errors import PermissionDenied, TransitionRefused
from autotrain.models import FeedbackStatus, Rule, RuleStatus


class Role(StrEnum):
    REPORTER = "reporter"
    ADMIN = "admin"
    SYSTEM = "system"  # the pipeline itself: reconciliation at start, auto-approve


class Action(StrEnum):
    SUBMIT = "submit"
    READ = "read"
    GENERATE = "generate"
    EDIT = "edit"
    APPROVE = "approve"
    REJECT = "reject"
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    RUN_ALL = "run_all"


ADMIN_ACTIONS = frozenset({Action.EDIT, Action.APPROVE, Action.REJECT, Action.DEPLOY, Action.ROLLBACK, Action.RUN_ALL})


@dataclass(frozen=True)
class Actor:
    """Who asks: a token subject, a Slack user id, or the system."""

    id: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.ADMIN, Role.SYSTEM)


SYSTEM_ACTOR = Actor("system", Role.SYSTEM)
AUTO_APPROVER = Actor("auto-approve", Role.SYSTEM)


def slack_actor(user_id: str, admins: Iterable[str], admin_group_members: Iterable[str] = ()) -> Actor:
    """A Slack user is an admin when listed in AUTOTRAIN_ADMINS or a member of the admin user group."""
    is_admin = user_id in set(admins) or user_id in set(admin_group_members)
    return Actor(user_id, Role.ADMIN if is_admin else Role.REPORTER)


def require_permission(actor: Actor, action: Action) -> None:
    if action in ADMIN_ACTIONS and not actor.is_admin:
        raise PermissionDenied(f"{action.value} needs an admin; {actor.id} is a {actor.role.value}")


RULE_TRANSITIONS: dict[RuleStatus, frozenset[RuleStatus]] = {
    RuleStatus.PENDING: frozenset({RuleStatus.APPROVED, RuleStatus.REJECTED}),
    RuleStatus.APPROVED: frozenset({RuleStatus.DEPLOYED, RuleStatus.REJECTED}),
    RuleStatus.DEPLOYED: frozenset({RuleStatus.ROLLED_BACK}),
    RuleStatus.ROLLED_BACK: frozenset(),
    RuleStatus.REJECTED: frozenset(),
}

FEEDBACK_TRANSITIONS: dict[FeedbackStatus, frozenset[FeedbackStatus]] = {
    FeedbackStatus.PENDING: frozenset({FeedbackStatus.PROCESSING}),
    FeedbackStatus.PROCESSING: frozenset({FeedbackStatus.PROCESSED, FeedbackStatus.PENDING, FeedbackStatus.REJECTED}),
    FeedbackStatus.PROCESSED: frozenset({FeedbackStatus.REJECTED}),
    FeedbackStatus.REJECTED: frozenset(),
}

_VERB = {
    RuleStatus.APPROVED: "approve",
    RuleStatus.REJECTED: "reject",
    RuleStatus.DEPLOYED: "deploy",
    RuleStatus.ROLLED_BACK: "roll back",
}


def check_rule_transition(rule_id: str, current: RuleStatus, target: RuleStatus) -> None:
    if target not in RULE_TRANSITIONS[current]:
        raise TransitionRefused(
            f"cannot {_VERB.get(target, target.value)} {rule_id}: it is {current.value}" + _hint(current, target)
        )


def rule_can(current: RuleStatus, target: RuleStatus) -> bool:
    return target in RULE_TRANSITIONS[current]


def check_rule_editable(rule_id: str, current: RuleStatus) -> None:
    if current is not RuleStatus.PENDING:
        raise TransitionRefused(f"cannot edit {rule_id}: it is {current.value}; only pending rules can be edited")


def _hint(current: RuleStatus, target: RuleStatus) -> str:
    if target is RuleStatus.DEPLOYED and current is RuleStatus.PENDING:
        return " (approve it first)"
    if target is RuleStatus.ROLLED_BACK and current is not RuleStatus.DEPLOYED:
        return " (only a deployed rule can be rolled back)"
    return ""


def auto_approval_refusal(rule: Rule, threshold: float | None, *, canary_required: bool) -> str | None:
    """Why this rule may not be approved without an admin, or None when it may (the cookbook's > 0.9).

    Only a clean, confident, additive rule passes: anything flagged or warned about, anything that replaces
    an existing rule, and anything that must go through a canary first waits for a person.
    """
    if threshold is None:
        return "auto-approve is off"
    if rule.status is not RuleStatus.PENDING:
        return f"it is {rule.status.value}"
    if rule.confidence <= threshold:
        return f"confidence {rule.confidence:.2f} is not above {threshold:.2f}"
    if rule.warnings:
        return "it has warnings: " + ", ".join(w.value for w in rule.warnings)
    if rule.old_rule:
        return "it replaces an existing rule"
    if canary_required and rule.module_name.endswith(".json"):
        return "rules for this file must go through a canary first"
    return None
