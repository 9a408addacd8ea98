"""A logging filter that keeps a repeated message from flooding the log (issue 11: 330 MB in 45 s of
`accept() … Too many open files` tracebacks)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# the loggers `autotrain serve` protects: the event loop's and uvicorn's own
SERVER_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error")


@dataclass
class _Seen:
    since: float
    count: int = 0
    held: int = 0


class RepeatedMessageFilter(logging.Filter):
    """Per message (logger, level and the message before its arguments are filled in): the first `burst`
    records of each `interval` seconds pass; later ones are counted, and the first record after the interval
    carries how many were held back. A quiet message costs nothing."""

    MAX_KEYS = 1000

    def __init__(self, burst: int = 5, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or now - seen.since >= self.interval:
            if seen is None and len(self._seen) >= self.MAX_KEYS:
                self._forget_old(now)
            held = seen.held if seen else 0
            if held:
                record.msg = f"{record.msg} [{held} more like this in the last {now - seen.since:.0f} s not logged]"
            self._seen[key] = _Seen(since=now, count=1)
            return True
        seen.count += 1
        if seen.count < self.burst:
            return True
        if seen.count == self.burst:
            record.msg = f"{record.msg} [repeated {self.burst} times: more like this are counted, not logged]"
            return True
        seen.held += 1
        return False

    def _forget_old(self, now: float) -> None:
        for key, seen in list(self._seen.items()):
            if now - seen.since >= self.interval and not seen.held:
                del self._seen[key]
        if len(self._seen) >= self.MAX_KEYS:  # all recent: drop the oldest half
            for key in sorted(self._seen, key=lambda k: self._seen[k].since)[: self.MAX_KEYS // 2]:
                del self._seen[key]


def limit_repeated_logs(
    names: Iterable[str] = SERVER_LOGGERS, burst: int = 5, interval: float = 60.0
) -> RepeatedMessageFilter:
    """Install one `RepeatedMessageFilter` on each named logger (a filter on a logger sees the records logged
    on it, which is where the event loop and uvicorn log). Idempotent per logger."""
    shared = RepeatedMessageFilter(burst=burst, interval=interval)
    for name in names:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatedMessageFilter)]:
            logger.removeFilter(old)
        logger.addFilter(shared)
    return shared
