"""The store's outboxes, on every backend (the `store` fixture): rule events recorded by the state change in
its own transaction, held until a deploy's reload result, claimed with a lease and delivered in order per
rule across processes; webhook deliveries queued once per event and URL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from autotrain.models import DeployOutcome, EventKind, NewEvent, PipelineEvent, Rule, RuleStatus
from autotrain.ports import EVENT_HOLD_SECONDS, NewDeployment, ReloadResult, Store
from bot.webhooks import WebhookNotifier
from tests.stores import StoreBackend
from tests.test_storage import T0, add_feedback, add_rule

LEASE = 60.0


def created(actor: str = "system") -> NewEvent:
    return NewEvent(kind=EventKind.RULE_CREATED, actor_id=actor)


def approved(actor: str) -> NewEvent:
    return NewEvent(kind=EventKind.RULE_APPROVED, actor_id=actor)


async def approve(store: Store, rule_id: str, actor: str = "U1", now: datetime = T0) -> Rule | None:
    return await store.transition_rule(
        rule_id, expected=RuleStatus.PENDING, target=RuleStatus.APPROVED, actor_id=actor, now=now, event=approved(actor)
    )


async def deploy(store: Store, rule: Rule, *, now: datetime) -> int:
    """Begin and complete a deployment of an approved rule, its event held (as a deploy records it)."""
    deployment_id = await store.begin_deployment(
        NewDeployment(
            rule_id=rule.rule_id,
            module_name=rule.module_name,
            deployed_by="U1",
            version_before="v1",
            version_after="v2",
            outcome=DeployOutcome.APPENDED,
            change={},
            rollout_percent=100,
        ),
        expected=RuleStatus.APPROVED,
        target=RuleStatus.DEPLOYED,
        now=now,
    )
    assert deployment_id is not None
    await store.complete_deployment(
        deployment_id,
        backup_path=None,
        now=now,
        event=NewEvent(kind=EventKind.RULE_DEPLOYED, actor_id="U1", held=True),
    )
    return deployment_id


async def claim(store: Store, holder: str, now: datetime, limit: int = 50, lease: float = LEASE):
    return await store.claim_events(holder=holder, now=now, lease_seconds=lease, limit=limit)


async def drain(store: Store, now: datetime) -> list[tuple[str, EventKind]]:
    """Claim and deliver everything claimable now: (rule_id, kind) in delivery order."""
    seen = []
    for event in await claim(store, "drain", now):
        assert await store.event_delivered(event.event_id, holder="drain", now=now)
        seen.append((event.rule.rule_id, event.kind))
    return seen


# ---------------------------------------------------------------------- recorded with the change


async def test_an_event_exists_exactly_when_its_transition_won(store: Store, store_backend: StoreBackend) -> None:
    second = await store_backend.connect()
    rule = await add_rule(store, event=created())
    results = await asyncio.gather(
        *(approve(each, rule.rule_id, name) for each, name in ((store, "alice"), (second, "bob"), (store, "carol")))
    )
    winner = next(result for result in results if result is not None)
    assert sum(result is not None for result in results) == 1

    # lost compare-and-sets record nothing either: not pending any more, so no edit and no second approval
    assert await approve(store, rule.rule_id, "dave") is None
    edit = NewEvent(kind=EventKind.RULE_EDITED, actor_id="erin")
    assert await store.edit_rule(rule.rule_id, changes={"new_rule": "- x"}, actor_id="erin", now=T0, event=edit) is None

    events = await claim(store, "one", T0)
    assert [(e.kind, e.actor_id) for e in events] == [
        (EventKind.RULE_CREATED, "system"),
        (EventKind.RULE_APPROVED, winner.approved_by),
    ]
    # each carries the rule as it was right after its change
    assert events[0].rule.status is RuleStatus.PENDING and events[0].rule.approved_by is None
    assert events[1].rule.status is RuleStatus.APPROVED and events[1].rule.approved_by == winner.approved_by
    assert all(e.deployment_id is None and e.attempts == 1 and e.created_at == T0 for e in events)
    assert await store.undelivered_event_count() == 2


async def test_edit_and_attach_record_the_rule_after_them(store: Store) -> None:
    rule = await add_rule(store)
    edit = NewEvent(kind=EventKind.RULE_EDITED, actor_id="U1")
    edited = await store.edit_rule(rule.rule_id, changes={"new_rule": "- edited"}, actor_id="U1", now=T0, event=edit)
    assert edited is not None

    grouped = NewEvent(kind=EventKind.RULE_GROUPED, actor_id="system")
    other = await add_feedback(store, text="Trời nóng mà gợi ý áo len")
    assert await store.attach_feedback(rule.rule_id, [other], actor_id="system", now=T0, event=grouped) == [other]
    # attaching nothing (the feedback is no longer pending) records nothing
    assert await store.attach_feedback(rule.rule_id, [other], actor_id="system", now=T0, event=grouped) == []

    events = await claim(store, "one", T0)
    assert [e.kind for e in events] == [EventKind.RULE_EDITED, EventKind.RULE_GROUPED]
    assert events[0].rule.new_rule == "- edited" and events[0].rule.cluster_size == 1
    assert events[1].rule.cluster_size == 2


async def test_no_event_argument_records_no_event(store: Store) -> None:
    rule = await add_rule(store)
    await store.transition_rule(
        rule.rule_id, expected=RuleStatus.PENDING, target=RuleStatus.APPROVED, actor_id="U1", now=T0
    )
    assert await store.undelivered_event_count() == 0
    assert await claim(store, "one", T0) == []


# ---------------------------------------------------------------------- held until the reload result


async def test_a_deploy_event_is_held_until_its_reload_is_recorded(store: Store) -> None:
    rule = await add_rule(store)
    await approve(store, rule.rule_id)
    assert await drain(store, T0) == [(rule.rule_id, EventKind.RULE_APPROVED)]
    other = await add_rule(store)

    deployment_id = await deploy(store, rule, now=T0)
    # a later event of the same rule waits behind the held one; another rule's does not
    rolled_back = NewEvent(kind=EventKind.RULE_ROLLED_BACK, actor_id="U1")
    assert await store.transition_rule(
        rule.rule_id,
        expected=RuleStatus.DEPLOYED,
        target=RuleStatus.ROLLED_BACK,
        actor_id="U1",
        now=T0,
        event=rolled_back,
    )
    await approve(store, other.rule_id)
    assert await drain(store, T0 + timedelta(seconds=1)) == [(other.rule_id, EventKind.RULE_APPROVED)]

    await store.record_reload(deployment_id, ReloadResult("ok"), now=T0 + timedelta(seconds=2))
    events = await claim(store, "one", T0 + timedelta(seconds=2))
    assert [e.kind for e in events] == [EventKind.RULE_DEPLOYED, EventKind.RULE_ROLLED_BACK]
    assert events[0].deployment_id == deployment_id
    deployment = await store.get_deployment(deployment_id)  # what the dispatcher tells along with the event
    assert deployment is not None and deployment.state == "applied" and deployment.reload_status == "ok"
    assert await store.get_deployment(deployment_id + 100) is None
    assert events[0].rule.status is RuleStatus.DEPLOYED and events[0].rule.rollout_percent == 100


async def test_a_held_event_goes_after_the_hold_when_no_reload_is_recorded(store: Store) -> None:
    rule = await add_rule(store)
    await approve(store, rule.rule_id)
    await drain(store, T0)
    await deploy(store, rule, now=T0)
    assert await claim(store, "one", T0 + timedelta(seconds=EVENT_HOLD_SECONDS - 1)) == []
    events = await claim(store, "one", T0 + timedelta(seconds=EVENT_HOLD_SECONDS))
    assert [e.kind for e in events] == [EventKind.RULE_DEPLOYED]


async def test_completing_a_deployment_twice_records_one_event(store: Store) -> None:
    rule = await add_rule(store)
    await approve(store, rule.rule_id)
    await drain(store, T0)
    deployment_id = await deploy(store, rule, now=T0)
    await store.complete_deployment(
        deployment_id, backup_path=None, now=T0, event=NewEvent(kind=EventKind.RULE_DEPLOYED, actor_id="U1")
    )
    assert await store.undelivered_event_count() == 1


# ---------------------------------------------------------------------- claims, order, leases


async def test_a_rules_events_are_delivered_in_order_across_two_holders(
    store: Store, store_backend: StoreBackend
) -> None:
    second = await store_backend.connect()
    first_rule = await add_rule(store, event=created())
    await approve(store, first_rule.rule_id)
    other_rule = await add_rule(store, event=created())

    (a1,) = await claim(store, "one", T0, limit=1)
    assert (a1.rule.rule_id, a1.kind) == (first_rule.rule_id, EventKind.RULE_CREATED)
    # the other process may not take the first rule's approval while its creation is out with "one"
    taken = await claim(second, "two", T0)
    assert [(e.rule.rule_id, e.kind) for e in taken] == [(other_rule.rule_id, EventKind.RULE_CREATED)]
    assert await claim(second, "two", T0) == []

    assert await store.event_delivered(a1.event_id, holder="one", now=T0)
    (a2,) = await claim(second, "two", T0)
    assert (a2.rule.rule_id, a2.kind) == (first_rule.rule_id, EventKind.RULE_APPROVED)


async def test_concurrent_claims_never_hand_out_one_event_twice(store: Store, store_backend: StoreBackend) -> None:
    second = await store_backend.connect()
    for _ in range(6):
        await add_rule(store, event=created())
    batches = await asyncio.gather(
        *(claim(each, name, T0, limit=2) for each, name in ((store, "a"), (second, "b"), (store, "c"), (second, "d")))
    )
    ids = [event.event_id for batch in batches for event in batch]
    assert len(ids) == len(set(ids)) == 6


async def test_an_expired_claim_is_claimed_again_and_the_stale_holder_is_refused(
    store: Store, store_backend: StoreBackend
) -> None:
    second = await store_backend.connect()
    rule = await add_rule(store, event=created())
    (event,) = await claim(store, "one", T0, lease=10)  # "one" dies with it
    assert await claim(second, "two", T0 + timedelta(seconds=5)) == []  # still under its lease

    (again,) = await claim(second, "two", T0 + timedelta(seconds=11))
    assert again.event_id == event.event_id and again.rule.rule_id == rule.rule_id
    assert again.attempts == 2

    assert not await store.event_delivered(event.event_id, holder="one", now=T0 + timedelta(seconds=12))
    assert await store.undelivered_event_count() == 1
    assert await second.event_delivered(event.event_id, holder="two", now=T0 + timedelta(seconds=12))
    assert not await second.event_delivered(event.event_id, holder="two", now=T0 + timedelta(seconds=13))
    assert await store.undelivered_event_count() == 0
    assert await claim(store, "one", T0 + timedelta(hours=1)) == []


# ---------------------------------------------------------------------- the webhook outbox


async def test_a_webhook_enqueued_twice_for_one_event_and_url_is_queued_once(store: Store) -> None:
    urls = ("https://a.example/hook", "https://b.example/hook")
    for _ in range(2):
        await store.enqueue_webhooks(event_id="evt-1", event_type="rule_created", payload={}, urls=urls, now=T0)
    await store.enqueue_webhooks(event_id="evt-2", event_type="rule_created", payload={}, urls=urls[:1], now=T0)
    deliveries = await store.list_webhook_deliveries()
    assert sorted((d["event_id"], d["url"]) for d in deliveries) == [
        ("evt-1", urls[0]),
        ("evt-1", urls[1]),
        ("evt-2", urls[0]),
    ]


async def test_the_webhook_notifier_queues_a_redelivered_outbox_event_once(store: Store) -> None:
    rule = await add_rule(store)
    notifier = WebhookNotifier(store, ("https://a.example/hook",), clock=lambda: T0)
    redelivered = PipelineEvent(kind=EventKind.RULE_CREATED, rule=rule, actor_id="system", event_id=7)
    await notifier.notify(redelivered)
    await notifier.notify(redelivered)
    without_id = redelivered.model_copy(update={"event_id": None})
    await notifier.notify(without_id)
    await notifier.notify(without_id)
    event_ids = [d["event_id"] for d in await store.list_webhook_deliveries()]
    assert event_ids.count("evt-7") == 1
    assert len(event_ids) == 3  # an event without an outbox id is a new webhook event each time
