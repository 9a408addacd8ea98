"""Who may do what, and which rule transitions exist (DESIGN.md, "Identifiers and states")."""

from __future__ import annotations

import itertools

import pytest

from autotrain.errors import PermissionDenied, TransitionRefused
from autotrain.models import RuleStatus
from autotrain.policy import (
    SYSTEM_ACTOR,
    Action,
    Actor,
    Role,
    check_rule_editable,
    check_rule_transition,
    require_permission,
    rule_can,
)

# The state machine as DESIGN.md writes it, independent of the code's table:
#   rule: pending → approved → deployed → rolled_back; pending | approved → rejected.
DESIGN_EDGES = {
    (RuleStatus.PENDING, RuleStatus.APPROVED),
    (RuleStatus.APPROVED, RuleStatus.DEPLOYED),
    (RuleStatus.DEPLOYED, RuleStatus.ROLLED_BACK),
    (RuleStatus.PENDING, RuleStatus.REJECTED),
    (RuleStatus.APPROVED, RuleStatus.REJECTED),
}
ALL_PAIRS = list(itertools.product(RuleStatus, RuleStatus))
ALLOWED = [pair for pair in ALL_PAIRS if pair in DESIGN_EDGES]
REFUSED = [pair for pair in ALL_PAIRS if pair not in DESIGN_EDGES]


def pair_id(pair: tuple[RuleStatus, RuleStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_every_status_is_covered() -> None:
    assert len(ALL_PAIRS) == len(RuleStatus) ** 2 == 25
    assert len(ALLOWED) == 5
    assert {status.value for status in RuleStatus} == {"pending", "approved", "deployed", "rolled_back", "rejected"}


@pytest.mark.parametrize("pair", ALLOWED, ids=pair_id)
def test_design_transitions_are_allowed(pair: tuple[RuleStatus, RuleStatus]) -> None:
    current, target = pair
    check_rule_transition("RUL-1001", current, target)  # must not raise
    assert rule_can(current, target) is True


@pytest.mark.parametrize("pair", REFUSED, ids=pair_id)
def test_other_transitions_are_refused_naming_the_rule(pair: tuple[RuleStatus, RuleStatus]) -> None:
    current, target = pair
    assert rule_can(current, target) is False
    with pytest.raises(TransitionRefused) as caught:
        check_rule_transition("RUL-1042", current, target)
    assert "RUL-1042" in caught.value.message
    assert current.value in caught.value.message
    assert caught.value.code == "transition_refused"


def test_the_accepted_pairs_are_exactly_the_design_edges() -> None:
    accepted = set()
    for current, target in ALL_PAIRS:
        try:
            check_rule_transition("RUL-1001", current, target)
        except TransitionRefused:
            continue
        accepted.add((current, target))
    assert accepted == DESIGN_EDGES


def test_refusals_give_a_hint() -> None:
    with pytest.raises(TransitionRefused, match="approve it first"):
        check_rule_transition("RUL-1001", RuleStatus.PENDING, RuleStatus.DEPLOYED)
    with pytest.raises(TransitionRefused, match="only a deployed rule"):
        check_rule_transition("RUL-1001", RuleStatus.APPROVED, RuleStatus.ROLLED_BACK)


def test_terminal_states_go_nowhere() -> None:
    for terminal in (RuleStatus.ROLLED_BACK, RuleStatus.REJECTED):
        assert not any(rule_can(terminal, target) for target in RuleStatus)


def test_only_pending_rules_can_be_edited() -> None:
    check_rule_editable("RUL-1001", RuleStatus.PENDING)
    for status in RuleStatus:
        if status is RuleStatus.PENDING:
            continue
        with pytest.raises(TransitionRefused) as caught:
            check_rule_editable("RUL-1007", status)
        assert "RUL-1007" in caught.value.message
        assert status.value in caught.value.message


REPORTER = Actor("chatbot", Role.REPORTER)
ADMIN = Actor("U_ADMIN", Role.ADMIN)
ADMIN_ONLY = {Action.APPROVE, Action.REJECT, Action.EDIT, Action.DEPLOY, Action.ROLLBACK, Action.RUN_ALL}
EVERYONE = {Action.SUBMIT, Action.READ, Action.GENERATE}


def test_every_action_is_classified() -> None:
    assert ADMIN_ONLY | EVERYONE == set(Action)
    assert not ADMIN_ONLY & EVERYONE


@pytest.mark.parametrize("action", sorted(ADMIN_ONLY), ids=str)
def test_reporter_cannot_do_admin_actions(action: Action) -> None:
    with pytest.raises(PermissionDenied) as caught:
        require_permission(REPORTER, action)
    assert action.value in caught.value.message
    assert "chatbot" in caught.value.message
    assert caught.value.code == "forbidden"


def permitted(actor: Actor) -> set[Action]:
    allowed = set()
    for action in Action:
        try:
            require_permission(actor, action)
        except PermissionDenied:
            continue
        allowed.add(action)
    return allowed


def test_reporter_can_submit_read_and_generate_only() -> None:
    assert permitted(REPORTER) == EVERYONE
    assert REPORTER.is_admin is False


@pytest.mark.parametrize("actor", [ADMIN, SYSTEM_ACTOR, Actor("U_OTHER_ADMIN", Role.ADMIN)], ids=lambda actor: actor.id)
def test_admin_and_system_can_do_everything(actor: Actor) -> None:
    assert permitted(actor) == set(Action)
    assert actor.is_admin is True


def test_system_actor_is_the_system_role() -> None:
    assert SYSTEM_ACTOR.role is Role.SYSTEM
    assert SYSTEM_ACTOR.id == "system"
