"""Scheduled jobs inside `autotrain serve` (APScheduler's AsyncIOScheduler): threshold alerts, the digest,
webhook deliveries.

Jobs coalesce (missed runs fold into one), have a misfire grace time and run one instance at a time; a job
that fails logs and runs again at its next tick. Two `serve` processes on one database do not post twice:
alerts are evaluated by the holder of a lease and every alert change is a compare-and-set; a scheduled
digest is claimed by its run key first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.runtime import Runtime

log = logging.getLogger("autotrain.scheduler")

WEBHOOK_INTERVAL_SECONDS = 5
# a deployment whose instance died mid-change is settled within this (one cheap query when none is pending)
SETTLE_PENDING_INTERVAL_SECONDS = 5
RELOAD_RETRY_INTERVAL_SECONDS = 15  # a due retry waits at most this long (the backoff itself starts at 30 s)
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}


def logged(name: str, job: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("scheduled job %s failed; it runs again at its next tick", name)

    run.__name__ = name
    return run


def digest_key(runtime: Runtime, trigger: CronTrigger | None = None) -> str:
    """The scheduled run this is, in the digest's timezone: the same in every process, even one that runs it
    late (within the misfire grace time)."""
    timezone = ZoneInfo(runtime.settings.timezone)
    now = runtime.monitor.clock().astimezone(timezone)
    moment = now
    if trigger is not None:
        grace = timedelta(seconds=JOB_DEFAULTS["misfire_grace_time"] + 1)
        scheduled = trigger.get_next_fire_time(None, now - grace)
        if scheduled is not None and scheduled <= now:
            moment = scheduled
    return f"digest:{moment:%Y-%m-%dT%H:%M}"


_CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday) in names, which APScheduler reads unambiguously
    (its own numbers start at 0 = Monday)."""
    if field == "*" or any(ch.isalpha() for ch in field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first_text, last_text = span.split("-", 1)
            first, last = int(first_text), int(last_text)
        else:
            first = last = int(span)
            if step_text:
                last = 6
        if not (0 <= first <= 7 and 0 <= last <= 7):
            raise ValueError(f"weekday {part!r} is outside 0-7")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_CRON_WEEKDAYS[day] for day in sorted(days))


def crontab_trigger(expression: str, timezone: ZoneInfo) -> CronTrigger:
    minute, hour, day, month, weekday = expression.split()
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(weekday),
        timezone=timezone,
    )


def quiet_apscheduler() -> None:
    """APScheduler logs two INFO lines per job run ("Running job …", "… executed successfully") and one per job
    added: at an alert tick every few minutes, that is most of the log. Its warnings (a missed run) and errors
    stay; a job's own failure is logged by `logged` anyway. Left alone when the process logs at DEBUG."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


def build_scheduler(runtime: Runtime) -> AsyncIOScheduler:
    quiet_apscheduler()
    settings = runtime.settings
    timezone = ZoneInfo(settings.timezone)
    scheduler = AsyncIOScheduler(timezone=timezone, job_defaults=JOB_DEFAULTS)
    interval = settings.alert_interval_seconds
    scheduler.add_job(
        logged("alerts", lambda: runtime.monitor.run_alert_job(interval)),
        IntervalTrigger(seconds=interval, timezone=timezone),
        id="alerts",
        name="threshold alerts",
    )
    digest_trigger = crontab_trigger(settings.digest_cron, timezone)
    scheduler.add_job(
        logged("digest", lambda: runtime.monitor.post_digest(key=digest_key(runtime, digest_trigger))),
        digest_trigger,
        id="digest",
        name="digest",
    )
    scheduler.add_job(
        logged("settle pending", runtime.service.settle_left_pending),
        IntervalTrigger(seconds=SETTLE_PENDING_INTERVAL_SECONDS, timezone=timezone),
        id="settle_pending",
        name="settle deployments an instance left pending when it stopped mid-change",
    )
    if runtime.history is not None and settings.git_remote:
        scheduler.add_job(
            logged("git push", runtime.push_pending),
            IntervalTrigger(seconds=interval, timezone=timezone),
            id="git_push",
            name="push rule-file commits to AUTOTRAIN_GIT_REMOTE",
        )
    if settings.reload_url:
        scheduler.add_job(
            logged("reload retries", runtime.reloads.retry_due),
            IntervalTrigger(seconds=RELOAD_RETRY_INTERVAL_SECONDS, timezone=timezone),
            id="reload_retries",
            name="chatbot reload retries",
        )
    if settings.canary_auto_decide:
        scheduler.add_job(
            logged("auto-canary", runtime.service.decide_canaries),
            IntervalTrigger(seconds=interval, timezone=timezone),
            id="auto_canary",
            name="canaries decided by evidence",
        )
    if runtime.webhooks is not None:
        scheduler.add_job(
            logged("webhooks", runtime.webhooks.deliver_due),
            IntervalTrigger(seconds=WEBHOOK_INTERVAL_SECONDS, timezone=timezone),
            id="webhooks",
            name="webhook deliveries",
        )
    return scheduler
