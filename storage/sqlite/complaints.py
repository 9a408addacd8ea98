"""The complaint corpus: document frequencies of the n-grams of all stored feedback, the feedback of the rules
a new feedback is compared with, and recurrences of deployed rules."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

import aiosqlite

from autotrain.clustering import DocumentFrequencies, complaint_text, ngrams
from autotrain.effect import Tally
from autotrain.models import FeedbackType, NewEvent, Rule, RuleStatus
from autotrain.ports import ComplaintCandidate
from storage.sqlite.connection import SqliteConnection, ts
from storage.sqlite.events import insert_event
from storage.sqlite.queries import audit, rule_in, rule_row

log = logging.getLogger("autotrain.storage")

DOCUMENTS = ""  # the row whose df is the number of documents counted (no real gram is empty)
CHUNK = 500  # bound parameters per IN (...) query
TEXTS_PER_RULE = 20  # the newest feedbacks of a rule a new one is compared with


async def count_complaint_grams(db: aiosqlite.Connection, text: str) -> None:
    """Count one new feedback into the corpus (in the transaction that stores it). Until the corpus of an
    older database has been counted (its documents row is missing), nothing is counted here."""
    cursor = await db.execute("UPDATE complaint_grams SET df = df + 1 WHERE gram = ?", (DOCUMENTS,))
    if cursor.rowcount != 1:
        return
    await db.executemany(
        "INSERT INTO complaint_grams (gram, df) VALUES (?, 1) ON CONFLICT (gram) DO UPDATE SET df = df + 1",
        [(gram,) for gram in ngrams(text)],
    )


class ComplaintMixin(SqliteConnection):
    async def document_frequencies(self, texts: Iterable[str]) -> DocumentFrequencies:
        grams = sorted({gram for text in texts for gram in ngrams(text)})
        async with self._read() as db:
            documents = await _documents(db)
        if documents is None:
            documents = await self._count_corpus()
        counts: dict[str, int] = {}
        async with self._read() as db:
            for start in range(0, len(grams), CHUNK):
                chunk = grams[start : start + CHUNK]
                cursor = await db.execute(
                    f"SELECT gram, df FROM complaint_grams WHERE gram IN ({','.join('?' * len(chunk))})", chunk
                )
                counts.update({row[0]: int(row[1]) for row in await cursor.fetchall()})
        return DocumentFrequencies(documents, counts)

    async def _count_corpus(self) -> int:
        """A database from before the corpus: count every stored feedback once (under the write lock, so two
        processes never both count it)."""
        async with self._tx() as db:
            documents = await _documents(db)
            if documents is not None:
                return documents
            counts: Counter[str] = Counter()
            total = 0
            async with db.execute("SELECT feedback_text, query FROM feedbacks") as cursor:
                async for row in cursor:
                    counts.update(ngrams(complaint_text(row[0], row[1])).keys())
                    total += 1
            await db.executemany(
                "INSERT INTO complaint_grams (gram, df) VALUES (?, ?)"
                " ON CONFLICT (gram) DO UPDATE SET df = excluded.df",
                [(DOCUMENTS, total), *counts.items()],
            )
        log.info("counted the complaint corpus of %d stored feedbacks (%d n-grams)", total, len(counts))
        return total

    async def complaint_candidates(
        self, statuses: Sequence[RuleStatus], *, with_texts: bool = True
    ) -> list[ComplaintCandidate]:
        if not statuses:
            return []
        marks = ",".join("?" * len(statuses))
        async with self._read() as db:
            cursor = await db.execute(
                f"SELECT r.*, f.feedback_type AS complaint_type FROM generated_rules r"
                f" JOIN feedbacks f ON f.feedback_id = r.feedback_id WHERE r.status IN ({marks}) ORDER BY r.id",
                [s.value for s in statuses],
            )
            rows = await cursor.fetchall()
            candidates = []
            for row in rows:
                data = dict(row)
                kind = FeedbackType(data.pop("complaint_type"))
                rule = rule_row(data)  # type: ignore[arg-type]
                if not with_texts:
                    candidates.append(ComplaintCandidate(rule=rule, feedback_type=kind, texts=[]))
                    continue
                texts = await db.execute(
                    # its own feedback, what was attached to it, and what came back after it was deployed
                    "SELECT feedback_text, query FROM feedbacks WHERE feedback_id = ?"
                    " OR feedback_id IN (SELECT feedback_id FROM rule_feedbacks WHERE rule_id = ?)"
                    " OR recurrence_of = ? ORDER BY id DESC LIMIT ?",
                    (rule.feedback_id, rule.rule_id, rule.rule_id, TEXTS_PER_RULE),
                )
                found = [complaint_text(t[0], t[1]) for t in await texts.fetchall()]
                candidates.append(ComplaintCandidate(rule=rule, feedback_type=kind, texts=found))
        return candidates

    async def mark_recurrence(
        self, feedback_id: str, rule_id: str, *, actor_id: str, now: datetime, event: NewEvent | None = None
    ) -> Rule | None:
        """Record that this feedback is the complaint of deployed rule `rule_id` again (once per feedback)."""
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE feedbacks SET recurrence_of = ?, updated_at = ?"
                " WHERE feedback_id = ? AND recurrence_of IS NULL",
                (rule_id, ts(now), feedback_id),
            )
            if cursor.rowcount != 1:
                return None
            await db.execute(
                "UPDATE generated_rules SET recurrences = recurrences + 1, updated_at = ? WHERE rule_id = ?",
                (ts(now), rule_id),
            )
            await audit(
                db,
                now=now,
                actor=actor_id,
                action="complaint_recurred",
                subject_id=rule_id,
                detail={"feedback_id": feedback_id},
            )
            rule = await rule_in(db, rule_id)
            if rule is not None and event is not None:
                await insert_event(db, event, rule, now=now)
            return rule

    async def effect_tallies(
        self, rule_id: str, *, window_start: datetime, deployed_at: datetime
    ) -> tuple[Tally, Tally]:
        """(before, since): all feedback, and this rule's complaint, in [window_start, deployed_at) — its own and
        attached feedback — and since deployed_at — its recurrences."""
        async with self._read() as db:
            before_all = await _count(
                db,
                "SELECT COUNT(*) FROM feedbacks WHERE created_at >= ? AND created_at < ?",
                ts(window_start),
                ts(deployed_at),
            )
            before_mine = await _count(
                db,
                "SELECT COUNT(*) FROM feedbacks WHERE created_at >= ? AND created_at < ? AND (feedback_id ="
                " (SELECT feedback_id FROM generated_rules WHERE rule_id = ?) OR feedback_id IN"
                " (SELECT feedback_id FROM rule_feedbacks WHERE rule_id = ?))",
                ts(window_start),
                ts(deployed_at),
                rule_id,
                rule_id,
            )
            since_all = await _count(db, "SELECT COUNT(*) FROM feedbacks WHERE created_at >= ?", ts(deployed_at))
            since_mine = await _count(
                db,
                "SELECT COUNT(*) FROM feedbacks WHERE recurrence_of = ? AND created_at >= ?",
                rule_id,
                ts(deployed_at),
            )
        return Tally(feedback=before_all, complaints=before_mine), Tally(feedback=since_all, complaints=since_mine)

    async def feedback_users_since(self, rule_id: str, since: datetime) -> list[tuple[str, bool]]:
        """(user_id, is a recurrence of this rule) of every feedback since `since`: a canary's split."""
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT user_id, recurrence_of IS NOT NULL AND recurrence_of = ? FROM feedbacks WHERE created_at >= ?",
                (rule_id, ts(since)),
            )
            return [(row[0], bool(row[1])) for row in await cursor.fetchall()]


async def _count(db: aiosqlite.Connection, sql: str, *args: object) -> int:
    cursor = await db.execute(sql, args)
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _documents(db: aiosqlite.Connection) -> int | None:
    cursor = await db.execute("SELECT df FROM complaint_grams WHERE gram = ?", (DOCUMENTS,))
    row = await cursor.fetchone()
    return int(row[0]) if row else None
