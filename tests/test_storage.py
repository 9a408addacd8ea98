"""The SQLite store: schema and migrations, pragmas, ids, and compare-and-set under concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from autotrain.models import FeedbackIn, GenerationInfo, RuleProposal, RuleStatus
from autotrain.service import utcnow
from storage.migrations import SCHEMA_VERSION
from storage.sqlite import SqliteStore
from tests.conftest import WEATHER_FEEDBACK


async def open_store(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    return store


async def add_rule(store: SqliteStore) -> str:
    feedback = await store.create_feedback(
        FeedbackIn(**WEATHER_FEEDBACK), user_id="u1", source="api", actor_id="chatbot", now=utcnow()
    )
    assert await store.claim_feedback(feedback.feedback_id, now=utcnow())
    rule = await store.create_rule(
        feedback.feedback_id,
        RuleProposal(module_name="fashion_rules.json", new_rule="- r", reasoning="why", confidence=0.5),
        GenerationInfo(generator="test"),
        actor_id="system",
        now=utcnow(),
    )
    return rule.rule_id


async def test_fresh_database_gets_schema_pragmas_and_indexes(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    await store.close()
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"feedbacks", "generated_rules", "deployments", "audit_log"} <= tables
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ix_feedbacks_status", "ix_rules_status", "ix_deployments_rule", "ux_deployments_pending"} <= indexes
        columns = {row[1] for row in db.execute("PRAGMA table_info(generated_rules)")}
        assert {"rule_id", "feedback_id", "module_name", "rule_type", "old_rule", "new_rule", "reasoning"} <= columns
        assert {"confidence", "status", "approved_by", "approved_at", "rejected_by", "rejected_at"} <= columns
        deployment_columns = {row[1] for row in db.execute("PRAGMA table_info(deployments)")}
        assert {"rule_id", "deployed_by", "deployed_at", "version_before", "version_after", "rollback_of"} <= (
            deployment_columns
        )


async def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    rule_id = await add_rule(store)
    await store.close()
    store = await open_store(tmp_path / "a.db")
    try:
        assert (await store.get_rule(rule_id)) is not None
        assert await store.schema_version() == SCHEMA_VERSION
        assert (await store.list_feedback(status=None, feedback_type=None, limit=10, offset=0)).total == 1
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
    store = await open_store(tmp_path / "a.db")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await store.create_rule(
                "FB-9999",
                RuleProposal(module_name="fashion_rules.json", new_rule="- r", reasoning="", confidence=0.5),
                GenerationInfo(generator="test"),
                actor_id="system",
                now=utcnow(),
            )
        assert (await store.list_rules(status=None, module_name=None, limit=10, offset=0)).total == 0
    finally:
        await store.close()


async def test_two_connections_approving_one_rule_only_one_wins(tmp_path: Path) -> None:
    """Two stores on one file stand for two processes: the compare-and-set lets exactly one through."""
    first = await open_store(tmp_path / "a.db")
    second = await open_store(tmp_path / "a.db")
    try:
        rule_id = await add_rule(first)
        results = await asyncio.gather(
            *(
                store.transition_rule(
                    rule_id, expected=RuleStatus.PENDING, target=RuleStatus.APPROVED, actor_id=name, now=utcnow()
                )
                for store, name in ((first, "alice"), (second, "bob"), (first, "carol"), (second, "dave"))
            )
        )
        winners = [result for result in results if result is not None]
        assert len(winners) == 1
        rule = await first.get_rule(rule_id)
        assert rule is not None and rule.status is RuleStatus.APPROVED
        assert rule.approved_by == winners[0].approved_by
        audit = await first.list_audit(subject_id=rule_id, limit=50, offset=0)
        assert [entry.action for entry in audit.items].count("rule_approved") == 1
    finally:
        await first.close()
        await second.close()


async def test_claim_feedback_is_exclusive(tmp_path: Path) -> None:
    first = await open_store(tmp_path / "a.db")
    second = await open_store(tmp_path / "a.db")
    try:
        feedback = await first.create_feedback(
            FeedbackIn(**WEATHER_FEEDBACK), user_id="u1", source="api", actor_id="chatbot", now=utcnow()
        )
        claims = await asyncio.gather(
            *(store.claim_feedback(feedback.feedback_id, now=utcnow()) for store in (first, second) * 3)
        )
        assert claims.count(True) == 1
    finally:
        await first.close()
        await second.close()
