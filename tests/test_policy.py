"""Who may do what, and which rule transitions exist (the README, "Concepts")."""

from __future__ import annotations

import itertools

import pytest

from autotrain.errors import CanaryUnsupported, InvalidInput, PermissionDenied, TransitionRefused
from autotrain.models import RuleStatus
from autotrain.policy import (
    RULE_TRANSITIONS,
    SYSTEM_ACTOR,
    Action,
    Actor,
    Role,
    RuleAction,
    check_rollout,
    check_rule_editable,
    check_rule_transition,
    require_permission,
    rule_actions,
    rule_can,
    supports_canary,
)
from tests.conftest import a_rule

# The state machine as the README's "Concepts" writes it, independent of the code's table:
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
    if current is target and target is not RuleStatus.PENDING:  # a second click: said as such
        assert f"RUL-1042 is already {target.value.replace('_', ' ')}" == caught.value.message
    else:
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


# ---------------------------------------------------------------------- what a rule allows next (the card's buttons)


@pytest.mark.parametrize(
    ("status", "module_name", "rollout_percent", "expected"),
    [
        (RuleStatus.PENDING, "fashion_rules.json", None, (RuleAction.APPROVE, RuleAction.EDIT, RuleAction.REJECT)),
        (RuleStatus.PENDING, "prompt_v2.txt", None, (RuleAction.APPROVE, RuleAction.EDIT, RuleAction.REJECT)),
        (RuleStatus.APPROVED, "fashion_rules.json", None, (RuleAction.DEPLOY, RuleAction.CANARY, RuleAction.REJECT)),
        (RuleStatus.APPROVED, "prompt_v2.txt", None, (RuleAction.DEPLOY, RuleAction.REJECT)),
        (RuleStatus.APPROVED, "stylist_guidelines.md", None, (RuleAction.DEPLOY, RuleAction.REJECT)),
        (RuleStatus.DEPLOYED, "fashion_rules.json", 100, (RuleAction.ROLLBACK,)),
        (RuleStatus.DEPLOYED, "fashion_rules.json", 10, (RuleAction.PROMOTE, RuleAction.ROLLBACK)),
        (RuleStatus.DEPLOYED, "prompt_v2.txt", 100, (RuleAction.ROLLBACK,)),
        (RuleStatus.ROLLED_BACK, "fashion_rules.json", None, ()),
        (RuleStatus.REJECTED, "fashion_rules.json", None, ()),
    ],
)
def test_rule_actions_follow_the_state_and_the_file(
    status: RuleStatus, module_name: str, rollout_percent: int | None, expected: tuple[RuleAction, ...]
) -> None:
    assert rule_actions(a_rule(status, module_name, rollout_percent)) == expected


ACTION_TARGET = {
    RuleAction.APPROVE: RuleStatus.APPROVED,
    RuleAction.REJECT: RuleStatus.REJECTED,
    RuleAction.DEPLOY: RuleStatus.DEPLOYED,
    RuleAction.CANARY: RuleStatus.DEPLOYED,
    RuleAction.ROLLBACK: RuleStatus.ROLLED_BACK,
}


@pytest.mark.parametrize("status", list(RuleStatus), ids=str)
def test_rule_actions_offer_exactly_the_transitions_the_table_allows(status: RuleStatus) -> None:
    actions = rule_actions(a_rule(status))
    offered = {ACTION_TARGET[action] for action in actions if action in ACTION_TARGET}
    assert offered == set(RULE_TRANSITIONS[status])
    for action in actions:
        if action in ACTION_TARGET:
            check_rule_transition("RUL-1001", status, ACTION_TARGET[action])  # must not raise
    assert (RuleAction.EDIT in actions) == (status is RuleStatus.PENDING)


def test_rule_actions_never_offer_a_canary_a_file_cannot_take() -> None:
    for module_name in ("prompt_v2.txt", "stylist_guidelines.md", "fashion_rules.json"):
        actions = rule_actions(a_rule(RuleStatus.APPROVED, module_name))
        assert (RuleAction.CANARY in actions) == supports_canary(module_name)


# ---------------------------------------------------------------------- canary rollout


def test_only_json_rule_files_support_a_canary() -> None:
    assert supports_canary("fashion_rules.json") is True
    assert supports_canary("prompt_v2.txt") is False
    assert supports_canary("stylist_guidelines.md") is False


@pytest.mark.parametrize("rollout_percent", [0, -5, 101, 1000])
def test_a_rollout_outside_1_to_100_is_refused(rollout_percent: int) -> None:
    for module_name in ("fashion_rules.json", "prompt_v2.txt"):
        with pytest.raises(InvalidInput) as caught:
            check_rollout(a_rule(RuleStatus.APPROVED, module_name), rollout_percent)
        assert caught.value.message == "rollout_percent must be between 1 and 100"
        assert caught.value.code == "invalid_input"


@pytest.mark.parametrize("module_name", ["prompt_v2.txt", "stylist_guidelines.md"])
def test_a_canary_on_a_line_rule_file_is_refused(module_name: str) -> None:
    with pytest.raises(CanaryUnsupported) as caught:
        check_rollout(a_rule(RuleStatus.APPROVED, module_name), 10)
    assert caught.value.message == (f"{module_name} cannot take a canary: rollouts below 100 % are for JSON rule files")
    assert caught.value.code == "canary_unsupported"
    check_rollout(a_rule(RuleStatus.APPROVED, module_name), 100)  # everyone: fine


@pytest.mark.parametrize("rollout_percent", [1, 10, 99, 100])
def test_a_json_rule_file_takes_any_share(rollout_percent: int) -> None:
    check_rollout(a_rule(RuleStatus.APPROVED, "fashion_rules.json"), rollout_percent)  # must not raise
