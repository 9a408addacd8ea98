"""The injected clock of the tests: `now` only moves when a test moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, now: datetime = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        """advance(60) or advance(minutes=5, hours=1)."""
        self.now += timedelta(seconds=seconds, **delta)
        return self.now
