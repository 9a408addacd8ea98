"""Who may do what, and which state transitions exist. Every edge (REST, Slack, CLI) goes through these."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from autotrain.errors import CanaryUnsupported, FlagsNotAcknowledged, InvalidInput, PermissionDenied, TransitionRefused
from autotrain.i18n import N_
from autotrain.models import FLAG_WARNINGS, Rule, RuleStatus, RuleWarning


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
AUTO_CANARY = Actor("auto-canary", Role.SYSTEM)  # promotes or rolls back a canary on evidence (usecases/effects)


def slack_actor(user_id: str, admins: Iterable[str], admin_group_members: Iterable[str] = ()) -> Actor:
    """A Slack user is an admin when listed in AUTOTRAIN_ADMINS or a member of the admin user group."""
    is_admin = user_id in set(admins) or user_id in set(admin_group_members)
    return Actor(user_id, Role.ADMIN if is_admin else Role.REPORTER)


def require_permission(actor: Actor, action: Action) -> None:
    if action in ADMIN_ACTIONS and not actor.is_admin:
        raise PermissionDenied(
            N_("{action} needs an admin; {actor} is a {role}"),
            action=action.value,
            actor=actor.id,
            role=actor.role.value,
        )


RULE_TRANSITIONS: dict[RuleStatus, frozenset[RuleStatus]] = {
    RuleStatus.PENDING: frozenset({RuleStatus.APPROVED, RuleStatus.REJECTED}),
    RuleStatus.APPROVED: frozenset({RuleStatus.DEPLOYED, RuleStatus.REJECTED}),
    RuleStatus.DEPLOYED: frozenset({RuleStatus.ROLLED_BACK}),
    RuleStatus.ROLLED_BACK: frozenset(),
    RuleStatus.REJECTED: frozenset(),
}

# each refusal a whole sentence, so that a translation can order it as its language does
_ALREADY = {
    RuleStatus.APPROVED: N_("{rule_id} is already approved"),
    RuleStatus.REJECTED: N_("{rule_id} is already rejected"),
    RuleStatus.DEPLOYED: N_("{rule_id} is already deployed"),
    RuleStatus.ROLLED_BACK: N_("{rule_id} is already rolled back"),
}
_CANNOT = {
    RuleStatus.APPROVED: N_("cannot approve {rule_id}: it is {status}"),
    RuleStatus.REJECTED: N_("cannot reject {rule_id}: it is {status}"),
    RuleStatus.DEPLOYED: N_("cannot deploy {rule_id}: it is {status}"),
    RuleStatus.ROLLED_BACK: N_("cannot roll back {rule_id}: it is {status}; only a deployed rule can be rolled back"),
}
_APPROVE_FIRST = N_("cannot deploy {rule_id}: it is pending; approve it first")


def check_rule_transition(rule_id: str, current: RuleStatus, target: RuleStatus) -> None:
    if rule_can(current, target):
        return
    if current is target and target in _ALREADY:
        raise TransitionRefused(_ALREADY[target], rule_id=rule_id)
    if target is RuleStatus.DEPLOYED and current is RuleStatus.PENDING:
        raise TransitionRefused(_APPROVE_FIRST, rule_id=rule_id)
    raise TransitionRefused(_CANNOT.get(target, _CANNOT[RuleStatus.APPROVED]), rule_id=rule_id, status=current)


def rule_can(current: RuleStatus, target: RuleStatus) -> bool:
    return target in RULE_TRANSITIONS[current]


def _editable(current: RuleStatus) -> bool:
    return current is RuleStatus.PENDING


def check_rule_editable(rule_id: str, current: RuleStatus) -> None:
    if not _editable(current):
        raise TransitionRefused(
            N_("cannot edit {rule_id}: it is {status}; only pending rules can be edited"),
            rule_id=rule_id,
            status=current,
        )


def rule_flags(rule: Rule) -> list[RuleWarning]:
    """The rule's flag warnings (FLAG_WARNINGS), in the order it carries them: empty exactly when it is not
    `rule.flagged`."""
    return [warning for warning in rule.warnings if warning in FLAG_WARNINGS]


def check_flags_acknowledged(rule: Rule, *, acknowledge_flags: bool) -> list[RuleWarning]:
    """A flagged rule is approved only by someone who says they read it (`acknowledge_flags`); the flags
    acknowledged (to audit) are returned. Raises FlagsNotAcknowledged, naming them, otherwise."""
    flags = rule_flags(rule)
    if flags and not acknowledge_flags:
        raise FlagsNotAcknowledged(
            N_("{rule_id} is flagged ({flags}): read it, then approve it with acknowledge_flags"),
            rule_id=rule.rule_id,
            flags=", ".join(flag.value for flag in flags),
            flagged=flags,
        )
    return flags


def auto_approval_refusal(
    rule: Rule, threshold: float | None, *, canary_required: bool, evaluation_status: str | None = None
) -> str | None:
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
    if rule_flags(rule):  # a flag needs a person's acknowledgement (check_flags_acknowledged): never automatic
        return "it is flagged: " + ", ".join(flag.value for flag in rule_flags(rule))
    if rule.warnings:
        return "it has warnings: " + ", ".join(w.value for w in rule.warnings)
    if rule.old_rule:
        return "it replaces an existing rule"
    if canary_required and supports_canary(rule.module_name):
        return "rules for this file must go through a canary first"
    if evaluation_status is not None and evaluation_status != "passed":
        return f"its replay did not pass ({evaluation_status})"
    return None


# ---------------------------------------------------------------------- canary rollout


def supports_canary(module_name: str) -> bool:
    """Only JSON rule files can hold a rule for a share of users (an entry's `rollout_percent`);
    a text or Markdown line applies to everyone who reads the file."""
    return module_name.endswith(".json")


def check_rollout(rule: Rule, rollout_percent: int) -> None:
    """Refuse a rollout share outside 1..100, and a canary (below 100) on a file that cannot hold one."""
    if not 1 <= rollout_percent <= 100:
        raise InvalidInput(N_("rollout_percent must be between 1 and 100"))
    if rollout_percent < 100 and not supports_canary(rule.module_name):
        raise CanaryUnsupported(
            N_("{module} cannot take a canary: rollouts below 100 % are for JSON rule files"), module=rule.module_name
        )


# ---------------------------------------------------------------------- what a rule allows next


class RuleAction(StrEnum):
    """What can be done next to one rule; a card shows one button for each."""

    APPROVE = "approve"
    EDIT = "edit"
    REJECT = "reject"
    DEPLOY = "deploy"  # to every user
    CANARY = "canary"  # deploy to a share of users first
    PROMOTE = "promote"  # a canary to every user
    ROLLBACK = "rollback"
    DEPLOY_OVERRIDE = "deploy_override"  # deploy although its replay has not passed (AUTOTRAIN_REQUIRE_EVALUATION)


def approval_invited(rule: Rule) -> bool:
    """Whether a card invites approval (its Approve the primary button): only for a clean rule. A flagged one is
    approved through a confirmation that names its flags (`check_flags_acknowledged`), and any warning asks the
    reviewer to read before approving."""
    return not rule.warnings


def rule_actions(rule: Rule, *, evaluation_required: bool = False) -> tuple[RuleAction, ...]:
    """The actions the rule's state and file allow, in the order a card shows them (reject last).
    `evaluation_required`: deploy needs a passed replay, and this rule has none — its deploy buttons give way
    to one that overrides the gate (audited).

    Who may take them is `require_permission`'s question, not this one: a card is the same for everyone.
    """
    status = rule.status
    actions: list[RuleAction] = []
    if rule_can(status, RuleStatus.APPROVED):
        actions.append(RuleAction.APPROVE)
    if _editable(status):
        actions.append(RuleAction.EDIT)
    if rule_can(status, RuleStatus.DEPLOYED) and evaluation_required:
        actions.append(RuleAction.DEPLOY_OVERRIDE)
    elif rule_can(status, RuleStatus.DEPLOYED):
        actions.append(RuleAction.DEPLOY)
        if supports_canary(rule.module_name):
            actions.append(RuleAction.CANARY)
    if rule.canary:
        actions.append(RuleAction.PROMOTE)
    if rule_can(status, RuleStatus.ROLLED_BACK):
        actions.append(RuleAction.ROLLBACK)
    if rule_can(status, RuleStatus.REJECTED):
        actions.append(RuleAction.REJECT)
    return tuple(actions)
