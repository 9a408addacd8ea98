"""Feedback: stored, claimed for generation, released on failure, closed without a rule, requeued.

Submissions are group-committed in the application, as on SQLite: those that arrive while a batch is being
stored wait for the next batch, and a batch is one transaction of a few set-based statements (all its feedbacks,
all their n-grams, all their audit rows), whatever its size. PostgreSQL's own group commit cannot do this: every
submission changes the same rows (the `feedback|pending|<type>` and `audit` figures, the corpus's documents row
and its common n-grams), so concurrent one-submission transactions queue on those row locks, each waiting for
the previous one's commit (its WAL flush), and `commit_delay` never finds two commits to flush together.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from autotrain.clustering import complaint_text, ngrams
from autotrain.errors import StoreBusy
from autotrain.models import ID_OFFSET, Feedback, FeedbackIn, FeedbackStatus, FeedbackType
from autotrain.pagination import Cursor, Order
from autotrain.ports import Page
from storage.postgres.connection import PostgresConnection, rowcount, ts
from storage.postgres.queries import (
    FEEDBACK_SELECT,
    audit,
    audit_values,
    feedback_in,
    feedback_row,
    figures,
    keyset,
    paged,
    where,
)

DOCUMENTS = ""  # the complaint corpus's row whose df is the number of documents (storage/postgres/complaints.py)


# a generation whose process stopped renewing its lease (another live process's generation is never this);
# `now` is parameter $1
def _abandoned(table: str = "") -> str:
    prefix = f"{table}." if table else ""
    return (
        f"{prefix}status = 'processing'"
        f" AND ({prefix}generation_lease_until IS NULL OR {prefix}generation_lease_until < $1)"
    )


_ABANDONED = _abandoned()

# all the feedbacks of a batch in one statement: each gets its id from the identity's sequence and its
# feedback_id from it (models.feedback_id_for: FB-<ID_OFFSET + id>), in the order given
_INSERT_BATCH = """
    WITH input AS (
        SELECT nextval(pg_get_serial_sequence('feedbacks', 'id')) AS id, given.*
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                    $9::text[], $10::text[], $11::timestamptz[])
             WITH ORDINALITY AS given (user_id, query, ai_response, feedback_text, feedback_type, status, source,
                                       metadata, flags, last_error, at, position)
    ), stored AS (
        INSERT INTO feedbacks (id, feedback_id, user_id, query, ai_response, feedback_text, feedback_type, status,
                               source, metadata, flags, last_error, created_at, updated_at)
        SELECT id, 'FB-' || (id + $12), user_id, query, ai_response, feedback_text, feedback_type, status, source,
               metadata, flags, last_error, at, at
        FROM input ORDER BY position
        RETURNING *
    )
    SELECT stored.*, NULL::text AS rule_id FROM stored JOIN input USING (id) ORDER BY input.position
"""

_AUDIT_BATCH = (
    "INSERT INTO audit_log (at, actor, action, subject_id, from_state, to_state, detail)"
    " SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])"
)

_LOCK_FIGURES = (
    "INSERT INTO figures (name, n) SELECT name, 0 FROM unnest($1::text[]) AS name ORDER BY name"
    " ON CONFLICT (name) DO UPDATE SET n = figures.n"
)

_COUNT_GRAMS = (
    "INSERT INTO complaint_grams (gram, df) SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1"
    " ON CONFLICT (gram) DO UPDATE SET df = complaint_grams.df + excluded.df"
)


@dataclass(frozen=True)
class _Submission:
    data: FeedbackIn
    user_id: str
    source: str
    actor_id: str
    now: datetime
    flags: tuple[str, ...]
    closed_because: str | None
    settled: bool

    @property
    def status(self) -> str:
        return "rejected" if self.closed_because else "processed" if self.settled else "pending"

    @property
    def figure(self) -> str:
        """The counter its row changes (`figures_feedback` in schema.py)."""
        return f"feedback|{self.status}|{self.data.feedback_type.value}"


async def _store_submissions(db: asyncpg.Connection, submissions: list[_Submission]) -> list[Feedback]:
    """The batch, in the caller's transaction: its feedbacks (in the order given: their ids follow it), their
    n-grams in the corpus, their audit rows."""
    await _count_grams(db, [complaint_text(s.data.feedback_text, s.data.query) for s in submissions])
    # the counters the rows' trigger changes, locked first in name order: two instances' batches of several
    # types never take them in opposite orders (the trigger then updates rows this transaction holds)
    await db.execute(_LOCK_FIGURES, sorted({s.figure for s in submissions}))
    columns: list[list[object]] = [[] for _ in range(11)]
    for s in submissions:
        values = (
            s.user_id,
            s.data.query,
            s.data.ai_response,
            s.data.feedback_text,
            s.data.feedback_type.value,
            s.status,
            s.source,
            json.dumps(s.data.metadata, ensure_ascii=False) if s.data.metadata is not None else None,
            json.dumps(list(s.flags)),
            s.closed_because,
            ts(s.now),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await db.fetch(_INSERT_BATCH, *columns, ID_OFFSET)
    stored = [feedback_row(row) for row in rows]
    audits: list[list[object]] = [[] for _ in range(7)]
    for s, feedback in zip(submissions, stored, strict=True):
        detail = {
            "source": s.source,
            "user_id": s.user_id,
            "feedback_type": s.data.feedback_type.value,
            **({"flags": list(s.flags), "closed_because": s.closed_because} if s.closed_because else {}),
        }
        values = audit_values(
            now=s.now,
            actor=s.actor_id,
            action="feedback_submitted",
            subject_id=feedback.feedback_id,
            to_state=s.status,
            detail=detail,
        )
        for column, value in zip(audits, values, strict=True):
            column.append(value)
    await db.execute(_AUDIT_BATCH, *audits)  # the `audit` counter last, as every transaction takes it
    return stored


async def _count_grams(db: asyncpg.Connection, texts: list[str]) -> None:
    """Count new feedbacks into the corpus (in the transaction that stores them): one row per n-gram, taken in
    order. Until the corpus of an older database has been counted (its documents row is missing), nothing is."""
    counted = await db.fetchval(
        "UPDATE complaint_grams SET df = df + $1 WHERE gram = $2 RETURNING df", len(texts), DOCUMENTS
    )
    if counted is None:
        return
    grams: Counter[str] = Counter()
    for text in texts:
        grams.update(ngrams(text).keys())
    if grams:
        names = sorted(grams)
        await db.execute(_COUNT_GRAMS, names, [grams[name] for name in names])


class FeedbackMixin(PostgresConnection):
    _submissions: list[tuple[_Submission, asyncio.Future[Feedback]]]
    _committer: asyncio.Task[None] | None

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._submissions = []
        self._committer = None

    async def close(self) -> None:
        if self._committer is not None and not self._committer.done():
            await asyncio.wait([self._committer])  # what is queued is committed (and answered) first
        await super().close()

    async def create_feedback(
        self,
        data: FeedbackIn,
        *,
        user_id: str,
        source: str,
        actor_id: str,
        now: datetime,
        flags: tuple[str, ...] = (),
        closed_because: str | None = None,
        settled: bool = False,
    ) -> Feedback:
        """Stored and committed when this returns. Submissions that arrive while a batch is being stored share
        the next one (one transaction, one commit, a few statements per batch)."""
        submission = _Submission(data, user_id, source, actor_id, now, flags, closed_because, settled)
        future: asyncio.Future[Feedback] = asyncio.get_running_loop().create_future()
        self._submissions.append((submission, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_submissions())
        return await asyncio.shield(future)  # a caller that gives up does not take the batch down with it

    async def _commit_submissions(self) -> None:
        await asyncio.sleep(0)  # the requests already read get to join the first batch
        while self._submissions:
            batch, self._submissions = self._submissions, []
            try:
                async with self._tx() as db:
                    stored = await _store_submissions(db, [s for s, _ in batch])
            except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError):
                # one of them is refused (a constraint, a value PostgreSQL does not take such as a NUL
                # character): each alone, so that it does not take the others with it
                await self._commit_one_by_one(batch)
                continue
            except BaseException as exc:  # the whole batch failed (disk full, busy): none of it is stored
                _fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), feedback in zip(batch, stored, strict=True):
                if not future.done():
                    future.set_result(feedback)

    async def _commit_one_by_one(self, batch: list[tuple[_Submission, asyncio.Future[Feedback]]]) -> None:
        for submission, future in batch:
            try:
                async with self._tx() as db:
                    (feedback,) = await _store_submissions(db, [submission])
            except BaseException as exc:
                _fail([(submission, future)], exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            if not future.done():
                future.set_result(feedback)

    async def get_feedback(self, feedback_id: str) -> Feedback | None:
        async with self._read() as db:
            return await feedback_in(db, feedback_id)

    async def list_feedback(
        self,
        *,
        status: FeedbackStatus | None,
        feedback_type: FeedbackType | None,
        limit: int,
        offset: int,
        cursor: Cursor | None = None,
        order: Order = Order.NEWEST,
    ) -> Page[Feedback]:
        condition, args = where(("f.status", status), ("f.feedback_type", feedback_type))
        tail, tail_args = keyset("f.id", condition, args, cursor=cursor, order=order, limit=limit, offset=offset)
        async with self._read() as db:
            total = (await figures(db, "feedback|")).feedback(status, feedback_type)
            rows = await db.fetch(f"{FEEDBACK_SELECT} {tail}", *tail_args)
        return paged(
            [feedback_row(row) for row in rows],
            [row["id"] for row in rows],
            total=total,
            limit=limit,
            offset=offset,
            order=order,
        )

    async def pending_feedback_ids(self, *, now: datetime) -> list[str]:
        """Pending feedback, and feedback whose generation was abandoned (its lease expired)."""
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT feedback_id FROM feedbacks WHERE status = 'pending' OR (" + _ABANDONED + ") ORDER BY id",
                ts(now),
            )
            return [row[0] for row in rows]

    async def claim_feedback(self, feedback_id: str, *, now: datetime, lease_seconds: float) -> bool:
        async with self._tx() as db:
            status = await db.execute(
                "UPDATE feedbacks SET status = 'processing', updated_at = $1, generation_lease_until = $2"
                " WHERE feedback_id = $3 AND (status = 'pending' OR (" + _ABANDONED + "))",
                ts(now),
                ts(now + timedelta(seconds=lease_seconds)),
                feedback_id,
            )
            if rowcount(status) != 1:
                return False
            await audit(
                db,
                now=now,
                actor="system",
                action="generation_started",
                subject_id=feedback_id,
                from_state="pending",
                to_state="processing",
            )
            return True

    async def renew_generation_lease(self, feedback_id: str, *, now: datetime, lease_seconds: float) -> bool:
        async with self._tx() as db:
            status = await db.execute(
                "UPDATE feedbacks SET generation_lease_until = $1 WHERE feedback_id = $2 AND status = 'processing'",
                ts(now + timedelta(seconds=lease_seconds)),
                feedback_id,
            )
            return rowcount(status) == 1

    async def release_feedback(self, feedback_id: str, *, error: str, actor_id: str, now: datetime) -> None:
        async with self._tx() as db:
            status = await db.execute(
                "UPDATE feedbacks SET status = 'pending', error_count = error_count + 1, last_error = $1,"
                " updated_at = $2 WHERE feedback_id = $3 AND status = 'processing'",
                error[:2000],
                ts(now),
                feedback_id,
            )
            if rowcount(status) == 1:
                await audit(
                    db,
                    now=now,
                    actor=actor_id,
                    action="generation_failed",
                    subject_id=feedback_id,
                    from_state="processing",
                    to_state="pending",
                    detail={"error": error[:2000]},
                )

    async def finish_feedback_without_rule(
        self,
        feedback_id: str,
        *,
        reason: str,
        actor_id: str,
        now: datetime,
        status: FeedbackStatus = FeedbackStatus.PROCESSED,
    ) -> bool:
        async with self._tx() as db:
            result = await db.execute(
                "UPDATE feedbacks SET status = $1, updated_at = $2, last_error = $3"
                " WHERE feedback_id = $4 AND status = 'processing'",
                status.value,
                ts(now),
                None if status is FeedbackStatus.PROCESSED else reason[:2000],
                feedback_id,
            )
            if rowcount(result) != 1:
                return False
            await audit(
                db,
                now=now,
                actor=actor_id,
                action="feedback_skipped",
                subject_id=feedback_id,
                from_state="processing",
                to_state=status.value,
                detail={"reason": reason},
            )
            return True

    async def requeue_interrupted_feedback(self, *, now: datetime) -> list[str]:
        """Generations abandoned without a rule back to pending: one compare-and-set UPDATE (a feedback another
        instance claimed meanwhile is no longer abandoned, and stays its)."""
        async with self._tx() as db:
            rows = await db.fetch(
                "UPDATE feedbacks f SET status = 'pending', last_error = $2, updated_at = $1"
                " WHERE " + _abandoned("f") + " AND NOT EXISTS"
                " (SELECT 1 FROM generated_rules r WHERE r.feedback_id = f.feedback_id)"
                " RETURNING f.id, f.feedback_id",
                ts(now),
                "generation interrupted (the process stopped)",
            )
            ids = [row["feedback_id"] for row in sorted(rows, key=lambda row: row["id"])]
            for feedback_id in ids:
                await audit(
                    db,
                    now=now,
                    actor="system",
                    action="feedback_requeued",
                    subject_id=feedback_id,
                    from_state="processing",
                    to_state="pending",
                )
            return ids


def _fail(batch: list[tuple[_Submission, asyncio.Future[Feedback]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc if isinstance(exc, Exception) else StoreBusy(str(exc)))
