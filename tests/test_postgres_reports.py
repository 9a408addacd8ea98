"""The PostgreSQL store's reports, alert state, leases, digest runs, generation log and outboxes answer what
the SQLite store answers: both are given the same inputs, through the store's own methods, and their answers
compared; then what only several instances on one PostgreSQL exercise (concurrent leases, digest claims,
webhook and event claims).

Runs when AUTOTRAIN_TEST_POSTGRES_URL names a PostgreSQL server (each test gets a database of its own there,
tests/postgres_support.py); skipped otherwise, and the end of the run says so (CI never skips: tests/services.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from autotrain.models import (
    DeployOutcome,
    EventKind,
    FeedbackIn,
    FeedbackStatus,
    GenerationInfo,
    NewEvent,
    RuleProposal,
    RuleStatus,
)
from autotrain.monitoring import AlertState
from autotrain.pagination import Cursor
from autotrain.ports import NewDeployment, Store
from storage.sqlite import SqliteStore
from tests.postgres_support import fresh_database
from tests.services import service_url

T = TypeVar("T")
# times with microseconds, some below the millisecond: both backends must round them alike
T0 = datetime(2025, 6, 2, 10, 0, 0, 123_457, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
async def postgres_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A new, empty database on the test server, dropped after the test (skipped without a server; CI fails)."""
    server = service_url("PostgreSQL", "AUTOTRAIN_TEST_POSTGRES_URL", request)
    async with fresh_database(server) as url:
        yield url


@pytest.fixture
async def connect(postgres_url: str) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """Opens another PostgresStore on the test's database (another instance)."""
    from storage.postgres import PostgresStore

    opened: list[Store] = []

    async def open_one() -> Store:
        store = PostgresStore(postgres_url)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def pair(tmp_path: Path, connect: Callable[[], Awaitable[Store]]) -> AsyncIterator[tuple[Store, Store]]:
    """(SQLite, PostgreSQL), both fresh."""
    sqlite = SqliteStore(tmp_path / "reports.db")
    await sqlite.open()
    try:
        yield sqlite, await connect()
    finally:
        await sqlite.close()


async def both(pair: tuple[Store, Store], call: Callable[[Store], Awaitable[T]]) -> T:
    """The same call on both stores; their answers must be equal (the PostgreSQL one is returned)."""
    on_sqlite, on_postgres = await call(pair[0]), await call(pair[1])
    assert on_postgres == on_sqlite
    return on_postgres


# ---------------------------------------------------------------------- a history, told to both stores


def feedback_in(text: str, feedback_type: str) -> FeedbackIn:
    return FeedbackIn(query="tìm áo khoác", ai_response="áo nỉ", feedback_text=text, feedback_type=feedback_type)


async def history(store: Store) -> dict[str, Any]:
    """Feedback of every type, rules approved / rejected / deployed (one a canary, one rolled back), every
    generation outcome, a review card, failed commits and pushes; at times with microseconds."""
    at = [T0 + timedelta(minutes=7 * i, microseconds=211 * i) for i in range(12)]
    ids = []
    for i, (text, kind) in enumerate(
        [
            ("Trời nóng mà gợi ý áo len", "bug"),
            ("Nên hỏi chiều cao trước", "suggestion"),
            ("Tư vấn rất hay", "praise"),
            ("Gợi ý sai size", "bug"),
            ("Thiếu màu khác", "suggestion"),
            ("Không hiểu câu hỏi", "bug"),
        ]
    ):
        feedback = await store.create_feedback(
            feedback_in(text, kind), user_id=f"u{i % 3}", source="api", actor_id="chatbot", now=at[i]
        )
        ids.append(feedback.feedback_id)

    info = GenerationInfo(generator="claude", model="m", input_tokens=120, output_tokens=33, latency_ms=901)
    rules = []
    for i in (0, 1, 3):
        assert await store.claim_feedback(ids[i], now=at[6], lease_seconds=60)
        proposal = RuleProposal(
            module_name="fashion_rules.json" if i != 1 else "size_rules.json",
            new_rule=f"- rule {i}",
            reasoning="why",
            confidence=0.75,
        )
        rule = await store.create_rule(
            ids[i], proposal, info, actor_id="system", now=at[6] + timedelta(microseconds=i), event=None
        )
        rules.append(rule)

    # a failed generation (released) and a declined one
    assert await store.claim_feedback(ids[4], now=at[6], lease_seconds=60)
    await store.record_generation(ids[4], info.model_copy(update={"latency_ms": 77}), outcome="failed", now=at[7])
    await store.release_feedback(ids[4], error="timeout", actor_id="system", now=at[7])
    assert await store.claim_feedback(ids[5], now=at[7], lease_seconds=60)
    await store.record_generation(
        ids[5], GenerationInfo(generator="claude", latency_ms=None), outcome="declined", now=at[8]
    )
    assert await store.finish_feedback_without_rule(
        ids[5], reason="not actionable", actor_id="system", now=at[8], status=FeedbackStatus.REJECTED
    )

    # times between milliseconds: SQLite counts each rounded to its millisecond (…724 → 125 ms, …423 → 124 ms)
    approve_at = [
        rules[0].created_at + timedelta(minutes=14, microseconds=-300),
        rules[1].created_at + timedelta(minutes=20, microseconds=250),
    ]
    for rule, now in zip(rules[:2], approve_at, strict=True):
        assert await store.transition_rule(
            rule.rule_id, expected=RuleStatus.PENDING, target=RuleStatus.APPROVED, actor_id="U1", now=now
        )
    assert await store.transition_rule(
        rules[2].rule_id,
        expected=RuleStatus.PENDING,
        target=RuleStatus.REJECTED,
        actor_id="U2",
        now=at[9],
        reason="too broad",
    )
    attempt = await store.claim_card(rules[0].rule_id, channel="C1", now=at[6], posting_lease_seconds=30)
    assert attempt is not None
    assert await store.card_posted(rules[0].rule_id, attempt=attempt, channel="C1", message_ts="171.5", now=at[6])

    deployments = []
    for rule, percent, outcome in ((rules[0], 100, DeployOutcome.APPENDED), (rules[1], 10, DeployOutcome.CANARY)):
        deployment_id = await store.begin_deployment(
            NewDeployment(
                rule_id=rule.rule_id,
                module_name=rule.module_name,
                deployed_by="U1",
                version_before="v1",
                version_after="v2",
                outcome=outcome,
                change={"line": rule.new_rule},
                rollout_percent=percent,
            ),
            expected=RuleStatus.APPROVED,
            target=RuleStatus.DEPLOYED,
            now=at[10],
        )
        assert deployment_id is not None
        await store.complete_deployment(deployment_id, backup_path=None, now=at[10])
        deployments.append(deployment_id)
    await store.set_deployment_commit_error(deployments[0], "git: nothing to commit")
    await store.set_deployment_commit(deployments[1], "abc123")
    await store.set_deployments_push_error([deployments[1]], "remote refused")

    rollback = await store.begin_deployment(
        NewDeployment(
            rule_id=rules[0].rule_id,
            module_name=rules[0].module_name,
            deployed_by="U2",
            version_before="v2",
            version_after="v3",
            outcome=DeployOutcome.REVERTED,
            change={},
            rollback_of=deployments[0],
        ),
        expected=RuleStatus.DEPLOYED,
        target=RuleStatus.ROLLED_BACK,
        now=at[11],
    )
    assert rollback is not None
    await store.complete_deployment(rollback, backup_path=None, now=at[11])
    await store.set_deployment_commit_error(rollback, "git: locked")
    return {"at": at, "feedback_ids": ids, "rules": [r.rule_id for r in rules], "deployments": deployments}


async def test_counts_metrics_digest_and_generation_totals_are_the_same(pair: tuple[Store, Store]) -> None:
    told = await both(pair, history)
    at = told["at"]

    counts = await both(pair, lambda s: s.counts(since=at[0]))
    assert counts.deployments_total == 2 and counts.rollbacks_total == 1 and counts.uncommitted_deployments == 2
    assert counts.last_commit_error == "git: locked"
    await both(pair, lambda s: s.counts(since=at[11]))

    for now in (at[9], at[11], at[11] + 3 * HOUR):
        metrics = await both(
            pair,
            lambda s, now=now: s.metrics_data(
                now=now, error_window_start=now - HOUR, day_start=at[0], approval_window_start=at[0]
            ),
        )
    assert metrics.approval_seconds and metrics.unpushed_deployments == 1
    # creation to approval in whole milliseconds, as SQLite's julianday counts them
    assert sorted(metrics.approval_seconds) == [839.999, 1200.0]  # 839.9997 s exactly

    for start, end in ((at[0], at[11] + HOUR), (at[3], at[10]), (at[10], at[11]), (at[11] + HOUR, at[11] + 2 * HOUR)):
        await both(pair, lambda s, start=start, end=end: s.digest_data(start=start, end=end))
    digest = await both(pair, lambda s: s.digest_data(start=at[0], end=at[11] + HOUR))
    assert [r.rule_id for r in digest.deployed] == told["rules"][:2] and digest.canaries
    assert digest.deployed[0].channel == "C1" and digest.deployed[0].rolled_back

    totals = await both(pair, lambda s: s.generation_totals())
    assert (totals.attempts, totals.failed, totals.declined) == (5, 1, 1)
    for since in (at[0], at[7], at[8] + timedelta(microseconds=1), at[11]):
        await both(pair, lambda s, since=since: s.generation_totals(since=since))


async def test_the_audit_log_pages_alike(pair: tuple[Store, Store]) -> None:
    told = await both(pair, history)
    for subject in (None, told["rules"][0], told["feedback_ids"][4], "nobody"):
        for limit, offset in ((3, 0), (3, 2), (100, 0)):
            page = await both(
                pair,
                lambda s, subject=subject, limit=limit, offset=offset: s.list_audit(
                    subject_id=subject, limit=limit, offset=offset
                ),
            )
        # and by cursor, to the end
        cursor, seen = None, []
        while True:
            page = await both(
                pair,
                lambda s, subject=subject, cursor=cursor: s.list_audit(
                    subject_id=subject, limit=4, offset=0, cursor=Cursor.decode(cursor) if cursor else None
                ),
            )
            seen += [entry.audit_id for entry in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == sorted(seen) and len(seen) == page.total


# ---------------------------------------------------------------------- alert state, leases, digest runs


async def test_alert_state_leases_and_digest_runs_answer_alike(pair: tuple[Store, Store]) -> None:
    async def story(store: Store) -> list[Any]:
        answers: list[Any] = [await store.get_alert_state("pending")]
        fired = AlertState(name="pending", active=True, since=T0, last_notified_at=T0, last_value=0.1, version=1)
        answers.append(await store.save_alert_state(fired, expected_version=0))
        answers.append(await store.save_alert_state(fired, expected_version=0))  # a second first save loses
        answers.append(await store.get_alert_state("pending"))
        resolved = fired.model_copy(update={"active": False, "since": None, "last_value": 2.5e-7, "version": 2})
        answers.append(await store.save_alert_state(resolved, expected_version=2))  # stale version
        answers.append(await store.save_alert_state(resolved, expected_version=1))
        answers.append(await store.get_alert_state("pending"))

        for holder, seconds in (("a", 0), ("b", 0), ("a", 30), ("b", 89), ("b", 91), ("a", 100)):
            now = T0 + timedelta(seconds=seconds)
            answers.append(await store.acquire_lease("monitor", holder=holder, now=now, ttl_seconds=60))
        answers.append(await store.acquire_lease("digest", holder="a", now=T0, ttl_seconds=60))

        answers += [await store.claim_digest(key, now=T0) for key in ("2025-06-02", "2025-06-02", "2025-06-03")]
        return answers

    answers = await both(pair, story)
    assert answers[1:3] == [True, False] and answers[4:6] == [False, True]
    assert answers[7:13] == [True, False, True, False, True, False] and answers[13] is True
    assert answers[14:] == [True, False, True]
    assert answers[6].last_value == 2.5e-7  # double precision, as SQLite's REAL


async def test_one_lease_holder_and_one_digest_among_instances(connect: Callable[[], Awaitable[Store]]) -> None:
    stores = [await connect() for _ in range(4)]
    for round_ in range(5):
        now = T0 + timedelta(minutes=2 * round_)  # each round after the last lease expired
        won = await asyncio.gather(
            *(
                s.acquire_lease("monitor", holder=f"i{i}-{round_}", now=now, ttl_seconds=60)
                for i, s in enumerate(stores)
            )
        )
        assert sum(won) == 1
        posted = await asyncio.gather(*(s.claim_digest(f"day-{round_}", now=now) for s in stores * 3))
        assert sum(posted) == 1
    states = await asyncio.gather(
        *(s.save_alert_state(AlertState(name="errors", active=True, version=1), expected_version=0) for s in stores * 2)
    )
    assert sum(states) == 1


# ---------------------------------------------------------------------- webhook outbox


async def test_webhook_deliveries_answer_alike(pair: tuple[Store, Store]) -> None:
    urls = ("https://a.example/hook", "https://b.example/hook")

    async def story(store: Store) -> list[Any]:
        answers: list[Any] = []
        for event_id in ("evt-1", "evt-1", "evt-2"):
            await store.enqueue_webhooks(
                event_id=event_id, event_type="rule_created", payload={"x": "ắ", "a": 1}, urls=urls, now=T0
            )
        await store.enqueue_webhooks(event_id="evt-3", event_type="rule_created", payload={}, urls=(), now=T0)
        answers.append(await store.due_webhooks(now=T0, limit=3, lease_seconds=60))
        answers.append(await store.due_webhooks(now=T0 + timedelta(seconds=1), lease_seconds=60))  # the 4th
        answers.append(await store.due_webhooks(now=T0 + timedelta(seconds=2), lease_seconds=60))  # none
        first, second = answers[0][0]["id"], answers[0][1]["id"]
        now = T0 + timedelta(seconds=3)
        await store.webhook_attempted(first, delivered=True, status=200, error=None, next_attempt_at=None, now=now)
        await store.webhook_attempted(
            second, delivered=False, status=503, error="HTTP 503", next_attempt_at=now + timedelta(seconds=2), now=now
        )
        await store.webhook_attempted(
            answers[0][2]["id"], delivered=False, status=None, error="x" * 2000, next_attempt_at=None, now=now
        )
        answers.append(await store.due_webhooks(now=now + timedelta(seconds=2), lease_seconds=60))  # the retry
        answers.append(await store.due_webhooks(now=T0 + timedelta(seconds=61), lease_seconds=60))  # lease expired
        answers.append(await store.list_webhook_deliveries())
        answers.append(await store.list_webhook_deliveries(limit=2))
        return answers

    answers = await both(pair, story)
    assert [len(a) for a in answers[:5]] == [3, 1, 0, 1, 1]
    log = answers[5]
    assert [d["state"] for d in reversed(log)] == ["delivered", "pending", "failed", "pending"]
    assert isinstance(log[0]["created_at"], str) and datetime.fromisoformat(log[0]["created_at"]) == T0


async def test_instances_claiming_webhooks_together_never_share_one(connect: Callable[[], Awaitable[Store]]) -> None:
    stores = [await connect() for _ in range(4)]
    urls = tuple(f"https://h{i}.example/hook" for i in range(10))
    for n in range(5):
        await stores[0].enqueue_webhooks(event_id=f"evt-{n}", event_type="t", payload={}, urls=urls, now=T0)
    claimed = await asyncio.gather(*(s.due_webhooks(now=T0, limit=7, lease_seconds=60) for s in stores * 3))
    ids = [d["id"] for batch in claimed for d in batch]
    assert len(ids) == len(set(ids)) == 50


# ---------------------------------------------------------------------- event outbox


async def rules_with_events(store: Store, n: int) -> list[str]:
    """n rules, each with a created, an approved and a rejected event (in that order)."""
    rule_ids = []
    for i in range(n):
        feedback = await store.create_feedback(
            feedback_in(f"phản hồi {i}", "bug"), user_id="u1", source="api", actor_id="chatbot", now=T0
        )
        assert await store.claim_feedback(feedback.feedback_id, now=T0, lease_seconds=60)
        rule = await store.create_rule(
            feedback.feedback_id,
            RuleProposal(module_name="fashion_rules.json", new_rule=f"- r{i}", reasoning="w", confidence=0.5),
            GenerationInfo(generator="test"),
            actor_id="system",
            now=T0,
            event=NewEvent(kind=EventKind.RULE_CREATED, actor_id="system"),
        )
        for expected, target, kind in (
            (RuleStatus.PENDING, RuleStatus.APPROVED, EventKind.RULE_APPROVED),
            (RuleStatus.APPROVED, RuleStatus.REJECTED, EventKind.RULE_REJECTED),
        ):
            assert await store.transition_rule(
                rule.rule_id,
                expected=expected,
                target=target,
                actor_id="U1",
                now=T0,
                event=NewEvent(kind=kind, actor_id="U1"),
            )
        rule_ids.append(rule.rule_id)
    return rule_ids


async def test_event_claims_answer_alike(pair: tuple[Store, Store]) -> None:
    async def story(store: Store) -> list[Any]:
        await rules_with_events(store, 3)
        answers: list[Any] = [await store.undelivered_event_count()]
        one = await store.claim_events(holder="one", now=T0, lease_seconds=60, limit=4)
        two = await store.claim_events(holder="two", now=T0, lease_seconds=120, limit=50)
        answers += [one, two]
        answers.append([await store.event_delivered(e.event_id, holder="one", now=T0) for e in one[:2]])
        answers.append(await store.event_delivered(one[2].event_id, holder="two", now=T0))  # not its claim
        # the lease of `one` expires: its undelivered claims (and what waited on them) are claimed again
        later = T0 + timedelta(seconds=61)
        answers.append(await store.claim_events(holder="three", now=later, lease_seconds=60, limit=50))
        answers.append(await store.event_delivered(one[2].event_id, holder="one", now=later))  # taken over
        answers.append(await store.undelivered_event_count())
        return answers

    answers = await both(pair, story)
    assert answers[0] == 9
    assert [e.event_id for e in answers[1]] == [1, 2, 3, 4]
    assert [e.event_id for e in answers[2]] == [7, 8, 9]  # rule 2 waits behind event 4, claimed by `one`
    assert answers[3] == [True, True] and answers[4] is False and answers[6] is False
    assert [e.event_id for e in answers[5]] == [3, 4, 5, 6] and answers[5][0].attempts == 2
    assert answers[7] == 7


async def test_instances_claiming_events_together_deliver_each_once_in_order(
    connect: Callable[[], Awaitable[Store]],
) -> None:
    """Dispatchers of several instances, claiming batches of different sizes at once: each event is handed out
    once, and never while an earlier event of its rule is undelivered outside the batch."""
    stores = [await connect() for _ in range(4)]
    rule_ids = await rules_with_events(stores[0], 8)
    delivered: set[int] = set()
    batches: list[tuple[list[tuple[str, int]], frozenset[int]]] = []  # each claim, and what was delivered then

    async def dispatcher(store: Store, name: str, limit: int) -> None:
        for _ in range(40):
            events = await store.claim_events(holder=name, now=T0, lease_seconds=60, limit=limit)
            batches.append(([(e.rule.rule_id, e.event_id) for e in events], frozenset(delivered)))
            for event in events:
                assert await store.event_delivered(event.event_id, holder=name, now=T0)
                delivered.add(event.event_id)
            await asyncio.sleep(0)

    await asyncio.gather(*(dispatcher(s, f"d{i}", 1 + i % 5) for i, s in enumerate(stores * 2)))
    claimed = [event for batch, _ in batches for event in batch]
    assert len(claimed) == len(set(claimed)) == len(delivered) == 3 * len(rule_ids)
    for batch, delivered_then in batches:
        for rule_id, event_id in batch:
            earlier = {i for r, i in claimed if r == rule_id and i < event_id}
            assert earlier <= delivered_then | {i for _, i in batch}, (rule_id, event_id)
    assert await stores[0].undelivered_event_count() == 0


async def test_a_rules_events_commit_in_id_order_across_instances(connect: Callable[[], Awaitable[Store]]) -> None:
    """Instances changing one rule at once: whichever commits later drew the higher event id, so a dispatcher
    never sees (and delivers) a rule's later event before its earlier one."""
    first, second = await connect(), await connect()
    feedback = await first.create_feedback(
        feedback_in("phản hồi", "bug"), user_id="u1", source="api", actor_id="chatbot", now=T0
    )
    assert await first.claim_feedback(feedback.feedback_id, now=T0, lease_seconds=60)
    rule = await first.create_rule(
        feedback.feedback_id,
        RuleProposal(module_name="fashion_rules.json", new_rule="- r", reasoning="w", confidence=0.5),
        GenerationInfo(generator="test"),
        actor_id="system",
        now=T0,
        event=NewEvent(kind=EventKind.RULE_CREATED, actor_id="system"),
    )
    edits = 12
    delivered: list[int] = []

    async def edit(store: Store, n: int) -> None:
        edited = await store.edit_rule(
            rule.rule_id,
            changes={"new_rule": f"- r{n}"},
            actor_id=f"U{n}",
            now=T0,
            event=NewEvent(kind=EventKind.RULE_EDITED, actor_id=f"U{n}"),
        )
        assert edited is not None

    async def dispatcher() -> None:
        for _ in range(2000):
            for event in await first.claim_events(holder="d", now=T0, lease_seconds=60, limit=50):
                delivered.append(event.event_id)
                assert await first.event_delivered(event.event_id, holder="d", now=T0)
            if len(delivered) == edits + 1:
                return
            await asyncio.sleep(0)

    await asyncio.gather(dispatcher(), *(edit(s, n) for n, s in enumerate([first, second] * (edits // 2))))
    assert len(delivered) == edits + 1 and delivered == sorted(delivered)
