"""The store: its contract (any backend, through the `store` fixture: compare-and-set under concurrency,
exclusive claims), and what is SQLite's own (schema and migrations, pragmas, a newer database refused)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autotrain.models import FeedbackIn, GenerationInfo, NewEvent, Rule, RuleProposal, RuleStatus
from autotrain.ports import Store
from storage.migrations import MIGRATIONS, SCHEMA_VERSION
from storage.sqlite import SqliteStore
from storage.sqlite.connection import statements
from tests.conftest import WEATHER_FEEDBACK
from tests.stores import StoreBackend

T0 = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)


async def add_feedback(store: Store, *, now: datetime = T0, text: str | None = None) -> str:
    payload = {**WEATHER_FEEDBACK, **({"feedback_text": text} if text else {})}
    feedback = await store.create_feedback(
        FeedbackIn(**payload), user_id="u1", source="api", actor_id="chatbot", now=now
    )
    return feedback.feedback_id


async def add_rule(store: Store, *, now: datetime = T0, event: NewEvent | None = None) -> Rule:
    feedback_id = await add_feedback(store, now=now)
    assert await store.claim_feedback(feedback_id, now=now, lease_seconds=60)
    return await store.create_rule(
        feedback_id,
        RuleProposal(module_name="fashion_rules.json", new_rule="- r", reasoning="why", confidence=0.5),
        GenerationInfo(generator="test"),
        actor_id="system",
        now=now,
        event=event,
    )


async def open_sqlite(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    return store


# ---------------------------------------------------------------------- the contract, on every backend


async def test_two_connections_approving_one_rule_only_one_wins(store: Store, store_backend: StoreBackend) -> None:
    """Two connections to one database stand for two processes: the compare-and-set lets exactly one through."""
    second = await store_backend.connect()
    rule_id = (await add_rule(store)).rule_id
    results = await asyncio.gather(
        *(
            each.transition_rule(
                rule_id, expected=RuleStatus.PENDING, target=RuleStatus.APPROVED, actor_id=name, now=T0
            )
            for each, name in ((store, "alice"), (second, "bob"), (store, "carol"), (second, "dave"))
        )
    )
    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    rule = await store.get_rule(rule_id)
    assert rule is not None and rule.status is RuleStatus.APPROVED
    assert rule.approved_by == winners[0].approved_by
    audit = await store.list_audit(subject_id=rule_id, limit=50, offset=0)
    assert [entry.action for entry in audit.items].count("rule_approved") == 1


async def test_claim_feedback_is_exclusive(store: Store, store_backend: StoreBackend) -> None:
    second = await store_backend.connect()
    feedback_id = await add_feedback(store)
    claims = await asyncio.gather(
        *(each.claim_feedback(feedback_id, now=T0, lease_seconds=60) for each in (store, second) * 3)
    )
    assert claims.count(True) == 1


async def test_counts_are_typed_and_cover_every_status(store: Store) -> None:
    rule = await add_rule(store)
    await add_feedback(store, text="Một góp ý khác")
    await store.transition_rule(
        rule.rule_id, expected=RuleStatus.PENDING, target=RuleStatus.APPROVED, actor_id="U1", now=T0
    )
    counts = await store.counts(since=T0 - timedelta(days=1))
    assert counts.feedback_by_status == {"pending": 1, "processing": 0, "processed": 1, "rejected": 0}
    assert counts.feedback_by_type == {"bug": 2, "suggestion": 0, "praise": 0}
    assert counts.rules_by_status["approved"] == 1 and sum(counts.rules_by_status.values()) == 1
    assert (counts.deployments_total, counts.deployed_since, counts.rollbacks_total) == (0, 0, 0)


# ---------------------------------------------------------------------- SQLite's own


async def test_fresh_database_gets_schema_pragmas_and_indexes(tmp_path: Path) -> None:
    store = await open_sqlite(tmp_path / "a.db")
    await store.close()
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"feedbacks", "generated_rules", "deployments", "audit_log", "events"} <= tables
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ix_feedbacks_status", "ix_rules_status", "ix_deployments_rule", "ux_deployments_pending"} <= indexes
        assert {"ix_events_undelivered", "ix_events_rule_undelivered", "ux_webhook_deliveries_event_url"} <= indexes
        columns = {row[1] for row in db.execute("PRAGMA table_info(generated_rules)")}
        assert {"rule_id", "feedback_id", "module_name", "rule_type", "old_rule", "new_rule", "reasoning"} <= columns
        assert {"confidence", "status", "approved_by", "approved_at", "rejected_by", "rejected_at"} <= columns
        deployment_columns = {row[1] for row in db.execute("PRAGMA table_info(deployments)")}
        assert {"rule_id", "deployed_by", "deployed_at", "version_before", "version_after", "rollback_of"} <= (
            deployment_columns
        )
        event_columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
        assert {"kind", "rule_id", "actor_id", "deployment_id", "rule_snapshot", "created_at", "ready_at"} <= (
            event_columns
        )
        assert {"claimed_by", "claimed_until", "delivered_at", "attempts"} <= event_columns


async def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    store = await open_sqlite(tmp_path / "a.db")
    rule_id = (await add_rule(store)).rule_id
    await store.close()
    store = await open_sqlite(tmp_path / "a.db")
    try:
        assert (await store.get_rule(rule_id)) is not None
        assert await store.schema_version() == SCHEMA_VERSION
        assert (await store.list_feedback(status=None, feedback_type=None, limit=10, offset=0)).total == 1
    finally:
        await store.close()


async def test_migration_7_keeps_one_webhook_delivery_per_event_and_url(tmp_path: Path) -> None:
    """A database of schema 6 where a URL listed twice queued one event twice: the upgrade keeps the first."""
    with sqlite3.connect(tmp_path / "old.db") as db:
        for version, script in enumerate(MIGRATIONS[:6], start=1):
            for statement in statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
        for url in ("https://a.example/hook", "https://a.example/hook", "https://b.example/hook"):
            db.execute(
                "INSERT INTO webhook_deliveries (event_id, event_type, url, payload, state, next_attempt_at,"
                " created_at) VALUES ('e1', 'rule_created', ?, '{}', 'pending', 'x', 'x')",
                (url,),
            )
    store = await open_sqlite(tmp_path / "old.db")
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        deliveries = await store.list_webhook_deliveries()
        assert sorted((d["id"], d["url"]) for d in deliveries) == [
            (1, "https://a.example/hook"),
            (3, "https://b.example/hook"),
        ]
    finally:
        await store.close()


async def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "new.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SqliteStore(tmp_path / "new.db")
    with pytest.raises(RuntimeError, match="newer"):
        await store.open()
    await store.close()


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    store = await open_sqlite(tmp_path / "a.db")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await store.create_rule(
                "FB-9999",
                RuleProposal(module_name="fashion_rules.json", new_rule="- r", reasoning="", confidence=0.5),
                GenerationInfo(generator="test"),
                actor_id="system",
                now=T0,
                event=NewEvent(kind="rule_created", actor_id="system"),
            )
        assert (await store.list_rules(status=None, module_name=None, limit=10, offset=0)).total == 0
        assert await store.undelivered_event_count() == 0  # the event went with the failed transaction
    finally:
        await store.close()


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
async def test_a_call_cancelled_mid_transaction_leaves_the_store_usable(store: Store, steps: int) -> None:
    """A task cancelled while its transaction starts, runs or commits (a dispatcher stopped at shutdown)
    must not leave the transaction open on the shared connection."""
    await add_rule(store, event=NewEvent(kind="rule_created", actor_id="system"))
    task = asyncio.create_task(store.claim_events(holder="one", now=T0, lease_seconds=60, limit=10))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (await add_rule(store)).status is RuleStatus.PENDING
    assert await store.undelivered_event_count() == 1


async def test_a_second_rule_for_one_feedback_returns_the_first(store: Store) -> None:
    """Two generations that both finished: the second gets the first's rule, never a unique-constraint error."""
    feedback = await store.create_feedback(
        FeedbackIn(**WEATHER_FEEDBACK),
        user_id="u",
        source="api",
        actor_id="u",
        now=T0,
    )
    assert await store.claim_feedback(feedback.feedback_id, now=T0, lease_seconds=60)
    proposal = RuleProposal(
        module_name="fashion_rules.json",
        rule_type="prompt_update",
        new_rule="- Khi trời nóng: áo thun",
        reasoning="r",
        confidence=0.8,
    )
    info = GenerationInfo(generator="heuristic")
    first = await store.create_rule(feedback.feedback_id, proposal, info, actor_id="system", now=T0)
    again = await store.create_rule(
        feedback.feedback_id, proposal.model_copy(update={"new_rule": "- khác"}), info, actor_id="system", now=T0
    )
    assert again.rule_id == first.rule_id and again.new_rule == first.new_rule
    assert (await store.list_rules(status=None, module_name=None, limit=10, offset=0)).total == 1


def test_instances_opening_a_fresh_database_together_all_start(tmp_path: Path) -> None:
    """Six processes open one new database file at once (WAL switch, migrations): every one starts."""
    import subprocess
    import sys

    database = tmp_path / "fresh.db"
    script = (
        "import asyncio, sys; from storage.sqlite import SqliteStore\n"
        "async def main():\n"
        "    store = SqliteStore(sys.argv[1]); await store.open(); print(await store.schema_version())\n"
        "    await store.close()\n"
        "asyncio.run(main())"
    )
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin:/bin"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(database)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(6)
    ]
    outcomes = [process.communicate(timeout=60) for process in processes]
    assert [p.returncode for p in processes] == [0] * 6, [err.decode()[-300:] for _, err in outcomes]
    assert {out.decode().strip() for out, _ in outcomes} == {str(SCHEMA_VERSION)}
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
