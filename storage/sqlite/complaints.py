"""The complaint corpus: document frequencies of the n-grams of all stored feedback, the feedback of the rules
a new feedback is compared with, and recurrences of deployed rules."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from autotrain.clustering import DocumentFrequencies, complaint_text, ngrams
from autotrain.effect import Counts, Tally
from autotrain.errors import StoreBusy, StoreFull
from autotrain.models import FeedbackType, NewEvent, Rule, RuleStatus
from autotrain.ports import ComplaintCandidate, EffectFigures
from storage.sqlite.connection import SqliteConnection, ts
from storage.sqlite.events import insert_event
from storage.sqlite.figures import feedback_total, figures
from storage.sqlite.queries import audit, rule_in, rule_row

log = logging.getLogger("autotrain.storage")

DOCUMENTS = ""  # the row whose df is the number of documents counted (no real gram is empty)
CHUNK = 500  # bound parameters per IN (...) query
TEXTS_PER_RULE = 20  # the newest feedbacks of a rule a new one is compared with


def count_complaint_grams(db: sqlite3.Connection, text: str) -> None:
    """Count one new feedback into the corpus (in the transaction that stores it, on the writer's thread).
    Until the corpus of an older database has been counted (its documents row is missing), nothing is
    counted here."""
    cursor = db.execute("UPDATE complaint_grams SET df = df + 1 WHERE gram = ?", (DOCUMENTS,))
    if cursor.rowcount != 1:
        return
    db.executemany(
        "INSERT INTO complaint_grams (gram, df) VALUES (?, 1) ON CONFLICT (gram) DO UPDATE SET df = df + 1",
        [(gram,) for gram in ngrams(text)],
    )


class ComplaintMixin(SqliteConnection):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self._counting_windows = asyncio.Lock()

    async def document_frequencies(self, texts: Iterable[str], *, grams: Iterable[str] = ()) -> DocumentFrequencies:
        grams = sorted({gram for text in texts for gram in ngrams(text)} | set(grams))
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

    async def complaint_version(self) -> int:
        async with self._read() as db:
            return (await figures(db, "complaints|")).get("complaints|version")

    async def complaint_candidates(
        self, statuses: Sequence[RuleStatus], *, with_texts: bool = True, changed_since: int | None = None
    ) -> list[ComplaintCandidate]:
        if not statuses:
            return []
        marks = ",".join("?" * len(statuses))
        values = [s.value for s in statuses]
        # with changed_since: the rules whose state changed after that version, whatever their state now
        # (a rule that left these states comes back with its new state and no texts)
        chosen = f"r.status IN ({marks})" if changed_since is None else "r.complaint_version > ?"
        chosen_args: list[Any] = values if changed_since is None else [changed_since]
        async with self._read() as db:
            cursor = await db.execute(
                f"SELECT r.*, f.feedback_type AS complaint_type FROM generated_rules r"
                f" JOIN feedbacks f ON f.feedback_id = r.feedback_id WHERE {chosen} ORDER BY r.id",
                chosen_args,
            )
            rows = await cursor.fetchall()
            texts: dict[str, list[str]] = {}
            if with_texts and rows:
                # each rule's newest TEXTS_PER_RULE: its own feedback, what was attached to it, and what came back
                # after it was deployed — one query for all the rules
                both = f"{chosen} AND r.status IN ({marks})"
                cursor = await db.execute(
                    "WITH texts AS ("
                    f" SELECT r.rule_id, f.id, f.feedback_text, f.query FROM generated_rules r"
                    f" JOIN feedbacks f ON f.feedback_id = r.feedback_id WHERE {both}"
                    " UNION SELECT r.rule_id, f.id, f.feedback_text, f.query FROM generated_rules r"
                    " JOIN rule_feedbacks rf ON rf.rule_id = r.rule_id"
                    f" JOIN feedbacks f ON f.feedback_id = rf.feedback_id WHERE {both}"
                    " UNION SELECT r.rule_id, f.id, f.feedback_text, f.query FROM generated_rules r"
                    f" CROSS JOIN feedbacks f ON f.recurrence_of = r.rule_id WHERE {both})"
                    " SELECT rule_id, feedback_text, query FROM (SELECT *, ROW_NUMBER() OVER"
                    " (PARTITION BY rule_id ORDER BY id DESC) AS newest FROM texts) WHERE newest <= ?"
                    " ORDER BY rule_id, newest",
                    [*chosen_args, *values, *chosen_args, *values, *chosen_args, *values, TEXTS_PER_RULE],
                )
                for rule_id, feedback_text, query in await cursor.fetchall():
                    texts.setdefault(rule_id, []).append(complaint_text(feedback_text, query))
        candidates = []
        for row in rows:
            data = dict(row)
            kind = FeedbackType(data.pop("complaint_type"))
            rule = rule_row(data)  # type: ignore[arg-type]
            candidates.append(ComplaintCandidate(rule=rule, feedback_type=kind, texts=texts.get(rule.rule_id, [])))
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
                "UPDATE generated_rules SET recurrences = recurrences + 1,"
                " recurrences_since = recurrences_since + 1, updated_at = ? WHERE rule_id = ?",
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

    async def effect_tallies(self, rule_id: str, *, window_days: int) -> tuple[Tally, Tally] | None:
        found = await self.deployed_effect_tallies(window_days=window_days, rule_id=rule_id)
        return (found[0][1], found[0][2]) if found else None

    async def deployed_effect_tallies(
        self,
        *,
        window_days: int,
        rule_id: str | None = None,
        min_complaints: int | None = None,
        deployed_since: datetime | None = None,
        canaries: bool = False,
    ) -> list[tuple[Rule, Tally, Tally]]:
        """(rule, before, since) of deployed rules — all of them, or those that match any of: `rule_id`, at least
        `min_complaints` recurrences since the deploy, deployed since `deployed_since`, a canary. Read from
        the rules' maintained columns and the feedback total; a window not counted yet is counted first."""
        found = await self._effect_rows(
            "*",
            window_days,
            rule_id=rule_id,
            min_complaints=min_complaints,
            deployed_since=deployed_since,
            canaries=canaries,
        )
        return [
            (rule_row(row), Tally(feedback=b[0], complaints=b[1]), Tally(feedback=s[0], complaints=s[1]))
            for row, b, s in found
        ]

    async def deployed_effect_figures(self, *, window_days: int, min_complaints: int) -> list[EffectFigures]:
        found = await self._effect_rows(
            "rule_id, deployed_at, rollout_percent, " + _EFFECT_COLUMNS, window_days, min_complaints=min_complaints
        )
        return [
            EffectFigures(
                rule_id=row["rule_id"],
                deployed_at=datetime.fromisoformat(row["deployed_at"]),
                rollout_percent=row["rollout_percent"],
                before=Counts(*before),
                since=Counts(*since),
            )
            for row, before, since in found
        ]

    async def _effect_rows(
        self,
        columns: str,
        window_days: int,
        *,
        rule_id: str | None = None,
        min_complaints: int | None = None,
        deployed_since: datetime | None = None,
        canaries: bool = False,
    ) -> list[tuple[aiosqlite.Row, tuple[int, int], tuple[int, int]]]:
        """The rows of the deployed rules chosen, each with (feedback, complaints) before and since its deploy."""
        conditions, args = [], []
        if rule_id is not None:
            conditions.append("rule_id = ?")
            args.append(rule_id)
        if min_complaints is not None:
            # a rule deployed before the maintained columns has none yet: chosen, so that it is counted
            conditions.append(_RECURRED)
            args.append(min_complaints)
        if deployed_since is not None:
            conditions.append("deployed_at >= ?")
            args.append(ts(deployed_since))
        if canaries:
            conditions.append("rollout_percent < 100")
        match = f" AND ({' OR '.join(conditions)})" if conditions else ""
        # the figures alone, by recurrences: from the covering index (migration 16), not the rows
        covering = " INDEXED BY ix_rules_deployed_effect" if columns != "*" and conditions == [_RECURRED] else ""
        select = (
            f"SELECT {columns} FROM generated_rules{covering} WHERE status = 'deployed' AND deployed_at IS NOT NULL"
            f"{match} ORDER BY id"
        )
        async with self._read() as db:
            rows = await (await db.execute(select, args)).fetchall()
            total = await feedback_total(db)
        counted: dict[str, tuple[int, int, int, int]] = {}
        if any(_uncounted(r, window_days) for r in rows):
            async with self._counting_windows:  # one count at a time: the others then read what it kept
                async with self._read() as db:
                    rows = await (await db.execute(select, args)).fetchall()
                    total = await feedback_total(db)
                if any(_uncounted(r, window_days) for r in rows):
                    counted = await self._count_effect_windows(window_days)
        found = []
        for row in rows:
            values = counted.get(row["rule_id"]) or (
                row["feedback_mark"],
                row["recurrences_since"],
                row["effect_before_feedback"],
                row["effect_before_complaints"],
            )
            if None in values:  # its deploy changed while it was counted: left out of this answer
                continue
            mark, recurred, before_feedback, before_complaints = values
            if conditions == [_RECURRED] and recurred < min_complaints:  # chosen only to be counted
                continue
            found.append((row, (before_feedback, before_complaints), (max(0, total - mark), recurred)))
        return found

    async def _count_effect_windows(self, window_days: int) -> dict[str, tuple[int, int, int, int]]:
        """Count what the maintained columns of deployed rules lack — the window before each deploy (once per
        window setting) and, for a rule deployed before the columns existed, its marks — and keep it. One
        pass over the feedback's time index however many rules need it. Counted on a read connection and
        kept when it can be: on a full disk the figures are still answered, and counted again next time."""
        async with self._read() as db:
            rows = await (
                await db.execute(
                    "SELECT rule_id, feedback_id, deployed_at, feedback_mark, recurrences_since, effect_window_days"
                    " FROM generated_rules WHERE status = 'deployed' AND deployed_at IS NOT NULL"
                    " AND (feedback_mark IS NULL OR recurrences_since IS NULL OR effect_window_days IS NOT ?"
                    " OR effect_before_feedback IS NULL OR effect_before_complaints IS NULL)",
                    (window_days,),
                )
            ).fetchall()
            if not rows:
                return {}
            starts = {
                row["rule_id"]: ts(datetime.fromisoformat(row["deployed_at"]) - timedelta(days=window_days))
                for row in rows
            }
            before = await _created_before(db, {*starts.values(), *(row["deployed_at"] for row in rows)})
            total = await feedback_total(db)
            counted: dict[str, tuple[int, int, int, int]] = {}
            for row in rows:
                rule_id, deployed_at = row["rule_id"], row["deployed_at"]
                mark = row["feedback_mark"]
                if mark is None:  # deployed before migration 14: everything stored since counts as since
                    mark = total - await _count(db, "SELECT COUNT(*) FROM feedbacks WHERE created_at >= ?", deployed_at)
                recurred = row["recurrences_since"]
                if recurred is None:
                    recurred = await _count(
                        db,
                        "SELECT COUNT(*) FROM feedbacks WHERE recurrence_of = ? AND created_at >= ?",
                        rule_id,
                        deployed_at,
                    )
                mine = await _count(
                    db,
                    "SELECT COUNT(*) FROM feedbacks WHERE created_at >= ? AND created_at < ? AND (feedback_id = ?"
                    " OR feedback_id IN (SELECT feedback_id FROM rule_feedbacks WHERE rule_id = ?))",
                    starts[rule_id],
                    deployed_at,
                    row["feedback_id"],
                    rule_id,
                )
                counted[rule_id] = (mark, recurred, before[deployed_at] - before[starts[rule_id]], mine)
        try:
            async with self._tx() as db:
                for row in rows:  # kept only for the same deploy (not one redeployed meanwhile)
                    mark, recurred, before_feedback, mine = counted[row["rule_id"]]
                    await db.execute(
                        "UPDATE generated_rules SET feedback_mark = COALESCE(feedback_mark, ?),"
                        " recurrences_since = COALESCE(recurrences_since, ?), effect_window_days = ?,"
                        " effect_before_feedback = ?, effect_before_complaints = ?"
                        " WHERE rule_id = ? AND deployed_at = ? AND status = 'deployed'",
                        (mark, recurred, window_days, before_feedback, mine, row["rule_id"], row["deployed_at"]),
                    )
        except (StoreFull, StoreBusy) as exc:
            log.info("the effect windows of %d deployed rules were counted, not kept: %s", len(rows), exc)
        return counted

    async def feedback_users_since(self, since: datetime, *, after: int = 0) -> list[tuple[int, str]]:
        # the first count walks the time index (it covers user_id); later ones only the rows stored since
        by = "INDEXED BY ix_feedbacks_created WHERE" if not after else "WHERE id > :after AND"
        async with self._read() as db:
            cursor = await db.execute(
                f"SELECT id, user_id FROM feedbacks {by} created_at >= :since", {"after": after, "since": ts(since)}
            )
            return [(int(row[0]), row[1]) for row in await cursor.fetchall()]

    async def recurrence_users(self, rule_id: str, *, since: datetime) -> list[str]:
        async with self._read() as db:
            cursor = await db.execute(
                "SELECT user_id FROM feedbacks WHERE recurrence_of = ? AND created_at >= ?", (rule_id, ts(since))
            )
            return [row[0] for row in await cursor.fetchall()]


async def _count(db: aiosqlite.Connection, sql: str, *args: object) -> int:
    cursor = await db.execute(sql, args)
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


_RECURRED = "(recurrences_since >= ? OR recurrences_since IS NULL)"
_EFFECT_COLUMNS = (
    "feedback_mark, recurrences_since, effect_window_days, effect_before_feedback, effect_before_complaints"
)


def _uncounted(row: aiosqlite.Row, window_days: int) -> bool:
    return (
        row["feedback_mark"] is None
        or row["recurrences_since"] is None
        or row["effect_window_days"] != window_days
        or row["effect_before_feedback"] is None
        or row["effect_before_complaints"] is None
    )


async def _created_before(db: aiosqlite.Connection, moments: set[str]) -> dict[str, int]:
    """How many feedbacks were created before each moment: a COUNT each for a few, one walk of the time index
    for many."""
    if len(moments) <= 16:
        return {m: await _count(db, "SELECT COUNT(*) FROM feedbacks WHERE created_at < ?", m) for m in moments}
    ordered = sorted(moments)
    found: dict[str, int] = {}
    seen = 0
    index = 0
    async with db.execute("SELECT created_at FROM feedbacks ORDER BY created_at") as cursor:
        async for (created_at,) in cursor:
            while index < len(ordered) and ordered[index] <= created_at:
                found[ordered[index]] = seen
                index += 1
            if index == len(ordered):
                break
            seen += 1
    for moment in ordered[index:]:
        found[moment] = seen
    return found


async def _documents(db: aiosqlite.Connection) -> int | None:
    cursor = await db.execute("SELECT df FROM complaint_grams WHERE gram = ?", (DOCUMENTS,))
    row = await cursor.fetchone()
    return int(row[0]) if row else None
