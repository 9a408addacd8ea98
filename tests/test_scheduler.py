"""The scheduler inside `autotrain serve`: its jobs and triggers, job hygiene, the lease / run key across two
processes, and the app's lifespan starting and stopping it (one short real-time run)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from autotrain.monitoring import AlertDecision
from bot.api import create_app
from bot.runtime import Runtime, open_runtime
from bot.scheduler import JOB_DEFAULTS, build_scheduler, crontab_trigger, digest_key, logged
from tests.conftest import make_settings, submit
from tests.fakes.clock import FakeClock
from tests.fakes.monitoring import Opener, RecordingSink

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)  # a Thursday; 15:00 in Ho Chi Minh City
HCM = ZoneInfo("Asia/Ho_Chi_Minh")


def feedback(n: int) -> dict[str, str]:
    return {"query": f"câu hỏi {n}", "feedback_text": f"Góp ý số {n}", "feedback_type": "bug"}


@pytest.fixture
async def started() -> AsyncIterator[Callable[[AsyncIOScheduler], AsyncIOScheduler]]:
    """Start schedulers paused (jobs get their defaults, nothing runs); shut them down at the end."""
    schedulers: list[AsyncIOScheduler] = []

    def start(scheduler: AsyncIOScheduler) -> AsyncIOScheduler:
        scheduler.start(paused=True)
        schedulers.append(scheduler)
        return scheduler

    yield start
    for scheduler in schedulers:
        if scheduler.running:
            scheduler.shutdown(wait=False)


# ---------------------------------------------------------------------- jobs and triggers


async def test_jobs_triggers_and_defaults(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener, started: Callable[[AsyncIOScheduler], AsyncIOScheduler]
) -> None:
    settings = make_settings(
        tmp_path, rules_dir, alert_interval_seconds=120, digest_cron="30 7 * * *", timezone="Asia/Ho_Chi_Minh"
    )
    runtime, _ = await open_monitored(settings, FakeClock(T0))
    scheduler = started(build_scheduler(runtime))

    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"alerts", "digest", "settle_pending"}  # no webhooks configured

    alerts = jobs["alerts"].trigger
    assert isinstance(alerts, IntervalTrigger)
    assert alerts.interval == timedelta(seconds=120)

    digest = jobs["digest"].trigger
    assert isinstance(digest, CronTrigger)
    assert str(digest.timezone) == "Asia/Ho_Chi_Minh"
    # 07:30 local: from Thursday 15:00 local the next run is Friday 07:30 local, which is 00:30 UTC
    friday = digest.get_next_fire_time(None, T0.astimezone(HCM))
    assert friday == datetime(2026, 11, 27, 7, 30, tzinfo=HCM)
    assert friday.astimezone(UTC) == datetime(2026, 11, 27, 0, 30, tzinfo=UTC)
    # from Thursday 07:00 local (00:00 UTC) the same morning's run is next
    assert digest.get_next_fire_time(None, datetime(2026, 11, 26, 0, 0, tzinfo=UTC)) == datetime(
        2026, 11, 26, 7, 30, tzinfo=HCM
    )

    for job in jobs.values():
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.misfire_grace_time == JOB_DEFAULTS["misfire_grace_time"]
        assert job.misfire_grace_time is not None and job.misfire_grace_time > 0


async def test_default_digest_cron_is_daily_at_nine_in_the_timezone(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    settings = make_settings(tmp_path, rules_dir)  # AUTOTRAIN_DIGEST_CRON "0 9 * * *", AUTOTRAIN_TIMEZONE UTC
    runtime, _ = await open_monitored(settings, FakeClock(T0))
    scheduler = build_scheduler(runtime)
    trigger = scheduler.get_job("digest").trigger
    assert trigger.get_next_fire_time(None, T0) == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, T0 + timedelta(hours=2)) == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert scheduler.get_job("alerts").trigger.interval == timedelta(seconds=300)


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        # standard crontab weekdays: 0 (and 7) is Sunday, 1-5 is Monday to Friday
        ("30 7 * * 1-5", datetime(2026, 11, 27, 8, 0, tzinfo=HCM), datetime(2026, 11, 30, 7, 30, tzinfo=HCM)),
        ("30 7 * * 1-5", datetime(2026, 11, 26, 8, 0, tzinfo=HCM), datetime(2026, 11, 27, 7, 30, tzinfo=HCM)),
        ("0 9 * * 0", T0.astimezone(HCM), datetime(2026, 11, 29, 9, 0, tzinfo=HCM)),
        ("0 9 * * 1", T0.astimezone(HCM), datetime(2026, 11, 30, 9, 0, tzinfo=HCM)),
        ("0 9 * * mon-fri", datetime(2026, 11, 27, 10, 0, tzinfo=HCM), datetime(2026, 11, 30, 9, 0, tzinfo=HCM)),
    ],
)
async def test_digest_cron_weekdays_follow_crontab(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener, cron: str, after: datetime, expected: datetime
) -> None:
    """2026-11-26 is a Thursday; AUTOTRAIN_DIGEST_CRON is a standard five-field crontab expression."""
    settings = make_settings(tmp_path, rules_dir, digest_cron=cron, timezone="Asia/Ho_Chi_Minh")
    runtime, _ = await open_monitored(settings, FakeClock(T0))
    trigger = build_scheduler(runtime).get_job("digest").trigger
    next_run = trigger.get_next_fire_time(None, after)
    assert next_run == expected, f"{cron!r} next runs on a {next_run:%A}, expected a {expected:%A}"


async def test_webhooks_job_only_when_webhooks_are_configured(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    plain, _ = await open_monitored(make_settings(tmp_path, rules_dir), FakeClock(T0))
    assert build_scheduler(plain).get_job("webhooks") is None

    settings = make_settings(
        tmp_path,
        rules_dir,
        database_url=f"sqlite:///{tmp_path / 'hooks.db'}",
        webhook_urls="http://127.0.0.1:9/hook",
        webhook_secret="whsec-test",
    )
    hooked, _ = await open_monitored(settings, FakeClock(T0))
    job = build_scheduler(hooked).get_job("webhooks")
    assert job is not None
    assert isinstance(job.trigger, IntervalTrigger)


# ---------------------------------------------------------------------- hygiene


async def test_logged_job_that_raises_logs_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("database is locked")

    wrapped = logged("alerts", broken)
    assert wrapped.__name__ == "alerts"
    with caplog.at_level(logging.ERROR, logger="autotrain.scheduler"):
        assert await wrapped() is None
        assert await wrapped() is None  # and again at the next tick
    assert calls == 2
    failures = [r for r in caplog.records if r.name == "autotrain.scheduler" and r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert "alerts" in failures[0].getMessage()
    assert failures[0].exc_info is not None and "database is locked" in str(failures[0].exc_info[1])


async def test_a_failing_job_does_not_stop_the_scheduler(caplog: pytest.LogCaptureFixture) -> None:
    """Run without waiting for real intervals: each run is made due now."""
    runs: list[str] = []
    ran = asyncio.Event()

    async def flaky() -> None:
        runs.append("run")
        ran.set()
        if len(runs) == 1:
            raise RuntimeError("first run fails")

    scheduler = AsyncIOScheduler(timezone=UTC, job_defaults=JOB_DEFAULTS)
    scheduler.add_job(logged("flaky", flaky), IntervalTrigger(hours=1), id="flaky", next_run_time=datetime.now(UTC))
    with caplog.at_level(logging.ERROR, logger="autotrain.scheduler"):
        scheduler.start()
        try:
            await asyncio.wait_for(ran.wait(), 5)
            ran.clear()
            assert scheduler.running
            job = scheduler.get_job("flaky")
            assert job is not None and job.next_run_time is not None  # still scheduled
            scheduler.modify_job("flaky", next_run_time=datetime.now(UTC))
            await asyncio.wait_for(ran.wait(), 5)
            assert runs == ["run", "run"]
            assert scheduler.running
        finally:
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the event loop's next turn
    assert not scheduler.running
    assert any("flaky" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


# ---------------------------------------------------------------------- two processes, one database


async def test_digest_key_is_the_same_in_two_processes_at_the_same_minute(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    settings = make_settings(tmp_path, rules_dir, timezone="Asia/Ho_Chi_Minh")
    early, _ = await open_monitored(settings, FakeClock(T0 + timedelta(seconds=2)))
    late, _ = await open_monitored(settings, FakeClock(T0 + timedelta(seconds=58)))
    assert digest_key(early) == digest_key(late) == "digest:2026-11-26T15:00"  # the local minute
    later, _ = await open_monitored(settings, FakeClock(T0 + timedelta(minutes=1)))
    assert digest_key(later) != digest_key(early)


async def test_a_late_run_keeps_the_key_of_its_scheduled_time(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    """A process that runs the digest late (within the misfire grace) claims the same run as a punctual one."""
    settings = make_settings(tmp_path, rules_dir, timezone="Asia/Ho_Chi_Minh", digest_cron="0 15 * * *")
    trigger = crontab_trigger(settings.digest_cron, ZoneInfo(settings.timezone))
    punctual, _ = await open_monitored(settings, FakeClock(T0 + timedelta(seconds=1)))
    late, _ = await open_monitored(settings, FakeClock(T0 + timedelta(seconds=50)))
    assert digest_key(punctual, trigger) == digest_key(late, trigger) == "digest:2026-11-26T15:00"


@pytest.mark.both_backends  # two instances on one PostgreSQL post each alert and digest once too
async def test_scheduled_jobs_of_two_processes_post_once(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    settings = make_settings(tmp_path, rules_dir, alert_pending_max=0)
    one, one_sink = await open_monitored(settings, FakeClock(T0 + timedelta(seconds=1)))
    two, two_sink = await open_monitored(settings, FakeClock(T0 + timedelta(seconds=40)))
    await submit(one.service, feedback(1))
    one_jobs, two_jobs = build_scheduler(one), build_scheduler(two)

    await asyncio.gather(one_jobs.get_job("alerts").func(), two_jobs.get_job("alerts").func())
    alerts = one_sink.alerts + two_sink.alerts
    assert [(a.name, a.kind) for a in alerts] == [("pending_feedback", AlertDecision.FIRE)]

    await asyncio.gather(one_jobs.get_job("digest").func(), two_jobs.get_job("digest").func())
    assert len(one_sink.digests) + len(two_sink.digests) == 1


# ---------------------------------------------------------------------- the app's lifespan


async def test_lifespan_starts_and_shuts_down_the_scheduler(tmp_path: Path, rules_dir: Path) -> None:
    app = create_app(make_settings(tmp_path, rules_dir, scheduler_enabled=True))
    async with app.router.lifespan_context(app):
        scheduler = app.state.scheduler
        assert isinstance(scheduler, AsyncIOScheduler)
        assert scheduler.running
        assert {job.id for job in scheduler.get_jobs()} == {"alerts", "digest", "settle_pending"}
    assert not scheduler.running


async def test_lifespan_without_the_scheduler(tmp_path: Path, rules_dir: Path) -> None:
    app = create_app(make_settings(tmp_path, rules_dir))  # scheduler_enabled=False
    async with app.router.lifespan_context(app):
        assert app.state.scheduler is None


async def test_a_real_scheduler_run_posts_one_alert(tmp_path: Path, rules_dir: Path) -> None:
    """The only test on real time: a 1 s alert interval, about two ticks."""
    settings = make_settings(tmp_path, rules_dir, scheduler_enabled=True, alert_interval_seconds=1, alert_pending_max=0)
    sink = RecordingSink()
    app = create_app(settings, open_runtime_fn=lambda s: open_runtime(s, reconcile=True, monitoring_sinks=(sink,)))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        await submit(runtime.service, feedback(1))
        deadline = time.monotonic() + 5
        while not sink.alerts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [(a.name, a.kind) for a in sink.alerts] == [("pending_feedback", AlertDecision.FIRE)]
        await asyncio.sleep(1.1)  # another tick: still crossed, but inside the cool-down
        assert app.state.scheduler.running
    assert len(sink.alerts) == 1
    assert not app.state.scheduler.running
