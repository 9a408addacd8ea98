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
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.runtime import Runtime

log = logging.getLogger("autotrain.scheduler")

WEBHOOK_INTERVAL_SECONDS = 5
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}


def logged(name: str, job: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("scheduled job %s failed; it runs again at its next tick", name)

    run.__name__ = name
    return run


def digest_key(runtime: Runtime) -> str:
    """The scheduled run this is, to the minute, in the digest's timezone (the same in every process)."""
    now = runtime.monitor.clock().astimezone(ZoneInfo(runtime.settings.timezone))
    return f"digest:{now:%Y-%m-%dT%H:%M}"


def build_scheduler(runtime: Runtime) -> AsyncIOScheduler:
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
    scheduler.add_job(
        logged("digest", lambda: runtime.monitor.post_digest(key=digest_key(runtime))),
        CronTrigger.from_crontab(settings.digest_cron, timezone=timezone),
        id="digest",
        name="digest",
    )
    if runtime.webhooks is not None:
        scheduler.add_job(
            logged("webhooks", runtime.webhooks.deliver_due),
            IntervalTrigger(seconds=WEBHOOK_INTERVAL_SECONDS, timezone=timezone),
            id="webhooks",
            name="webhook deliveries",
        )
    return scheduler
