"""Feedback: stored, claimed for generation, released on failure, closed without a rule, requeued."""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from autotrain.clustering import complaint_text
from autotrain.errors import StoreBusy
from autotrain.models import Feedback, FeedbackIn, FeedbackStatus, FeedbackType, feedback_id_for
from autotrain.pagination import Cursor, Order
from autotrain.ports import Page
from storage.sqlite.complaints import count_complaint_grams
from storage.sqlite.connection import SqliteConnection, ts
from storage.sqlite.figures import figures
from storage.sqlite.queries import (
    AUDIT_INSERT,
    FEEDBACK_SELECT,
    audit,
    audit_values,
    feedback_in,
    feedback_row,
    keyset,
    paged,
    where,
)


# a generation whose process stopped renewing its lease (another live process's generation is never this)
def _abandoned(table: str = "") -> str:
    prefix = f"{table}." if table else ""
    return (
        f"{prefix}status = 'processing'"
        f" AND ({prefix}generation_lease_until IS NULL OR {prefix}generation_lease_until < :now)"
    )


_ABANDONED = _abandoned()


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


def _store_submissions(db: sqlite3.Connection, submissions: list[_Submission]) -> list[Feedback | Exception]:
    """The batch, in the writer's transaction, on its thread; each submission in a savepoint of its own, so
    that one refused (a constraint) does not take the others with it."""
    results: list[Feedback | Exception] = []
    for submission in submissions:
        db.execute("SAVEPOINT submission")
        try:
            results.append(_store_submission(db, submission))
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK TO submission")
            results.append(exc)
        db.execute("RELEASE submission")
    return results


def _store_submission(db: sqlite3.Connection, submission: _Submission) -> Feedback:
    data, now, closed_because = submission.data, submission.now, submission.closed_because
    status = "rejected" if closed_because else "processed" if submission.settled else "pending"
    row_id = db.execute(
        "INSERT INTO feedbacks (user_id, query, ai_response, feedback_text, feedback_type, status,"
        " source, metadata, flags, last_error, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            submission.user_id,
            data.query,
            data.ai_response,
            data.feedback_text,
            data.feedback_type.value,
            status,
            submission.source,
            json.dumps(data.metadata, ensure_ascii=False) if data.metadata is not None else None,
            json.dumps(list(submission.flags)),
            closed_because,
            ts(now),
            ts(now),
        ),
    ).lastrowid
    assert row_id is not None
    feedback_id = feedback_id_for(row_id)
    db.execute("UPDATE feedbacks SET feedback_id = ? WHERE id = ?", (feedback_id, row_id))
    count_complaint_grams(db, complaint_text(data.feedback_text, data.query))
    detail = {
        "source": submission.source,
        "user_id": submission.user_id,
        "feedback_type": data.feedback_type.value,
        **({"flags": list(submission.flags), "closed_because": closed_because} if closed_because else {}),
    }
    values = audit_values(
        now=now,
        actor=submission.actor_id,
        action="feedback_submitted",
        subject_id=feedback_id,
        to_state=status,
        detail=detail,
    )
    db.execute(AUDIT_INSERT, values)
    row = db.execute(FEEDBACK_SELECT + " WHERE f.id = ?", (row_id,)).fetchone()
    return feedback_row(row)


class FeedbackMixin(SqliteConnection):
    _submissions: list[tuple[_Submission, asyncio.Future[Feedback]]]
    _committer: asyncio.Task[None] | None

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
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
        """Stored and on disk when this returns. Submissions that arrive while a commit is in flight share
        the next one (group commit: one transaction, one fsync, one hop to the writer's thread per batch)."""
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
                async with self._batch() as run:
                    stored = await run(functools.partial(_store_submissions, submissions=[s for s, _ in batch]))
            except BaseException as exc:  # the whole batch failed (disk full, busy): none of it is stored
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else StoreBusy(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, stored, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

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
            cursor_ = await db.execute(f"{FEEDBACK_SELECT} {tail}", tail_args)
            rows = await cursor_.fetchall()
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
            cursor = await db.execute(
                "SELECT feedback_id FROM feedbacks WHERE status = 'pending' OR (" + _ABANDONED + ") ORDER BY id",
                {"now": ts(now)},
            )
            return [row[0] for row in await cursor.fetchall()]

    async def claim_feedback(self, feedback_id: str, *, now: datetime, lease_seconds: float) -> bool:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE feedbacks SET status = 'processing', updated_at = :now, generation_lease_until = :until"
                " WHERE feedback_id = :feedback_id AND (status = 'pending' OR (" + _ABANDONED + "))",
                {"now": ts(now), "until": ts(now + timedelta(seconds=lease_seconds)), "feedback_id": feedback_id},
            )
            if cursor.rowcount != 1:
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
            cursor = await db.execute(
                "UPDATE feedbacks SET generation_lease_until = ? WHERE feedback_id = ? AND status = 'processing'",
                (ts(now + timedelta(seconds=lease_seconds)), feedback_id),
            )
            return cursor.rowcount == 1

    async def release_feedback(self, feedback_id: str, *, error: str, actor_id: str, now: datetime) -> None:
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE feedbacks SET status = 'pending', error_count = error_count + 1, last_error = ?,"
                " updated_at = ? WHERE feedback_id = ? AND status = 'processing'",
                (error[:2000], ts(now), feedback_id),
            )
            if cursor.rowcount == 1:
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
            cursor = await db.execute(
                "UPDATE feedbacks SET status = ?, updated_at = ?, last_error = ?"
                " WHERE feedback_id = ? AND status = 'processing'",
                (status.value, ts(now), None if status is FeedbackStatus.PROCESSED else reason[:2000], feedback_id),
            )
            if cursor.rowcount != 1:
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
        async with self._tx() as db:
            cursor = await db.execute(
                "SELECT f.feedback_id FROM feedbacks f LEFT JOIN generated_rules r ON r.feedback_id = f.feedback_id"
                " WHERE r.rule_id IS NULL AND (" + _abandoned("f") + ")",
                {"now": ts(now)},
            )
            ids = [row[0] for row in await cursor.fetchall()]
            for feedback_id in ids:
                await db.execute(
                    "UPDATE feedbacks SET status = 'pending', last_error = ?, updated_at = ? WHERE feedback_id = ?",
                    ("generation interrupted (the process stopped)", ts(now), feedback_id),
                )
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
