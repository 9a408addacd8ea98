"""Issue 15's property: every figure the store reports equals a full count. A stateful property test of the REAL
runtime (`open_runtime` on a SQLite file and a copy of config/, the offline generator behind a switch, a fake clock
that the machine moves on), driven through random submissions (bug, suggestion, praise, offensive feedback closed as
rejected, feedback the generator declines), generations (and generations that fail), edits, approvals, rejections,
deploys (full, and canaries of JSON files), promotes, rollbacks, replays, event deliveries and restarts (close the
runtime, open a new one on the same files), and failures: refused transitions, a canary of a text file, a deploy
into a rule file holding junk, and a database that cannot grow by a page (`PRAGMA max_page_count` on the store's own
writing connection: the next write that needs a page fails half way with "database or disk is full") while a
submission, an approval and a deploy are tried. With git history on (some examples), also deploys whose commit fails
(a held .git/index.lock) and a remote that goes away and comes back (pushes fail, then are retried).

After every step, what the store reports — `counts(since=...)`, `metrics_data(...)`, `digest_data(...)`,
`generation_totals(...)`, `evaluation_totals()`, `undelivered_event_count()`, the `total` of `list_feedback`,
`list_rules` and `list_deployments` for every filter value, and the status report and metrics built on them — is
compared with full `COUNT(*)` queries this test runs itself on the database file, over a separate read-only
`sqlite3` connection. Those queries are the figures' definition (the SQL storage/sqlite/reports.py ran when every
figure was a scan), so the test holds whatever the store maintains (triggers, counters, covering indexes). The
windows are taken around the fake clock, some ending exactly at "now" or at local midnight, since a change stamped
at the very boundary is where a maintained figure and a count part ways. A step that is refused must change no
figure at all.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Awaitable, Iterator
from contextlib import asynccontextmanager, closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiosqlite
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from autotrain.errors import (
    CanaryUnsupported,
    GenerationFailed,
    RuleFileInvalid,
    StoreBusy,
    StoreFull,
    TransitionRefused,
)
from autotrain.models import FeedbackIn, FeedbackStatus, FeedbackType, RuleStatus
from bot import git_history
from bot.runtime import Runtime, build_generator, open_runtime
from storage.sqlite import SqliteStore
from tests.conftest import ADMIN, REPORTER, SHIPPED_RULES, make_settings
from tests.fakes.generators import SwitchableGenerator

T = TypeVar("T")

JSON_FILE, TEXT_FILE = "fashion_rules.json", "prompt_v2.txt"
ZONE = "Asia/Ho_Chi_Minh"  # UTC+7: local midnight is not UTC midnight
START = datetime(2026, 3, 1, 16, 30, tzinfo=UTC)  # 23:30 local: the first moves of the clock cross midnight
ADVANCES = (timedelta(seconds=1), timedelta(minutes=10), timedelta(minutes=45), timedelta(hours=5), timedelta(days=1))
CALL_TIMEOUT = 60  # seconds for one service call: a hang fails the step instead of the whole run
BIG_FEEDBACK = {  # too big for the free room of a page: storing it needs new (overflow) pages
    "query": "tìm áo cho trời 35 độ",
    "ai_response": "áo khoác " * 800,
    "feedback_text": "Trời nóng quá " * 280,
    "feedback_type": "bug",
}
JUNK = b'{"rules": [ this is not JSON'


class FakeClock:
    """The runtime's clock: still within a step (so changes land exactly on the windows' "now"), moved by `tick`."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FailingGenerator:
    """What `SwitchableGenerator.inner` becomes for a generation that fails (the generator is down)."""

    name = "failing"
    quotes_feedback = False

    async def generate(self, feedback: Any, current_rules: Any, *, recurrence: Any = None) -> Any:
        raise RuntimeError("the generator is down")


# ---------------------------------------------------------------------- the windows the figures are asked for


def stamp(value: datetime) -> str:
    """How the store writes a time (UTC, microseconds), so that a comparison of stored times is a text one."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Windows:
    since: dict[str, datetime]  # counts(since=...)
    metrics: dict[str, dict[str, datetime]]  # metrics_data(**...)
    digest: dict[str, tuple[datetime, datetime]]  # digest_data(start=, end=)
    generations: dict[str, datetime | None]  # generation_totals(since=...)


def local_midnight(now: datetime, zone: ZoneInfo) -> datetime:
    return datetime.combine(now.astimezone(zone).date(), time.min, tzinfo=zone).astimezone(UTC)


def windows_at(now: datetime, zone: ZoneInfo, *, error_minutes: int, approval_days: int) -> Windows:
    midnight = local_midnight(now, zone)
    utc_midnight = datetime.combine(now.date(), time.min, tzinfo=UTC)
    return Windows(
        since={
            "local midnight": midnight,
            "now": now,
            "three days ago": now - timedelta(days=3),
        },
        metrics={
            # exactly what Monitor.metrics asks for (the status report's and /metrics's figures)
            "monitor": {
                "now": now,
                "error_window_start": now - timedelta(minutes=error_minutes),
                "day_start": midnight,
                "approval_window_start": now - timedelta(days=approval_days),
            },
            "narrow": {
                "now": now,
                "error_window_start": now,
                "day_start": utc_midnight,
                "approval_window_start": now - timedelta(hours=1),
            },
        },
        digest={
            "last 24 hours": (now - timedelta(hours=24), now),  # the scheduled digest's period
            "today, and an hour to come": (midnight, now + timedelta(hours=1)),
        },
        generations={"ever": None, "an hour ago": now - timedelta(hours=1)},
    )


# ---------------------------------------------------------------------- the full counts (the definition)

APPLIED = "SELECT COUNT(*) FROM deployments WHERE state = 'applied'"
UNCOMMITTED = "FROM deployments WHERE state = 'applied' AND commit_sha IS NULL AND commit_error IS NOT NULL"
UNPUSHED = "FROM deployments WHERE commit_sha IS NOT NULL AND pushed_at IS NULL AND push_error IS NOT NULL"
OLDEST_PENDING = "SELECT feedback_id, created_at FROM feedbacks WHERE status = 'pending' ORDER BY id LIMIT 1"
# the list filters: none, then each value of each filter
FEEDBACK_FILTERS = [(None, None), *((s, None) for s in FeedbackStatus), *((None, t) for t in FeedbackType)]
RULE_FILTERS = [(None, None), *((s, None) for s in RuleStatus), (None, JSON_FILE), (None, TEXT_FILE)]
GIT_FIGURES = ("uncommitted_deployments", "unpushed_deployments", "last_commit_error")


def scalar(db: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> Any:
    row = db.execute(sql, args).fetchone()
    return row[0] if row else None


def by_value(db: sqlite3.Connection, column: str, table: str, values: Any, condition: str = "", args: tuple = ()):
    found = dict(db.execute(f"SELECT {column}, COUNT(*) FROM {table} {condition} GROUP BY {column}", args).fetchall())
    return {value.value: found.get(value.value, 0) for value in values}


def oldest_pending(db: sqlite3.Connection) -> tuple[str | None, datetime | None]:
    row = db.execute(OLDEST_PENDING).fetchone()
    return (row[0], datetime.fromisoformat(row[1])) if row else (None, None)


def approval_seconds(db: sqlite3.Connection, start: datetime, end: datetime, *, end_inclusive: bool) -> list[float]:
    rows = db.execute(
        "SELECT created_at, approved_at FROM generated_rules WHERE approved_at >= ? AND approved_at "
        + ("<=" if end_inclusive else "<")
        + " ?",
        (stamp(start), stamp(end)),
    ).fetchall()
    # to the millisecond, as a store that has SQLite work them out (julianday) reports them; the fake clock's
    # times are whole seconds, so this is exact
    return sorted(round((datetime.fromisoformat(a) - datetime.fromisoformat(c)).total_seconds(), 3) for c, a in rows)


def counted(db: sqlite3.Connection, windows: Windows, rule_ids: list[str]) -> dict[str, Any]:
    """Every figure, by full count, keyed as `reported` keys what the store says."""
    figures: dict[str, Any] = {}
    feedback_by_status = by_value(db, "status", "feedbacks", FeedbackStatus)
    feedback_by_type = by_value(db, "feedback_type", "feedbacks", FeedbackType)
    rules_by_status = by_value(db, "status", "generated_rules", RuleStatus)
    uncommitted = scalar(db, f"SELECT COUNT(*) {UNCOMMITTED}")
    last_error = scalar(db, f"SELECT commit_error {UNCOMMITTED} ORDER BY id DESC LIMIT 1")
    unpushed = scalar(db, f"SELECT COUNT(*) {UNPUSHED}")
    oldest_id, oldest_at = oldest_pending(db)

    for label, since in windows.since.items():
        figures |= {
            f"counts[{label}].feedback_by_status": feedback_by_status,
            f"counts[{label}].feedback_by_type": feedback_by_type,
            f"counts[{label}].rules_by_status": rules_by_status,
            f"counts[{label}].deployments_total": scalar(db, f"{APPLIED} AND rollback_of IS NULL"),
            f"counts[{label}].rollbacks_total": scalar(db, f"{APPLIED} AND rollback_of IS NOT NULL"),
            f"counts[{label}].deployed_since": scalar(
                db, f"{APPLIED} AND rollback_of IS NULL AND deployed_at >= ?", (stamp(since),)
            ),
            f"counts[{label}].uncommitted_deployments": uncommitted,
            f"counts[{label}].last_commit_error": last_error,
        }

    for label, w in windows.metrics.items():
        now = stamp(w["now"])
        attempts, failures = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(outcome = 'failed'), 0) FROM generations WHERE at >= ? AND at <= ?",
            (stamp(w["error_window_start"]), now),
        ).fetchone()
        figures |= {
            f"metrics[{label}].pending_feedback": feedback_by_status[FeedbackStatus.PENDING.value],
            f"metrics[{label}].oldest_pending_feedback_id": oldest_id,
            f"metrics[{label}].oldest_pending_at": oldest_at,
            f"metrics[{label}].pending_rules": rules_by_status[RuleStatus.PENDING.value],
            f"metrics[{label}].feedback_by_status": feedback_by_status,
            f"metrics[{label}].feedback_by_type": feedback_by_type,
            f"metrics[{label}].rules_by_status": rules_by_status,
            f"metrics[{label}].generation_attempts": attempts,
            f"metrics[{label}].generation_failures": failures,
            f"metrics[{label}].deployed_today": scalar(
                db,
                f"{APPLIED} AND rollback_of IS NULL AND deployed_at >= ? AND deployed_at <= ?",
                (stamp(w["day_start"]), now),
            ),
            f"metrics[{label}].approval_seconds": approval_seconds(
                db, w["approval_window_start"], w["now"], end_inclusive=True
            ),
            f"metrics[{label}].uncommitted_deployments": uncommitted,
            f"metrics[{label}].unpushed_deployments": unpushed,
        }

    for label, (start, end) in windows.digest.items():
        period = (stamp(start), stamp(end))

        def in_period(column: str, period: tuple[str, str] = period) -> int:
            return scalar(db, f"SELECT COUNT(*) FROM generated_rules WHERE {column} >= ? AND {column} < ?", period)

        deployed = f"{APPLIED} AND deployed_at >= ? AND deployed_at < ?"
        figures |= {
            f"digest[{label}].feedback_by_type": by_value(
                db, "feedback_type", "feedbacks", FeedbackType, "WHERE created_at >= ? AND created_at < ?", period
            ),
            f"digest[{label}].rules_generated": in_period("created_at"),
            f"digest[{label}].rules_approved": in_period("approved_at"),
            f"digest[{label}].rules_rejected": in_period("rejected_at"),
            f"digest[{label}].rules_deployed": scalar(  # rules: a canary and its promotion are one
                db, deployed.replace("COUNT(*)", "COUNT(DISTINCT rule_id)") + " AND rollback_of IS NULL", period
            ),
            f"digest[{label}].rules_rolled_back": scalar(db, deployed + " AND rollback_of IS NOT NULL", period),
            f"digest[{label}].pending_feedback": feedback_by_status[FeedbackStatus.PENDING.value],
            f"digest[{label}].pending_rules": rules_by_status[RuleStatus.PENDING.value],
            f"digest[{label}].oldest_pending_feedback_id": oldest_id,
            f"digest[{label}].oldest_pending_at": oldest_at,
            f"digest[{label}].approval_seconds": approval_seconds(db, start, end, end_inclusive=False),
            f"digest[{label}].feedback_in_period": scalar(
                db, "SELECT COUNT(*) FROM feedbacks WHERE created_at >= ? AND created_at < ?", period
            ),
            f"digest[{label}].canaries": [
                tuple(row)
                for row in db.execute(
                    "SELECT rule_id, rollout_percent FROM generated_rules"
                    " WHERE status = 'deployed' AND rollout_percent < 100 ORDER BY id"
                )
            ],
            f"digest[{label}].deployed": [  # each rule once, by its first deployment of the period
                row[0]
                for row in db.execute(
                    "SELECT rule_id FROM deployments WHERE state = 'applied' AND rollback_of IS NULL"
                    " AND deployed_at >= ? AND deployed_at < ? GROUP BY rule_id ORDER BY MIN(id)",
                    period,
                )
            ],
        }

    for label, since in windows.generations.items():
        condition, args = ("WHERE at >= ?", (stamp(since),)) if since is not None else ("", ())
        row = db.execute(
            "SELECT COUNT(*), SUM(outcome = 'succeeded'), SUM(outcome = 'failed'), SUM(outcome = 'declined'),"
            f" SUM(input_tokens), SUM(output_tokens), AVG(latency_ms) FROM generations {condition}",
            args,
        ).fetchone()
        attempts, succeeded, failed, declined = (int(row[i] or 0) for i in range(4))
        figures[f"generation_totals[{label}]"] = {
            "attempts": attempts,
            "succeeded": succeeded,
            "failed": failed,
            "declined": declined,
            "error_rate": round(failed / attempts, 4) if attempts else 0.0,
            "input_tokens": int(row[4] or 0),
            "output_tokens": int(row[5] or 0),
            "average_latency_ms": round(row[6]) if row[6] is not None else None,
        }

    evaluations = {"runs": 0, "tokens": 0, "latency_ms": 0, "passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for status, runs, tokens, latency in db.execute(
        "SELECT status, COUNT(*), COALESCE(SUM(tokens), 0), COALESCE(SUM(latency_ms), 0)"
        " FROM evaluations GROUP BY status"
    ):
        evaluations[status] = runs
        evaluations["runs"] += runs
        evaluations["tokens"] += tokens
        evaluations["latency_ms"] += latency
    figures["evaluation_totals"] = evaluations
    figures["undelivered_event_count"] = scalar(db, "SELECT COUNT(*) FROM events WHERE delivered_at IS NULL")

    for status, kind in FEEDBACK_FILTERS:
        column, value = ("status", status) if kind is None else ("feedback_type", kind)
        condition, args = (f" WHERE {column} = ?", (value.value,)) if value is not None else ("", ())
        figures[f"list_feedback[status={status}, type={kind}].total"] = scalar(
            db, "SELECT COUNT(*) FROM feedbacks" + condition, args
        )
    for status, module in RULE_FILTERS:
        column, value = ("status", status) if module is None else ("module_name", module)
        condition, args = (f" WHERE {column} = ?", (str(value),)) if value is not None else ("", ())
        figures[f"list_rules[status={status}, module={module}].total"] = scalar(
            db, "SELECT COUNT(*) FROM generated_rules" + condition, args
        )
    figures["list_deployments[all].total"] = scalar(db, APPLIED)
    for rule_id in rule_ids:
        figures[f"list_deployments[{rule_id}].total"] = scalar(db, f"{APPLIED} AND rule_id = ?", (rule_id,))
    return figures


async def reported(store: SqliteStore, windows: Windows, rule_ids: list[str]) -> dict[str, Any]:
    """Every figure, as the store reports it (the public methods the status, /metrics, alerts and digest read)."""
    figures: dict[str, Any] = {}
    for label, since in windows.since.items():
        counts = (await store.counts(since=since)).model_dump()
        figures |= {f"counts[{label}].{name}": value for name, value in counts.items()}
    for label, w in windows.metrics.items():
        metrics = (await store.metrics_data(**w)).model_dump()
        metrics["approval_seconds"] = sorted(round(seconds, 3) for seconds in metrics["approval_seconds"])
        figures |= {f"metrics[{label}].{name}": value for name, value in metrics.items()}
    for label, (start, end) in windows.digest.items():
        digest = await store.digest_data(start=start, end=end)
        figures |= {
            f"digest[{label}].{name}": value
            for name, value in digest.model_dump(
                include={
                    "feedback_by_type",
                    "rules_generated",
                    "rules_approved",
                    "rules_rejected",
                    "rules_deployed",
                    "rules_rolled_back",
                    "pending_feedback",
                    "pending_rules",
                    "oldest_pending_feedback_id",
                    "oldest_pending_at",
                }
            ).items()
        }
        figures |= {
            f"digest[{label}].approval_seconds": sorted(round(seconds, 3) for seconds in digest.approval_seconds),
            f"digest[{label}].feedback_in_period": len(digest.feedback_texts),
            f"digest[{label}].canaries": [(c.rule_id, c.rollout_percent) for c in digest.canaries],
            f"digest[{label}].deployed": [d.rule_id for d in digest.deployed],
        }
        assert len(digest.feedback_users) == len(digest.feedback_texts)
    for label, since in windows.generations.items():
        figures[f"generation_totals[{label}]"] = (await store.generation_totals(since=since)).model_dump()
    figures["evaluation_totals"] = await store.evaluation_totals()
    figures["undelivered_event_count"] = await store.undelivered_event_count()
    for status, kind in FEEDBACK_FILTERS:
        page = await store.list_feedback(status=status, feedback_type=kind, limit=1, offset=0)
        figures[f"list_feedback[status={status}, type={kind}].total"] = page.total
    for status, module in RULE_FILTERS:
        page = await store.list_rules(status=status, module_name=module, limit=1, offset=0)
        figures[f"list_rules[status={status}, module={module}].total"] = page.total
    figures["list_deployments[all].total"] = (await store.list_deployments(rule_id=None, limit=1, offset=0)).total
    for rule_id in rule_ids:
        page = await store.list_deployments(rule_id=rule_id, limit=1, offset=0)
        figures[f"list_deployments[{rule_id}].total"] = page.total
    return figures


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return [
        f"{name}: reported {actual.get(name, '(missing)')!r}, full count {expected[name]!r}"
        for name in expected
        if actual.get(name, "(missing)") != expected[name]
    ]


# ---------------------------------------------------------------------- a database that cannot grow


def writer(store: SqliteStore) -> aiosqlite.Connection:
    """The connection the store writes with (`_connection()`, as tests/test_disk_full.py reaches it; the store's
    read connections, if it has any, are left alone: a statement of ours left on one would pin its snapshot)."""
    return store._connection()


@asynccontextmanager
async def database_full(store: SqliteStore):
    """Inside, the database cannot grow by one page (as on a full disk): the next write that needs a page
    fails with SQLITE_FULL, half way through its transaction."""
    db = writer(store)
    # the WAL folded back first, as on a disk that filled up (best effort: the point is the cap below; a
    # statement a failed write left active on the writer makes this "database table is locked")
    with suppress(sqlite3.OperationalError):
        await (await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")).fetchall()
    [(pages,)] = await (await db.execute("PRAGMA page_count")).fetchall()
    [(limit,)] = await (await db.execute("PRAGMA max_page_count")).fetchall()
    await (await db.execute(f"PRAGMA max_page_count = {int(pages)}")).fetchall()
    try:
        yield
    finally:
        await (await db.execute(f"PRAGMA max_page_count = {int(limit)}")).fetchall()


# ---------------------------------------------------------------------- the machine


def having(*statuses: RuleStatus, module: str | None = None, canary: bool | None = None):
    """A precondition: some rule is in one of these states (in this file; a canary or not)."""
    return lambda machine: bool(machine.rules_in(*statuses, module=module, canary=canary))


class FiguresMachine(RuleBasedStateMachine):
    @initialize(git=st.sampled_from([False, False, True]))
    def start(self, git: bool) -> None:
        self.loop = asyncio.new_event_loop()
        self.runtime: Runtime | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="figures-machine-"))
        self.rules_dir = self.folder / "rules"
        shutil.copytree(SHIPPED_RULES, self.rules_dir, ignore=shutil.ignore_patterns(".autotrain"))
        self.git = git
        self.remote = self.folder / "remote.git"
        self.remote_away = self.folder / "remote-gone.git"
        overrides: dict[str, Any] = {"timezone": ZONE}
        if git:
            subprocess.run(["git", "init", "-q", "--bare", str(self.remote)], check=True, capture_output=True)
            overrides |= {"git_history": True, "git_remote": str(self.remote)}
        self.settings = make_settings(self.folder, self.rules_dir, **overrides)
        self.clock = FakeClock(START)
        self.generator = SwitchableGenerator(build_generator(self.settings))
        self.n = 0  # makes every text and rule line unique
        self.feedback: dict[str, tuple[FeedbackStatus, FeedbackType]] = {}
        self.rules: dict[str, tuple[RuleStatus, str, int | None]] = {}  # status, file, rollout percent
        self.undelivered = 0
        self.runtime = self.run(self.open())

    async def open(self) -> Runtime:
        return await open_runtime(self.settings, clock=self.clock, generator=self.generator, reconcile=True)

    def teardown(self) -> None:
        if getattr(self, "loop", None) is None:
            return
        try:
            if self.runtime is not None:
                self.loop.run_until_complete(asyncio.wait_for(self.runtime.close(), CALL_TIMEOUT))
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    # -------------------------------------------------------------- plumbing

    def run(self, coroutine: Awaitable[T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, CALL_TIMEOUT))

    def refused(self, coroutine: Awaitable[Any], *errors: type[BaseException]) -> BaseException:
        try:
            self.run(coroutine)
        except errors as exc:
            return exc
        raise AssertionError(f"expected {[e.__name__ for e in errors]}, it went through")

    @property
    def service(self):
        assert self.runtime is not None
        return self.runtime.service

    @property
    def store(self) -> SqliteStore:
        assert self.runtime is not None
        return self.runtime.store

    @contextmanager
    def database(self) -> Iterator[sqlite3.Connection]:
        """A plain read-only connection of the test's own on the database file."""
        uri = f"file:{self.settings.database_path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            yield db

    def windows(self) -> Windows:
        return windows_at(
            self.clock.now,
            ZoneInfo(ZONE),
            error_minutes=self.settings.alert_error_rate_window_minutes,
            approval_days=self.settings.approval_window_days,
        )

    def full_counts(self) -> dict[str, Any]:
        """Every figure by full count, now."""
        with self.database() as db:
            return counted(db, self.windows(), self.deployed_ids(db))

    def deployed_ids(self, db: sqlite3.Connection) -> list[str]:
        """The rules with a deployment row, whose list_deployments total is checked (besides the unfiltered one)."""
        return [row[0] for row in db.execute("SELECT DISTINCT rule_id FROM deployments ORDER BY rule_id")]

    def refresh(self) -> None:
        """What the machine picks from: every feedback and rule as the database holds it now."""
        with self.database() as db:
            self.feedback = {
                fid: (FeedbackStatus(status), FeedbackType(kind))
                for fid, status, kind in db.execute("SELECT feedback_id, status, feedback_type FROM feedbacks")
            }
            self.undelivered = scalar(db, "SELECT COUNT(*) FROM events WHERE delivered_at IS NULL")
            self.rules = {
                rid: (RuleStatus(status), module, percent)
                for rid, status, module, percent in db.execute(
                    "SELECT rule_id, status, module_name, rollout_percent FROM generated_rules"
                )
            }

    def feedback_in(self, status: FeedbackStatus, *, praise: bool = False) -> list[str]:
        return sorted(
            fid
            for fid, (s, kind) in self.feedback.items()
            if s is status and (praise or kind is not FeedbackType.PRAISE)
        )

    def rules_in(self, *statuses: RuleStatus, module: str | None = None, canary: bool | None = None) -> list[str]:
        return sorted(
            rid
            for rid, (status, file, percent) in self.rules.items()
            if status in statuses
            and (module is None or file == module)
            and (canary is None or ((percent or 100) < 100) == canary)
        )

    def pick(self, data: st.DataObject, ids: list[str], label: str) -> str:
        return data.draw(st.sampled_from(ids), label=label)

    def settled(self) -> bool:
        """Nothing a crash or a full disk left half done (a pending deployment, a feedback held by a generation),
        which the catch-up before a change, or the reconcile at start-up, would settle."""
        with self.database() as db:
            return not scalar(
                db,
                "SELECT (SELECT COUNT(*) FROM deployments WHERE state = 'pending')"
                " + (SELECT COUNT(*) FROM feedbacks WHERE status = 'processing')",
            )

    def unchanged(self, before: dict[str, Any] | None, *, git_too: bool = True) -> None:
        """A refused step changes no figure (git's aside, when a catch-up may commit or push what waited).
        `before` is None when something was left half done: the step may settle it first."""
        if before is None:
            return
        after = self.full_counts()
        keep = [name for name in before if git_too or not name.endswith(GIT_FIGURES)]
        diff = differences({n: before[n] for n in keep}, {n: after[n] for n in keep})
        assert not diff, "a refused step changed figures:\n" + "\n".join(diff)

    def has_pending_feedback(self) -> bool:
        return bool(self.feedback_in(FeedbackStatus.PENDING))

    # -------------------------------------------------------------- feedback and generation

    @rule(kind=st.sampled_from(["bug", "bug", "suggestion", "praise", "offensive", "declined"]))
    def submit(self, kind: str) -> None:
        """Feedback arrives; praise is settled at once, offensive feedback is closed as rejected, and feedback
        quoting a link is declined by the generator later."""
        self.submit_one(kind)

    def submit_one(self, kind: str) -> str:
        feedback = self.run(self.service.submit(self.feedback_of(kind), REPORTER))
        expected = {"praise": FeedbackStatus.PROCESSED, "offensive": FeedbackStatus.REJECTED}
        assert feedback.status is expected.get(kind, FeedbackStatus.PENDING), feedback
        return feedback.feedback_id

    def feedback_of(self, kind: str) -> FeedbackIn:
        """A feedback of this kind, with a text no other has."""
        self.n += 1
        texts = {
            "bug": (f"Góp ý số {self.n}: trời nóng mà bot vẫn gợi ý áo khoác", FeedbackType.BUG),
            "suggestion": (f"Góp ý số {self.n}: nên hỏi chiều cao trước khi gợi ý đầm", FeedbackType.SUGGESTION),
            "praise": (f"Lời khen số {self.n}: tư vấn rất hay", FeedbackType.PRAISE),
            "offensive": (f"Góp ý số {self.n}: bot này vcl", FeedbackType.BUG),
            "declined": (f"Góp ý số {self.n}: xem mẫu ở http://shop.example/{self.n}", FeedbackType.BUG),
        }
        text, kind_of = texts[kind]
        return FeedbackIn(
            query=f"tìm áo số {self.n}",
            ai_response="Mình gợi ý áo khoác nỉ này...",
            feedback_text=text,
            feedback_type=kind_of,
            user_id=f"u-{self.n % 7}",
        )

    @rule(module=st.sampled_from([JSON_FILE, JSON_FILE, TEXT_FILE]))
    def fast_track(self, module: str) -> None:
        """A complaint all the way to an approved rule in one step (so that deploys come early and often)."""
        rule_id = self.generate_one(self.submit_one("bug"), module)
        assert self.run(self.service.approve(rule_id, ADMIN)).status is RuleStatus.APPROVED

    @precondition(has_pending_feedback)
    @rule(
        data=st.data(),
        module=st.sampled_from([JSON_FILE, JSON_FILE, TEXT_FILE]),
        failing=st.sampled_from([False, False, False, True]),
    )
    def generate(self, data: st.DataObject, module: str, failing: bool) -> None:
        """A rule for a pending feedback (the offline generator), given a line of its own in `module`. Or the
        generator is down: a failed generation is logged, the feedback stays pending. Feedback quoting a link
        is declined (a declined generation; the feedback is closed as rejected)."""
        feedback_id = self.pick(data, self.feedback_in(FeedbackStatus.PENDING), "feedback")
        if failing:
            self.generator.inner, working = FailingGenerator(), self.generator.inner
            try:
                self.refused(self.service.generate(feedback_id, REPORTER), GenerationFailed)
            finally:
                self.generator.inner = working
            assert self.run(self.service.get_feedback(feedback_id)).status is FeedbackStatus.PENDING
            return
        try:
            self.generate_one(feedback_id, module)
        except TransitionRefused:
            assert self.run(self.service.get_feedback(feedback_id)).status is FeedbackStatus.REJECTED
            event("generation declined")

    def generate_one(self, feedback_id: str, module: str) -> str:
        rule = self.run(self.service.generate(feedback_id, REPORTER))
        self.n += 1
        edited = self.run(
            self.service.edit(
                rule.rule_id,
                ADMIN,
                new_rule=f"- Quy tắc thử số {self.n}: hỏi thời tiết trước khi gợi ý áo",
                module_name=module,
                old_rule="",
            )
        )
        assert edited.status is RuleStatus.PENDING and edited.module_name == module, edited
        return rule.rule_id

    # -------------------------------------------------------------- review

    @precondition(having(RuleStatus.PENDING, RuleStatus.APPROVED))
    @rule(data=st.data(), verdict=st.sampled_from(["approve", "approve", "reject"]))
    def review(self, data: st.DataObject, verdict: str) -> None:
        """Approve a pending rule, or reject a pending or approved one."""
        pending = self.rules_in(RuleStatus.PENDING)
        if verdict == "approve" and pending:
            rule_id = self.pick(data, pending, "rule")
            assert self.run(self.service.approve(rule_id, ADMIN)).status is RuleStatus.APPROVED
            return
        rule_id = self.pick(data, self.rules_in(RuleStatus.PENDING, RuleStatus.APPROVED), "rule")
        assert self.run(self.service.reject(rule_id, ADMIN, "not this one")).status is RuleStatus.REJECTED

    @precondition(lambda self: bool(self.rules))
    @rule(data=st.data())
    def evaluate(self, data: st.DataObject) -> None:
        """A replay asked for by an admin (skipped here: no chatbot, no judge), counted in evaluation_totals."""
        rule_id = self.pick(data, sorted(self.rules), "rule")
        self.run(self.service.evaluate(rule_id, ADMIN))

    # -------------------------------------------------------------- deploys

    @precondition(having(RuleStatus.APPROVED))
    @rule(
        data=st.data(),
        how=st.sampled_from(["everyone", "everyone", "canary 10", "canary 50", "junk in the file", "git locked"]),
    )
    def deploy(self, data: st.DataObject, how: str) -> None:
        """A deploy to everyone, or a canary (refused for a text file: nothing counted); or into a rule file
        someone filled with junk (refused: nothing counted); or while another git process holds the index (the
        deploy stands, its commit fails: an uncommitted deployment until a later change of that file, or a
        restart, commits it)."""
        rule_id = self.pick(data, self.rules_in(RuleStatus.APPROVED), "rule")
        module = self.rules[rule_id][1]
        share = int(how.removeprefix("canary ")) if how.startswith("canary") else 100
        if share < 100 and module != JSON_FILE:
            before = self.full_counts() if self.settled() else None
            self.refused(self.service.deploy(rule_id, ADMIN, rollout_percent=share), CanaryUnsupported)
            self.unchanged(before)
            return
        if how == "junk in the file":
            path = self.rules_dir / module
            content = path.read_bytes()
            before = self.full_counts() if self.settled() else None
            path.write_bytes(JUNK if module.endswith(".json") else b"- \xff\xfe not UTF-8 \x00")
            try:
                self.refused(self.service.deploy(rule_id, ADMIN), RuleFileInvalid)
            finally:
                path.write_bytes(content)
            self.unchanged(before, git_too=False)  # (the catch-up before it may commit what waited)
            assert self.run(self.service.get_rule(rule_id)).status is RuleStatus.APPROVED
            return
        locked = how == "git locked" and self.git
        lock = self.rules_dir / ".git" / "index.lock"
        retries = getattr(git_history, "INDEX_LOCK_RETRIES", None)
        if locked:  # a fresh lock: another git process may hold it, so it stays (and no retrying for 2 s here)
            lock.write_text("")
            if retries is not None:
                git_history.INDEX_LOCK_RETRIES = 1
        try:
            result = self.run(self.service.deploy(rule_id, ADMIN, rollout_percent=share))
        finally:
            if retries is not None:
                git_history.INDEX_LOCK_RETRIES = retries
            lock.unlink(missing_ok=True)
        assert result.rule.status is RuleStatus.DEPLOYED and result.rule.rollout_percent == share, result.rule
        if locked:
            assert result.deployment.commit_sha is None, result.deployment

    @precondition(having(RuleStatus.DEPLOYED, canary=True))
    @rule(data=st.data())
    def promote(self, data: st.DataObject) -> None:
        rule_id = self.pick(data, self.rules_in(RuleStatus.DEPLOYED, canary=True), "rule")
        result = self.run(self.service.promote(rule_id, ADMIN))
        assert result.rule.status is RuleStatus.DEPLOYED and result.rule.rollout_percent == 100, result.rule

    @precondition(having(RuleStatus.DEPLOYED))
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        rule_id = self.pick(data, self.rules_in(RuleStatus.DEPLOYED), "rule")
        assert self.run(self.service.rollback(rule_id, ADMIN)).rule.status is RuleStatus.ROLLED_BACK

    # -------------------------------------------------------------- failures

    @precondition(lambda self: bool(self.rules))
    @rule(data=st.data())
    def refused_transition(self, data: st.DataObject) -> None:
        """A change the rule's state does not allow (approve a deployed rule, deploy a rejected one, ...)."""
        rule_id = self.pick(data, sorted(self.rules), "rule")
        status = self.rules[rule_id][0]
        attempt = {
            RuleStatus.PENDING: lambda: self.service.rollback(rule_id, ADMIN),
            RuleStatus.APPROVED: lambda: self.service.promote(rule_id, ADMIN),
            RuleStatus.DEPLOYED: lambda: self.service.approve(rule_id, ADMIN),
            RuleStatus.ROLLED_BACK: lambda: self.service.deploy(rule_id, ADMIN),
            RuleStatus.REJECTED: lambda: self.service.deploy(rule_id, ADMIN),
        }[status]
        before = self.full_counts() if self.settled() else None
        self.refused(attempt(), TransitionRefused)
        self.unchanged(before)

    @rule(data=st.data(), together=st.booleans())
    def while_database_full(self, data: st.DataObject, together: bool) -> None:
        """The database cannot grow: a big submission fails half way (SQLITE_FULL, StoreFull); a small
        submission and an approval are tried, one after another or at the same time as the big one (then they
        may share its group commit), and a deploy; then there is room again. Each is answered truthfully:
        stored when it says so, not at all when it says the store is full or busy."""
        pending, approved = self.rules_in(RuleStatus.PENDING), self.rules_in(RuleStatus.APPROVED)
        to_approve = self.pick(data, pending, "to approve") if pending else None
        to_deploy = self.pick(data, approved, "to deploy") if approved else None
        small = self.feedback_of("bug")
        outcomes = self.run(self._while_full(small, to_approve, to_deploy, together=together))
        with self.database() as db:
            stored = scalar(db, "SELECT COUNT(*) FROM feedbacks WHERE feedback_text = ?", (small.feedback_text,))
            assert stored == (outcomes["small submission"] == "done"), (outcomes, stored)
            if to_approve is not None:
                status = scalar(db, "SELECT status FROM generated_rules WHERE rule_id = ?", (to_approve,))
                assert status == ("approved" if outcomes["approval"] == "done" else "pending"), (outcomes, status)
        for what, outcome in outcomes.items():
            event(f"full{', together' if together else ''}: {what} {outcome}")

    async def _while_full(
        self, small: FeedbackIn, to_approve: str | None, to_deploy: str | None, *, together: bool
    ) -> dict[str, str]:
        attempts = {
            "big submission": lambda: self.service.submit(FeedbackIn(**BIG_FEEDBACK), REPORTER),
            "small submission": lambda: self.service.submit(small, REPORTER),
        }
        if to_approve is not None:
            attempts["approval"] = lambda: self.service.approve(to_approve, ADMIN)
        outcomes: dict[str, str] = {}
        deploying = None
        async with database_full(self.store):
            if together:
                results = await asyncio.gather(*(attempt() for attempt in attempts.values()), return_exceptions=True)
            else:
                results = []
                for attempt in attempts.values():
                    try:
                        results.append(await attempt())
                    except StoreBusy as exc:
                        results.append(exc)
            for what, result in zip(attempts, results, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, StoreBusy):
                    raise result
                outcomes[what] = "refused" if isinstance(result, StoreBusy) else "done"
            big = results[0]
            assert isinstance(big, StoreFull if not together else StoreBusy), f"the big submission: {big!r}"
            if to_deploy is not None:
                # a deploy whose file is written waits for the database to record it: give it room soon
                deploying = asyncio.ensure_future(self.service.deploy(to_deploy, ADMIN))
                await asyncio.wait([deploying], timeout=0.2)
        if deploying is not None:
            try:
                await deploying
                outcomes["deploy"] = "done"
            except StoreBusy:
                outcomes["deploy"] = "refused"
        return outcomes

    @precondition(lambda self: self.git)
    @rule(what=st.sampled_from(["toggle", "toggle", "retry"]))
    def git_remote(self, what: str) -> None:
        """The git remote becomes unreachable (pushes fail: unpushed deployments) or reachable again; or the
        scheduler retries the pushes that failed."""
        if what == "retry":
            assert self.runtime is not None
            self.run(self.runtime.push_pending())
        elif self.remote.exists():
            self.remote.rename(self.remote_away)
        else:
            self.remote_away.rename(self.remote)

    # -------------------------------------------------------------- time, events, restarts

    @rule(by=st.sampled_from(ADVANCES))
    def tick(self, by: timedelta) -> None:
        self.clock.now += by

    @precondition(lambda self: self.undelivered > 0)
    @rule()
    def deliver_events(self) -> None:
        """The event dispatcher delivers what is ready (undelivered_event_count goes down)."""
        assert self.runtime is not None
        self.run(self.runtime.events.drain())

    @rule()
    def restart(self) -> None:
        """Close the runtime and open a new one on the same database and folder."""
        before = self.full_counts() if self.settled() else None
        assert self.runtime is not None
        runtime, self.runtime = self.runtime, None
        self.run(runtime.close())
        self.runtime = self.run(self.open())
        self.unchanged(before, git_too=False)  # (the reconcile at start-up commits a change that waited)

    # -------------------------------------------------------------- the property

    @invariant()
    def every_figure_is_a_full_count(self) -> None:
        if self.runtime is None:
            return
        self.refresh()
        windows = self.windows()
        with self.database() as db:
            rule_ids = self.deployed_ids(db)
            expected = counted(db, windows, rule_ids)
        actual = self.run(reported(self.store, windows, rule_ids))
        diff = differences(expected, actual)
        assert not diff, "figures that are not the full count:\n" + "\n".join(diff)
        self.status_and_metrics_agree(expected)

    def status_and_metrics_agree(self, expected: dict[str, Any]) -> None:
        """What /status and /metrics serve is built on the same figures."""
        status = self.run(self.service.status())
        metrics = status.metrics
        assert metrics is not None and metrics.at == self.clock.now
        counts, window = "counts[local midnight]", "metrics[monitor]"
        served = {
            f"{counts}.feedback_by_status": status.feedback_by_status,
            f"{counts}.feedback_by_type": status.feedback_by_type,
            f"{counts}.rules_by_status": status.rules_by_status,
            f"{counts}.deployments_total": status.deployments_total,
            f"{counts}.deployed_since": status.deployed_today,
            f"{counts}.rollbacks_total": status.rollbacks_total,
            f"{counts}.uncommitted_deployments": status.uncommitted_deployments,
            f"{counts}.last_commit_error": status.last_commit_error,
            f"{window}.pending_feedback": status.pending_feedback,
            "generation_totals[ever]": status.generation.model_dump(),
            "undelivered_event_count": status.events_undelivered,
            "evaluation_totals": status.evaluation,
        }
        approvals = expected[f"{window}.approval_seconds"]
        for name, value in {
            "pending_feedback": metrics.pending_feedback,
            "oldest_pending_feedback_id": metrics.oldest_pending_feedback_id,
            "oldest_pending_at": metrics.oldest_pending_at,
            "pending_rules": metrics.pending_rules,
            "feedback_by_status": metrics.feedback_by_status,
            "feedback_by_type": metrics.feedback_by_type,
            "rules_by_status": metrics.rules_by_status,
            "generation_attempts": metrics.generation_attempts_in_window,
            "generation_failures": metrics.generation_failures_in_window,
            "deployed_today": metrics.deployed_today,
            "uncommitted_deployments": metrics.uncommitted_deployments,
            "unpushed_deployments": metrics.unpushed_deployments,
        }.items():
            served[f"{window}.{name}"] = value
        assert metrics.approvals_in_window == len(approvals), (metrics.approvals_in_window, approvals)
        diff = differences({name: expected[name] for name in served}, served)
        assert not diff, "/status or /metrics figures that are not the full count:\n" + "\n".join(diff)


FiguresMachine.TestCase.settings = settings(
    max_examples=10,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFiguresAreFullCounts = FiguresMachine.TestCase
