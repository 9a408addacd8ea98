"""The PostgreSQL store's rules, deployments, review cards, reloads and evaluations against SQLite's: the same
calls, given the same inputs, answer the same models on both backends, and leave the same audit trail, event
outbox and maintained figures; then what only PostgreSQL has to show, changes racing from two pools (two
instances) over one database.

Runs when AUTOTRAIN_TEST_POSTGRES_URL names a PostgreSQL server (each test gets a database of its own there,
tests/postgres_support.py); skipped otherwise, and the end of the run says so (CI never skips: tests/services.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autotrain.evaluation import Evaluation, EvaluationStatus
from autotrain.models import (
    DeployOutcome,
    EventKind,
    FeedbackIn,
    GenerationInfo,
    NewEvent,
    RuleProposal,
    RuleStatus,
    RuleWarning,
)
from autotrain.pagination import Cursor, Order
from autotrain.ports import NewDeployment, ReloadResult, Store
from storage.sqlite import SqliteStore
from tests.postgres_support import fresh_database
from tests.services import service_url

# times with microseconds, some below the millisecond: both backends must keep them alike
T0 = datetime(2025, 6, 2, 10, 0, 0, 123_457, tzinfo=UTC)
MODULE = "fashion_rules.json"
OTHER = "size_rules.json"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
async def postgres_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A new, empty database on the test server, dropped after the test (skipped without a server; CI fails)."""
    server = service_url("PostgreSQL", "AUTOTRAIN_TEST_POSTGRES_URL", request)
    async with fresh_database(server) as url:
        yield url


@pytest.fixture
async def connect(postgres_url: str) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """Opens a PostgresStore on the test's database: each call another pool (another instance)."""
    from storage.postgres import PostgresStore

    opened: list[Store] = []

    async def open_store() -> Store:
        store = PostgresStore(postgres_url)
        await store.open()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = SqliteStore(tmp_path / "compare.db")
    await store.open()
    yield store
    await store.close()


# ---------------------------------------------------------------------- what the stores hold, to compare


async def _rows(store: Store, sql: str) -> list[dict[str, Any]]:
    """Rows of either backend as plain dicts (SQLite's times are text: compared as datetimes)."""
    if isinstance(store, SqliteStore):
        async with store._read() as db:
            cursor = await db.execute(sql)
            return [dict(row) for row in await cursor.fetchall()]
    async with store._read() as db:  # type: ignore[attr-defined]
        return [dict(row) for row in await db.fetch(sql)]


def _time(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


async def trail(store: Store) -> dict[str, Any]:
    """The audit trail, the event outbox and the maintained figures, backend-neutral."""
    audit = [
        {
            "at": _time(row["at"]),
            **{k: row[k] for k in ("actor", "action", "subject_id", "from_state", "to_state")},
            "detail": json.loads(row["detail"]) if row["detail"] else None,
        }
        for row in await _rows(store, "SELECT * FROM audit_log ORDER BY id")
    ]
    events = [
        {
            **{k: row[k] for k in ("id", "kind", "rule_id", "actor_id", "deployment_id", "claimed_by", "attempts")},
            **{k: _time(row[k]) for k in ("created_at", "ready_at", "delivered_at")},
            "rule": json.loads(row["rule_snapshot"]),
        }
        for row in await _rows(store, "SELECT * FROM events ORDER BY id")
    ]
    for event in events:  # the snapshot's times as instants (SQLite's and PostgreSQL's dumps write UTC alike)
        event["rule"] = {k: _time(v) if k.endswith("_at") else v for k, v in event["rule"].items()}
    figures = {row["name"]: int(row["n"]) for row in await _rows(store, "SELECT name, n FROM figures") if row["n"]}
    # what the schema's triggers keep on a rule besides its model (the complaint version, the effect mark)
    hidden = [
        dict(row)
        for row in await _rows(
            store,
            "SELECT rule_id, complaint_version, feedback_mark, recurrences_since, effect_window_days,"
            " effect_before_feedback, effect_before_complaints FROM generated_rules ORDER BY id",
        )
    ]
    clusters = [dict(row) for row in await _rows(store, "SELECT * FROM rule_feedbacks ORDER BY rule_id, feedback_id")]
    return {"audit": audit, "events": events, "figures": figures, "rules": hidden, "clusters": clusters}


# ---------------------------------------------------------------------- one scenario, run on both backends


async def feedback(store: Store, text: str, *, now: datetime, kind: str = "bug", claim: bool = True) -> str:
    created = await store.create_feedback(
        FeedbackIn(
            query="tìm áo khoác cho trời 35 độ", ai_response="Áo khoác nỉ", feedback_text=text, feedback_type=kind
        ),
        user_id="u1",
        source="api",
        actor_id="chatbot",
        now=now,
    )
    if claim:
        assert await store.claim_feedback(created.feedback_id, now=now, lease_seconds=60)
    return created.feedback_id


def proposal(line: str, *, module: str = MODULE, **more: Any) -> RuleProposal:
    return RuleProposal(module_name=module, new_rule=line, reasoning="because", confidence=0.7, **more)


def deployment(rule_id: str, *, before: str, after: str, **more: Any) -> NewDeployment:
    fields: dict[str, Any] = {
        "rule_id": rule_id,
        "module_name": MODULE,
        "deployed_by": "U1",
        "version_before": before,
        "version_after": after,
        "outcome": DeployOutcome.APPENDED,
        "change": {"added": ["- line"], "note": "thêm"},
        "rollout_percent": 100,
    }
    fields.update(more)
    return NewDeployment(**fields)


def evaluation(rule_id: str, *, version: str, status: EvaluationStatus, now: datetime, **more: Any) -> Evaluation:
    return Evaluation(
        rule_id=rule_id,
        rule_version=version,
        status=status,
        summary="replayed",
        at=now,
        tokens=120,
        latency_ms=340,
        cases=2,
        **more,
    )


async def scenario(store: Store) -> list[Any]:
    """Every method of the five roles, in a story: what each call answered, in order."""
    seen: list[Any] = []

    def note(label: str, value: Any) -> None:
        seen.append((label, value))

    created = NewEvent(kind=EventKind.RULE_CREATED, actor_id="system")
    fb = [await feedback(store, f"góp ý số {i}", now=at(i)) for i in range(6)]
    praise = await feedback(store, "tuyệt vời", now=at(6), kind="praise", claim=False)
    note("praise", praise)

    # rules: created, a second generation of the same feedback, one per file
    r1 = await store.create_rule(
        fb[0],
        proposal(
            "- Khi trời nóng: áo thun",
            warnings=[RuleWarning.NEAR_DUPLICATE],
            warning_details={"near_duplicate": "RUL-9 — x"},
        ),
        GenerationInfo(generator="llm", model="m1", input_tokens=10, output_tokens=5, latency_ms=80),
        actor_id="system",
        now=at(10),
        event=created,
    )
    note("r1", r1)
    note(
        "again",
        await store.create_rule(fb[0], proposal("- khác"), GenerationInfo(generator="x"), actor_id="s", now=at(11)),
    )
    r2 = await store.create_rule(
        fb[1], proposal("- r2", old_rule="- cũ"), GenerationInfo(generator="heuristic"), actor_id="system", now=at(12)
    )
    r3 = await store.create_rule(
        fb[2],
        proposal("- r3", module=OTHER),
        GenerationInfo(generator="heuristic"),
        actor_id="system",
        now=at(13),
        event=created,
    )
    note("r2", r2)
    note("r3", r3)

    # clusters
    grouped = NewEvent(kind=EventKind.RULE_GROUPED, actor_id="system")
    note(
        "attach",
        await store.attach_feedback(
            r1.rule_id, [fb[3], "FB-404", fb[4], fb[3], fb[0]], actor_id="system", now=at(14), event=grouped
        ),
    )
    note("attach none", await store.attach_feedback(r1.rule_id, [fb[4]], actor_id="system", now=at(15), event=grouped))
    note("texts", await store.cluster_feedback_texts(r1.rule_id))
    note("texts 1", await store.cluster_feedback_texts(r1.rule_id, limit=1))
    note("for own", await store.get_rule_for_feedback(fb[0]))
    note("for attached", await store.get_rule_for_feedback(fb[4]))
    note("for none", await store.get_rule_for_feedback(fb[5]))
    note("get", await store.get_rule(r1.rule_id))
    note("get missing", await store.get_rule("RUL-404"))

    # edits
    edited = NewEvent(kind=EventKind.RULE_EDITED, actor_id="U2")
    with pytest.raises(ValueError):
        await store.edit_rule(r2.rule_id, changes={"status": "approved"}, actor_id="U2", now=at(16))
    note(
        "edit stale",
        await store.edit_rule(
            r2.rule_id, changes={"new_rule": "- x"}, actor_id="U2", now=at(16), expected_new_rule="- not it"
        ),
    )
    r2_read = await store.get_rule(r2.rule_id)
    note(
        "edit",
        await store.edit_rule(
            r2.rule_id,
            changes={"new_rule": "- r2 sửa", "warnings": ["duplicate"], "warning_details": {"duplicate": "RUL-1 — f"}},
            actor_id="U2",
            now=at(17),
            event=edited,
            expected_new_rule="- r2",
        ),
    )
    note("edit missing", await store.edit_rule("RUL-404", changes={"new_rule": "- x"}, actor_id="U2", now=at(17)))

    # transitions (compare-and-set, and as read before an edit)
    approved = NewEvent(kind=EventKind.RULE_APPROVED, actor_id="U1")
    args: dict[str, Any] = {"expected": RuleStatus.PENDING, "target": RuleStatus.APPROVED, "actor_id": "U1"}
    note("approve as read before edit", await store.transition_rule(r2.rule_id, now=at(18), as_read=r2_read, **args))
    note(
        "approve r1",
        await store.transition_rule(r1.rule_id, now=at(19), event=approved, detail={"via": "slack"}, **args),
    )
    note("approve r1 again", await store.transition_rule(r1.rule_id, now=at(19), event=approved, **args))
    current = await store.get_rule(r2.rule_id)
    note("approve r2", await store.transition_rule(r2.rule_id, now=at(20), as_read=current, **args))
    note(
        "reject r3",
        await store.transition_rule(
            r3.rule_id,
            expected=RuleStatus.PENDING,
            target=RuleStatus.REJECTED,
            actor_id="U3",
            now=at(21),
            reason="sai",
            event=NewEvent(kind=EventKind.RULE_REJECTED, actor_id="U3"),
        ),
    )

    # deployments: begun, refused while pending, completed (twice), reload, commit and push
    deployed = NewEvent(kind=EventKind.RULE_DEPLOYED, actor_id="U1", held=True)
    d1 = await store.begin_deployment(
        deployment(r1.rule_id, before="v1", after="v2"),
        expected=RuleStatus.APPROVED,
        target=RuleStatus.DEPLOYED,
        now=at(22),
    )
    note("d1", d1)
    assert d1 is not None
    note(
        "d1 again",
        await store.begin_deployment(
            deployment(r1.rule_id, before="v1", after="v2"),
            expected=RuleStatus.DEPLOYED,
            target=RuleStatus.DEPLOYED,
            now=at(22),
        ),
    )
    note("pending", await store.pending_deployments())
    note("complete", await store.complete_deployment(d1, backup_path="/b/1", now=at(23), event=deployed))
    note("complete again", await store.complete_deployment(d1, backup_path=None, now=at(24), event=deployed))
    note("after deploy", await store.get_rule(r1.rule_id))
    await store.record_reload(d1, ReloadResult("failed", "HTTP 503"), now=at(25))
    note("reloaded", await store.get_deployment(d1))
    note("without commit", await store.deployments_without_commit(MODULE))
    await store.set_deployment_commit_error(d1, "git: not a repository")
    note("commit error", await store.get_deployment(d1))
    await store.set_deployment_commit(d1, "abc123")
    await store.set_deployment_commit_error(d1, "ignored once committed")
    note("committed", await store.get_deployment(d1))
    note("unpushed", await store.unpushed_deployments())
    await store.set_deployments_push_error([d1, d1, 999], "remote down")
    note("push error", await store.get_deployment(d1))
    await store.set_deployments_pushed([d1], at(26))
    await store.set_deployments_pushed([d1], at(27))  # the first push time stays
    await store.set_deployments_push_error([d1], "ignored once pushed")
    note("pushed", await store.get_deployment(d1))
    note("unpushed after", await store.unpushed_deployments())
    note("missing", await store.get_deployment(999))

    # an aborted deployment puts the rule back
    d2 = await store.begin_deployment(
        deployment(r2.rule_id, before="v2", after="v3", outcome=DeployOutcome.REPLACED),
        expected=RuleStatus.APPROVED,
        target=RuleStatus.DEPLOYED,
        now=at(28),
    )
    assert d2 is not None
    await store.abort_deployment(d2, error="disk full " * 300, actor_id="U1", now=at(29))
    await store.abort_deployment(d2, error="again", actor_id="U1", now=at(29))
    note("aborted", await store.get_deployment(d2))
    note("after abort", await store.get_rule(r2.rule_id))

    # a canary of r2, promoted; a noop deploy that changes no file
    d3 = await store.begin_deployment(
        deployment(r2.rule_id, before="v2", after="v3", outcome=DeployOutcome.CANARY, rollout_percent=10),
        expected=RuleStatus.APPROVED,
        target=RuleStatus.DEPLOYED,
        now=at(30),
    )
    assert d3 is not None
    note("canary", await store.complete_deployment(d3, backup_path=None, now=at(31)))
    note("canary rule", await store.get_rule(r2.rule_id))
    d4 = await store.begin_deployment(
        deployment(r2.rule_id, before="v3", after="v3", outcome=DeployOutcome.PROMOTED),
        expected=RuleStatus.DEPLOYED,
        target=RuleStatus.DEPLOYED,
        now=at(32),
    )
    assert d4 is not None
    note("promoted", await store.complete_deployment(d4, backup_path=None, now=at(33)))
    note("deployed rules", await store.deployed_rules(MODULE))
    note("deployed other", await store.deployed_rules(OTHER))
    note("active r2", await store.active_deployment_for_rule(r2.rule_id))
    note("without commit 2", await store.deployments_without_commit(MODULE))

    # reload retries: the newest change of a file only
    await store.record_reload(d3, ReloadResult("failed", "timeout"), now=at(34))
    await store.schedule_reload_retry(d1, attempts=1, retry_at=at(35))
    await store.schedule_reload_retry(d3, attempts=2, retry_at=at(36))
    note("due early", await store.reloads_due(now=at(34)))
    note("due", await store.reloads_due(now=at(40)))
    note("failing", await store.failing_reloads(min_attempts=2))
    note("failing 3", await store.failing_reloads(min_attempts=3))
    await store.reload_retried(d3, ReloadResult("failed", "still"), attempts=3, retry_at=at(45))
    note("failing after", await store.failing_reloads(min_attempts=3))
    await store.reload_retried(d3, ReloadResult("ok"), attempts=4, retry_at=None)
    note("due after ok", await store.reloads_due(now=at(50)))
    note("retried", await store.get_deployment(d3))

    # a rollback of r1
    rollback = await store.begin_deployment(
        deployment(
            r1.rule_id, before="v3", after="v4", outcome=DeployOutcome.REVERTED, rollback_of=d1, rollout_percent=None
        ),
        expected=RuleStatus.DEPLOYED,
        target=RuleStatus.ROLLED_BACK,
        now=at(51),
    )
    assert rollback is not None
    rolled = NewEvent(kind=EventKind.RULE_ROLLED_BACK, actor_id="U1", held=True)
    note("rollback", await store.complete_deployment(rollback, backup_path="/b/2", now=at(52), event=rolled))
    note("rolled back", await store.get_rule(r1.rule_id))
    note("active r1", await store.active_deployment_for_rule(r1.rule_id))
    await store.record_reload(rollback, ReloadResult("ok"), now=at(53))

    # lists: pages by keyset, filtered, both orders, an offset
    for status in (None, RuleStatus.DEPLOYED, RuleStatus.REJECTED):
        for module in (None, MODULE, OTHER):
            note(
                f"rules {status} {module}",
                await store.list_rules(status=status, module_name=module, limit=10, offset=0),
            )
    page = await store.list_rules(status=None, module_name=None, limit=2, offset=0)
    note("rules page 1", page)
    assert page.next_cursor is not None
    note(
        "rules page 2",
        await store.list_rules(
            status=None, module_name=None, limit=2, offset=0, cursor=Cursor.decode(page.next_cursor)
        ),
    )
    oldest = await store.list_rules(status=None, module_name=None, limit=1, offset=0, order=Order.OLDEST)
    note("rules oldest", oldest)
    assert oldest.next_cursor is not None
    note(
        "rules oldest 2",
        await store.list_rules(
            status=None,
            module_name=None,
            limit=1,
            offset=0,
            cursor=Cursor.decode(oldest.next_cursor),
            order=Order.OLDEST,
        ),
    )
    note("rules offset", await store.list_rules(status=None, module_name=MODULE, limit=1, offset=1))
    deployments = await store.list_deployments(rule_id=None, limit=2, offset=0)
    note("deployments", deployments)
    assert deployments.next_cursor is not None
    note(
        "deployments 2",
        await store.list_deployments(rule_id=None, limit=2, offset=0, cursor=Cursor.decode(deployments.next_cursor)),
    )
    note("deployments r1", await store.list_deployments(rule_id=r1.rule_id, limit=10, offset=0))
    note("deployments offset", await store.list_deployments(rule_id=r2.rule_id, limit=10, offset=1))

    # review cards: claimed once, a failure retried, a stale claim taken over, posted by the current attempt
    r4 = await store.create_rule(
        fb[5], proposal("- r4"), GenerationInfo(generator="heuristic"), actor_id="system", now=at(54)
    )
    note(
        "without card",
        await store.rules_without_card(now=at(55), retry_after_seconds=60, posting_lease_seconds=300, limit=10),
    )
    note("claim", await store.claim_card(r4.rule_id, channel="C1", now=at(55), posting_lease_seconds=300))
    note("claim again", await store.claim_card(r4.rule_id, channel="C1", now=at(56), posting_lease_seconds=300))
    note("claim stale", await store.claim_card(r4.rule_id, channel="C2", now=at(61), posting_lease_seconds=300))
    await store.card_failed(r4.rule_id, attempt=1, error="old attempt", now=at(61))
    await store.card_failed(r4.rule_id, attempt=2, error="slack 500 " * 200, now=at(62))
    note("failed card", await store.get_card(r4.rule_id))
    note(
        "without card early",
        await store.rules_without_card(now=at(62.5), retry_after_seconds=60, posting_lease_seconds=300, limit=10),
    )
    note(
        "without card due",
        await store.rules_without_card(now=at(64), retry_after_seconds=60, posting_lease_seconds=300, limit=10),
    )
    note("claim failed", await store.claim_card(r4.rule_id, channel="C3", now=at(64), posting_lease_seconds=300))
    note("posted old", await store.card_posted(r4.rule_id, attempt=2, channel="C3", message_ts="1.1", now=at(65)))
    note("posted", await store.card_posted(r4.rule_id, attempt=3, channel="C3", message_ts="1.2", now=at(65)))
    note("posted card", await store.get_card(r4.rule_id))
    note("card missing", await store.get_card("RUL-404"))
    note(
        "without card limit",
        await store.rules_without_card(now=at(200), retry_after_seconds=60, posting_lease_seconds=300, limit=1),
    )

    # evaluations: conflicts named on the rule, the newest by version, the totals; what a replay reads
    evaluated = NewEvent(kind=EventKind.RULE_EVALUATED, actor_id="system")
    await store.save_evaluation(evaluation(r4.rule_id, version="a", status=EvaluationStatus.PASSED, now=at(66)))
    await store.save_evaluation(
        evaluation(
            r4.rule_id, version="b", status=EvaluationStatus.FAILED, now=at(67), conflicts=[" - mặc áo khoác ", "- b"]
        ),
        event=evaluated,
    )
    await store.save_evaluation(
        evaluation(
            r4.rule_id, version="b", status=EvaluationStatus.ERROR, now=at(68), conflicts=["- c"], new_rule="- r4'"
        ),
    )
    note("conflicted", await store.get_rule(r4.rule_id))
    note("latest", await store.latest_evaluation(r4.rule_id))
    note("latest a", await store.latest_evaluation(r4.rule_id, "a"))
    note("latest none", await store.latest_evaluation(r4.rule_id, "zzz"))
    note("totals", await store.evaluation_totals())
    note("group", await store.group_feedback(r1.rule_id, limit=10))
    note("group 2", await store.group_feedback(r1.rule_id, limit=2))
    note("group none", await store.group_feedback("RUL-404", limit=2))
    note("fixes", await store.earlier_fixes(MODULE, exclude=r4.rule_id, limit=5))
    note("fixes excluded", await store.earlier_fixes(MODULE, exclude=r2.rule_id, limit=5))
    note("praised", await store.praised_feedback(limit=5))
    await store.record_evaluation_gate(r4.rule_id, actor_id="U1", status="failed", overridden=True, now=at(69))
    await store.record_evaluation_gate(r4.rule_id, actor_id="U1", status="error", overridden=False, now=at(70))
    note("trail", await trail(store))
    return seen


async def test_every_call_answers_on_postgresql_what_it_answers_on_sqlite(
    sqlite_store: Store, connect: Callable[[], Awaitable[Store]]
) -> None:
    expected = await scenario(sqlite_store)
    found = await scenario(await connect())
    assert [label for label, _ in found] == [label for label, _ in expected]
    for (label, want), (_, got) in zip(expected, found, strict=True):
        if label == "trail":
            for part in ("audit", "events", "figures", "rules", "clusters"):
                assert got[part] == want[part], f"{part} differ"
        else:
            assert got == want, f"{label}: PostgreSQL answered {got!r}, SQLite {want!r}"


# ---------------------------------------------------------------------- PostgreSQL's own: two instances racing


async def _pending_rule(store: Store, line: str, *, minutes: float = 0) -> str:
    feedback_id = await feedback(store, f"góp ý {line}", now=at(minutes))
    rule = await store.create_rule(
        feedback_id, proposal(line), GenerationInfo(generator="t"), actor_id="s", now=at(minutes)
    )
    return rule.rule_id


async def test_two_instances_deploying_one_rule_begin_one_deployment(connect: Callable[[], Awaitable[Store]]) -> None:
    one, two = await connect(), await connect()
    rule_ids = [await _pending_rule(one, f"- dòng {i}", minutes=i) for i in range(5)]
    args: dict[str, Any] = {
        "expected": RuleStatus.PENDING,
        "target": RuleStatus.APPROVED,
        "actor_id": "U1",
        "now": at(10),
    }
    for rule_id in rule_ids:
        approvals = await asyncio.gather(*(s.transition_rule(rule_id, **args) for s in (one, two, one, two)))
        assert sum(a is not None for a in approvals) == 1

    async def begin(store: Store, rule_id: str) -> int | None:
        return await store.begin_deployment(
            deployment(rule_id, before="v1", after="v2"),
            expected=RuleStatus.APPROVED,
            target=RuleStatus.DEPLOYED,
            now=at(11),
        )

    begun = await asyncio.gather(*(begin(s, r) for r in rule_ids for s in (one, two, two, one)))
    for i, rule_id in enumerate(rule_ids):
        ids = [d for d in begun[i * 4 : (i + 1) * 4] if d is not None]
        assert len(ids) == 1, f"{rule_id}: {begun[i * 4 : (i + 1) * 4]}"
        # completed from both instances at once (even rules), or aborted from both (odd): once either way
        if i % 2 == 0:
            done = NewEvent(kind=EventKind.RULE_DEPLOYED, actor_id="U1")
            await asyncio.gather(
                *(s.complete_deployment(ids[0], backup_path=None, now=at(12), event=done) for s in (one, two))
            )
            events = await _rows(one, f"SELECT * FROM events WHERE deployment_id = {ids[0]}")
            assert len(events) == 1
            assert (await one.get_rule(rule_id)).status is RuleStatus.DEPLOYED  # type: ignore[union-attr]
        else:
            await asyncio.gather(
                *(s.abort_deployment(ids[0], error="x", actor_id="U1", now=at(12)) for s in (one, two))
            )
            failed = await _rows(
                one, f"SELECT * FROM audit_log WHERE action = 'deploy_failed' AND subject_id = '{rule_id}'"
            )
            assert len(failed) == 1 and await one.get_deployment(ids[0]) is None
            rule = await one.get_rule(rule_id)
            assert rule is not None and rule.status is RuleStatus.APPROVED and rule.deployed_at is None
    assert await one.pending_deployments() == []


async def test_a_rollback_begun_while_a_promotion_is_pending_is_refused(
    connect: Callable[[], Awaitable[Store]], postgres_url: str
) -> None:
    """A promotion and a rollback of one deployed rule, both waiting on its row (a third connection holds it): the
    promotion goes first, the rollback then finds its pending row and is refused (never a unique-constraint
    error on the one pending deployment of a rule)."""
    import asyncpg

    one, two = await connect(), await connect()
    rule_id = await _pending_rule(one, "- d")
    approve = {"expected": RuleStatus.PENDING, "target": RuleStatus.APPROVED, "actor_id": "U1", "now": at(1)}
    assert await one.transition_rule(rule_id, **approve) is not None
    canary = await one.begin_deployment(
        deployment(rule_id, before="v1", after="v2", outcome=DeployOutcome.CANARY, rollout_percent=10),
        expected=RuleStatus.APPROVED,
        target=RuleStatus.DEPLOYED,
        now=at(2),
    )
    assert canary is not None
    await one.complete_deployment(canary, backup_path=None, now=at(2))
    holder = await asyncpg.connect(postgres_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM generated_rules WHERE rule_id = $1 FOR UPDATE", rule_id)
            promote = asyncio.create_task(
                one.begin_deployment(
                    deployment(rule_id, before="v2", after="v3", outcome=DeployOutcome.PROMOTED),
                    expected=RuleStatus.DEPLOYED,
                    target=RuleStatus.DEPLOYED,
                    now=at(3),
                )
            )
            await asyncio.sleep(0.3)  # the promotion waits on the row first
            rollback = asyncio.create_task(
                two.begin_deployment(
                    deployment(
                        rule_id,
                        before="v2",
                        after="v1",
                        outcome=DeployOutcome.REVERTED,
                        rollback_of=canary,
                        rollout_percent=None,
                    ),
                    expected=RuleStatus.DEPLOYED,
                    target=RuleStatus.ROLLED_BACK,
                    now=at(3),
                )
            )
            await asyncio.sleep(0.3)
            assert not promote.done() and not rollback.done()
    finally:
        await holder.close()
    promoted = await promote
    assert promoted is not None
    assert await rollback is None
    assert [d.deployment_id for d in await two.pending_deployments()] == [promoted]


async def test_two_instances_clustering_and_rejecting_leave_no_feedback_behind(
    connect: Callable[[], Awaitable[Store]],
) -> None:
    """A rejection racing an attachment: the attached feedback is rejected with the rule, or never attached."""
    one, two = await connect(), await connect()
    for round_ in range(5):
        rule_id = await _pending_rule(one, f"- r{round_}", minutes=round_)
        extra = [await feedback(one, f"cùng ý {round_}.{i}", now=at(round_), claim=False) for i in range(4)]
        # no retry: the rows are locked in one order, so the two never deadlock (no StoreBusy)
        attached, rejected = await asyncio.gather(
            one.attach_feedback(rule_id, extra, actor_id="s", now=at(round_ + 1)),
            two.transition_rule(
                rule_id,
                expected=RuleStatus.PENDING,
                target=RuleStatus.REJECTED,
                actor_id="U1",
                now=at(round_ + 1),
                reason="no",
            ),
        )
        assert rejected is not None
        for feedback_id in extra:
            status = (await one.get_feedback(feedback_id)).status.value  # type: ignore[union-attr]
            assert status == ("rejected" if feedback_id in attached else "pending"), (feedback_id, attached)


async def test_two_instances_editing_one_line_keep_the_first_edit(connect: Callable[[], Awaitable[Store]]) -> None:
    one, two = await connect(), await connect()
    rule_id = await _pending_rule(one, "- gốc")
    edits = await asyncio.gather(
        *(
            store.edit_rule(
                rule_id, changes={"new_rule": f"- sửa {i}"}, actor_id="U", now=at(1), expected_new_rule="- gốc"
            )
            for i, store in enumerate((one, two, one, two))
        )
    )
    assert sum(e is not None for e in edits) == 1
    winner = next(e for e in edits if e is not None)
    assert (await two.get_rule(rule_id)) == winner


async def test_two_instances_claiming_one_card_post_it_once(connect: Callable[[], Awaitable[Store]]) -> None:
    one, two = await connect(), await connect()
    rule_ids = [await _pending_rule(one, f"- c{i}", minutes=i) for i in range(5)]
    for rule_id in rule_ids:
        claims = await asyncio.gather(
            *(s.claim_card(rule_id, channel="C", now=at(10), posting_lease_seconds=300) for s in (one, two, one, two))
        )
        assert sorted(claims, key=lambda c: c or 0) == [None, None, None, 1]


async def test_concurrent_creations_of_one_rule_make_one(connect: Callable[[], Awaitable[Store]]) -> None:
    one, two = await connect(), await connect()
    feedback_id = await feedback(one, "hai lần", now=T0)
    made = await asyncio.gather(
        *(
            s.create_rule(feedback_id, proposal(f"- {i}"), GenerationInfo(generator="t"), actor_id="s", now=at(1))
            for i, s in enumerate((one, two, one, two))
        )
    )
    assert len({rule.rule_id for rule in made}) == 1
    assert len({rule.new_rule for rule in made}) == 1
    assert (await one.list_rules(status=None, module_name=None, limit=10, offset=0)).total == 1


async def test_many_changes_from_two_instances_never_deadlock(connect: Callable[[], Awaitable[Store]]) -> None:
    """Rules created, approved, rejected (their feedback closed), clustered, deployed, completed and aborted at
    once from two instances: every transaction takes its rows, then its counters, then the audit row in one
    order, so none waits on another in a circle (PostgreSQL would fail one after a second: StoreBusy)."""
    one, two = await connect(), await connect()
    stores = (one, two)
    n = 40
    feedback_ids = [await feedback(one, f"góp ý {i}", now=at(0), kind=("bug", "suggestion")[i % 2]) for i in range(n)]
    loose = [
        await feedback(one, f"lẻ {i}", now=at(0), kind=("suggestion", "bug")[i % 2], claim=False) for i in range(8)
    ]
    info = GenerationInfo(generator="t")
    rules = await asyncio.gather(
        *(
            stores[i % 2].create_rule(feedback_ids[i], proposal(f"- l{i}"), info, actor_id="s", now=at(1))
            for i in range(n // 2)
        )
    )

    async def rule_change(i: int) -> Any:
        store, rule_id = stores[i % 2], rules[i].rule_id
        if i % 4 == 0:
            return await store.attach_feedback(rule_id, loose[i // 4 % 8 :: 3], actor_id="s", now=at(2))
        target = RuleStatus.REJECTED if i % 4 == 1 else RuleStatus.APPROVED
        return await store.transition_rule(
            rule_id, expected=RuleStatus.PENDING, target=target, actor_id="U", now=at(2), reason="x"
        )

    changes = [rule_change(i) for i in range(n // 2)]
    changes += [
        stores[i % 2].create_rule(feedback_ids[i], proposal(f"- l{i}"), info, actor_id="s", now=at(2))
        for i in range(n // 2, n)
    ]
    await asyncio.gather(*changes)

    async def deploy(store: Store, rule_id: str, abort: bool) -> None:
        begun = await store.begin_deployment(
            deployment(rule_id, before="a", after="b"),
            expected=RuleStatus.APPROVED,
            target=RuleStatus.DEPLOYED,
            now=at(3),
        )
        assert begun is not None
        if abort:
            await store.abort_deployment(begun, error="x", actor_id="U", now=at(4))
        else:
            await store.complete_deployment(begun, backup_path=None, now=at(4))
            await store.record_reload(begun, ReloadResult("failed", "503"), now=at(4))

    approved = (await one.list_rules(status=RuleStatus.APPROVED, module_name=None, limit=100, offset=0)).items
    assert approved
    await asyncio.gather(*(deploy(stores[i % 2], rule.rule_id, i % 3 == 0) for i, rule in enumerate(approved)))
    figures = (await one.list_rules(status=None, module_name=None, limit=100, offset=0)).total
    assert figures == n
