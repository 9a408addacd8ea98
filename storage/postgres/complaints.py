"""The complaint corpus: document frequencies of the n-grams of all stored feedback, the feedback of the rules
a new feedback is compared with, and recurrences of deployed rules (storage/sqlite/complaints.py, on PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from autotrain.clustering import DocumentFrequencies, complaint_text, ngrams
from autotrain.effect import Counts, Tally
from autotrain.errors import StoreBusy, StoreFull
from autotrain.models import FeedbackType, NewEvent, Rule, RuleStatus
from autotrain.ports import ComplaintCandidate, EffectFigures
from storage.postgres.connection import PostgresConnection, ts
from storage.postgres.events import insert_event
from storage.postgres.feedback import DOCUMENTS
from storage.postgres.queries import audit, figures, rule_in, rule_row

log = logging.getLogger("autotrain.storage")

TEXTS_PER_RULE = 20  # the newest feedbacks of a rule a new one is compared with
CORPUS_LOCK = 0x4155544F434F52  # pg_advisory_xact_lock key of counting the corpus once ("AUTOCOR")


class ComplaintMixin(PostgresConnection):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._counting_windows = asyncio.Lock()

    async def document_frequencies(self, texts: Iterable[str], *, grams: Iterable[str] = ()) -> DocumentFrequencies:
        wanted = sorted({gram for text in texts for gram in ngrams(text)} | set(grams))
        async with self._read() as db:
            documents = await _documents(db)
        if documents is None:
            documents = await self._count_corpus()
        async with self._read() as db:
            rows = await db.fetch("SELECT gram, df FROM complaint_grams WHERE gram = ANY($1::text[])", wanted)
        return DocumentFrequencies(documents, {row[0]: int(row[1]) for row in rows})

    async def _count_corpus(self) -> int:
        """A corpus whose documents row is missing: count every stored feedback once (under an advisory lock, so
        two processes never both count it)."""
        async with self._tx() as db:
            await db.execute("SELECT pg_advisory_xact_lock($1)", CORPUS_LOCK)
            documents = await _documents(db)
            if documents is not None:
                return documents
            counts: Counter[str] = Counter()
            total = 0
            async for row in db.cursor("SELECT feedback_text, query FROM feedbacks"):
                counts.update(ngrams(complaint_text(row[0], row[1])).keys())
                total += 1
            names = sorted([DOCUMENTS, *counts])
            values = {DOCUMENTS: total, **counts}
            await db.execute(
                "INSERT INTO complaint_grams (gram, df) SELECT * FROM unnest($1::text[], $2::bigint[])"
                " ON CONFLICT (gram) DO UPDATE SET df = excluded.df",
                names,
                [values[name] for name in names],
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
        values = [s.value for s in statuses]
        # with changed_since: the rules whose state changed after that version, whatever their state now
        # (a rule that left these states comes back with its new state and no texts)
        chosen = "r.status = ANY($1::text[])" if changed_since is None else "r.complaint_version > $1"
        chosen_arg: Any = values if changed_since is None else changed_since
        async with self._read() as db:
            rows = await db.fetch(
                f"SELECT r.*, f.feedback_type AS complaint_type FROM generated_rules r"
                f" JOIN feedbacks f ON f.feedback_id = r.feedback_id WHERE {chosen} ORDER BY r.id",
                chosen_arg,
            )
            texts: dict[str, list[str]] = {}
            if with_texts and rows:
                # each rule's newest TEXTS_PER_RULE: its own feedback, what was attached to it, and what came back
                # after it was deployed — one query for all the rules
                both = f"{chosen} AND r.status = ANY($2::text[])"
                found = await db.fetch(
                    "WITH texts AS ("
                    f" SELECT r.rule_id, f.id, f.feedback_text, f.query FROM generated_rules r"
                    f" JOIN feedbacks f ON f.feedback_id = r.feedback_id WHERE {both}"
                    " UNION SELECT r.rule_id, f.id, f.feedback_text, f.query FROM generated_rules r"
                    " JOIN rule_feedbacks rf ON rf.rule_id = r.rule_id"
                    f" JOIN feedbacks f ON f.feedback_id = rf.feedback_id WHERE {both}"
                    " UNION SELECT r.rule_id, f.id, f.feedback_text, f.query FROM generated_rules r"
                    f" JOIN feedbacks f ON f.recurrence_of = r.rule_id WHERE {both})"
                    " SELECT rule_id, feedback_text, query FROM (SELECT texts.*, ROW_NUMBER() OVER"
                    " (PARTITION BY rule_id ORDER BY id DESC) AS newest FROM texts) AS ranked WHERE newest <= $3"
                    " ORDER BY rule_id, newest",
                    chosen_arg,
                    values,
                    TEXTS_PER_RULE,
                )
                for rule_id, feedback_text, query in found:
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
            marked = await db.fetchval(
                "UPDATE feedbacks SET recurrence_of = $1, updated_at = $2"
                " WHERE feedback_id = $3 AND recurrence_of IS NULL RETURNING id",
                rule_id,
                ts(now),
                feedback_id,
            )
            if marked is None:
                return None
            await db.execute(
                "UPDATE generated_rules SET recurrences = recurrences + 1,"
                " recurrences_since = recurrences_since + 1, updated_at = $1 WHERE rule_id = $2",
                ts(now),
                rule_id,
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
                deployed_at=row["deployed_at"],
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
    ) -> list[tuple[asyncpg.Record, tuple[int, int], tuple[int, int]]]:
        """The rows of the deployed rules chosen, each with (feedback, complaints) before and since its deploy."""
        conditions: list[str] = []
        args: list[Any] = []
        if rule_id is not None:
            args.append(rule_id)
            conditions.append(f"rule_id = ${len(args)}")
        recurred_only = False
        if min_complaints is not None:
            # a rule deployed before the maintained columns has none yet: chosen, so that it is counted
            args.append(min_complaints)
            conditions.append(f"(recurrences_since >= ${len(args)} OR recurrences_since IS NULL)")
            recurred_only = len(conditions) == 1
        if deployed_since is not None:
            args.append(ts(deployed_since))
            conditions.append(f"deployed_at >= ${len(args)}")
            recurred_only = False
        if canaries:
            conditions.append("rollout_percent < 100")
            recurred_only = False
        match = f" AND ({' OR '.join(conditions)})" if conditions else ""
        # the figures alone, by recurrences: the partial covering index ix_rules_deployed_effect serves it
        select = (
            f"SELECT {columns} FROM generated_rules WHERE status = 'deployed' AND deployed_at IS NOT NULL"
            f"{match} ORDER BY id"
        )
        async with self._read() as db:
            rows = await db.fetch(select, *args)
            total = await _feedback_total(db)
        counted: dict[str, tuple[int, int, int, int]] = {}
        if any(_uncounted(r, window_days) for r in rows):
            async with self._counting_windows:  # one count at a time: the others then read what it kept
                async with self._read() as db:
                    rows = await db.fetch(select, *args)
                    total = await _feedback_total(db)
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
            if recurred_only and min_complaints is not None and recurred < min_complaints:  # only to be counted
                continue
            found.append((row, (before_feedback, before_complaints), (max(0, total - mark), recurred)))
        return found

    async def _count_effect_windows(self, window_days: int) -> dict[str, tuple[int, int, int, int]]:
        """Count what the maintained columns of deployed rules lack — the window before each deploy (once per
        window setting) and, for a rule deployed before the columns existed, its marks — and keep it. Counted
        on a read connection and kept when it can be: on a full disk the figures are still answered, and
        counted again next time."""
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT rule_id, feedback_id, deployed_at, feedback_mark, recurrences_since, effect_window_days"
                " FROM generated_rules WHERE status = 'deployed' AND deployed_at IS NOT NULL"
                " AND (feedback_mark IS NULL OR recurrences_since IS NULL OR effect_window_days IS DISTINCT FROM $1"
                " OR effect_before_feedback IS NULL OR effect_before_complaints IS NULL)",
                window_days,
            )
            if not rows:
                return {}
            starts = {row["rule_id"]: row["deployed_at"] - timedelta(days=window_days) for row in rows}
            before = await _created_before(db, {*starts.values(), *(row["deployed_at"] for row in rows)})
            total = await _feedback_total(db)
            counted: dict[str, tuple[int, int, int, int]] = {}
            for row in rows:
                rule_id, deployed_at = row["rule_id"], row["deployed_at"]
                mark = row["feedback_mark"]
                if mark is None:  # no mark (a rule deployed before there were marks): everything since counts
                    mark = total - await _count(
                        db, "SELECT COUNT(*) FROM feedbacks WHERE created_at >= $1", deployed_at
                    )
                recurred = row["recurrences_since"]
                if recurred is None:
                    recurred = await _count(
                        db,
                        "SELECT COUNT(*) FROM feedbacks WHERE recurrence_of = $1 AND created_at >= $2",
                        rule_id,
                        deployed_at,
                    )
                mine = await _count(
                    db,
                    "SELECT COUNT(*) FROM feedbacks WHERE created_at >= $1 AND created_at < $2 AND (feedback_id = $3"
                    " OR feedback_id IN (SELECT feedback_id FROM rule_feedbacks WHERE rule_id = $4))",
                    starts[rule_id],
                    deployed_at,
                    row["feedback_id"],
                    rule_id,
                )
                counted[rule_id] = (mark, recurred, before[deployed_at] - before[starts[rule_id]], mine)
        try:
            async with self._tx() as db:
                for row in sorted(rows, key=lambda row: row["rule_id"]):  # kept only for the same deploy
                    mark, recurred, before_feedback, mine = counted[row["rule_id"]]
                    await db.execute(
                        "UPDATE generated_rules SET feedback_mark = COALESCE(feedback_mark, $1),"
                        " recurrences_since = COALESCE(recurrences_since, $2), effect_window_days = $3,"
                        " effect_before_feedback = $4, effect_before_complaints = $5"
                        " WHERE rule_id = $6 AND deployed_at = $7 AND status = 'deployed'",
                        mark,
                        recurred,
                        window_days,
                        before_feedback,
                        mine,
                        row["rule_id"],
                        row["deployed_at"],
                    )
        except (StoreFull, StoreBusy) as exc:
            log.info("the effect windows of %d deployed rules were counted, not kept: %s", len(rows), exc)
        return counted

    async def feedback_users_since(self, since: datetime, *, after: int = 0) -> list[tuple[int, str]]:
        # the first count walks the time index (it covers user_id); later ones only the rows stored since
        async with self._read() as db:
            if after:
                rows = await db.fetch(
                    "SELECT id, user_id FROM feedbacks WHERE id > $1 AND created_at >= $2", after, ts(since)
                )
            else:
                rows = await db.fetch("SELECT id, user_id FROM feedbacks WHERE created_at >= $1", ts(since))
            return [(int(row[0]), row[1]) for row in rows]

    async def recurrence_users(self, rule_id: str, *, since: datetime) -> list[str]:
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT user_id FROM feedbacks WHERE recurrence_of = $1 AND created_at >= $2", rule_id, ts(since)
            )
            return [row[0] for row in rows]


async def _count(db: asyncpg.Connection, sql: str, *args: object) -> int:
    return int(await db.fetchval(sql, *args) or 0)


async def _feedback_total(db: asyncpg.Connection) -> int:
    return (await figures(db, "feedback|")).feedback()


_EFFECT_COLUMNS = (
    "feedback_mark, recurrences_since, effect_window_days, effect_before_feedback, effect_before_complaints"
)


def _uncounted(row: asyncpg.Record, window_days: int) -> bool:
    return (
        row["feedback_mark"] is None
        or row["recurrences_since"] is None
        or row["effect_window_days"] != window_days
        or row["effect_before_feedback"] is None
        or row["effect_before_complaints"] is None
    )


async def _created_before(db: asyncpg.Connection, moments: set[datetime]) -> dict[datetime, int]:
    """How many feedbacks were created before each moment: a COUNT each for a few, one walk of the time index
    for many (each feedback falls in the bucket between two moments; a moment's count is the buckets below it)."""
    ordered = sorted(moments)
    if len(ordered) <= 16:
        return {m: await _count(db, "SELECT COUNT(*) FROM feedbacks WHERE created_at < $1", m) for m in ordered}
    rows = await db.fetch(
        "SELECT width_bucket(created_at, $1::timestamptz[]) AS bucket, COUNT(*) FROM feedbacks"
        " WHERE created_at < $2 GROUP BY bucket",
        ordered,
        ordered[-1],
    )
    buckets = {int(row[0]): int(row[1]) for row in rows}
    found: dict[datetime, int] = {}
    seen = 0
    for index, moment in enumerate(ordered, start=1):  # bucket i - 1 holds the feedback just before moment i
        seen += buckets.get(index - 1, 0)
        found[moment] = seen
    return found


async def _documents(db: asyncpg.Connection) -> int | None:
    value = await db.fetchval("SELECT df FROM complaint_grams WHERE gram = $1", DOCUMENTS)
    return int(value) if value is not None else None
