"""Rate limits with the `limits` package: feedback per end user (inbound), and throttles on our own calls to
Slack and Anthropic (outbound). Memory storage by default; AUTOTRAIN_RATE_LIMIT_STORAGE takes a storage URL
(e.g. `async+redis://host:6379`) so that several processes share the counts."""

from __future__ import annotations

import asyncio
import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from autotrain.ports import RateDecision


def _storage(url: str):
    if not url.startswith("async+"):
        url = "async+" + url  # the asyncio flavour of the same backend
    return storage_from_string(url)


class LimitsRateLimiter:
    """Inbound: one moving window per key (e.g. 10/hour per end user)."""

    def __init__(self, limit: str, storage_url: str = "memory://") -> None:
        self.item: RateLimitItem = parse(limit)
        self.limiter = MovingWindowRateLimiter(_storage(storage_url))

    async def hit(self, key: str) -> RateDecision:
        if await self.limiter.hit(self.item, key):
            return RateDecision(True)
        stats = await self.limiter.get_window_stats(self.item, key)
        return RateDecision(False, retry_after=max(1, math.ceil(stats.reset_time - time.time())))


class Throttle:
    """Outbound: waits until a call is allowed rather than refusing it (our own calls must not be lost)."""

    def __init__(self, limit: str, storage_url: str = "memory://") -> None:
        self.item = parse(limit)
        self.limiter = MovingWindowRateLimiter(_storage(storage_url))

    async def wait(self, key: str = "default") -> None:
        while not await self.limiter.hit(self.item, key):
            stats = await self.limiter.get_window_stats(self.item, key)
            await asyncio.sleep(min(5.0, max(0.05, stats.reset_time - time.time())))
