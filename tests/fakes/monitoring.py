"""A monitoring sink that keeps what it was told (alerts and digests), and a fixture opening runtimes with it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from autotrain.effect import CanaryOutcome
from autotrain.monitoring import AlertEvent, Digest
from autotrain.ports import RuleGenerator
from autotrain.settings import Settings
from bot.runtime import Runtime, open_runtime
from tests.fakes.clock import FakeClock


class RecordingSink:
    def __init__(self) -> None:
        self.alerts: list[AlertEvent] = []
        self.digests: list[Digest] = []
        self.canaries: list[CanaryOutcome] = []

    async def alert(self, event: AlertEvent) -> None:
        self.alerts.append(event)

    async def digest(self, digest: Digest) -> None:
        self.digests.append(digest)

    async def canary_decided(self, outcome: CanaryOutcome) -> None:
        self.canaries.append(outcome)


Opener = Callable[..., Awaitable[tuple[Runtime, RecordingSink]]]


@pytest.fixture
async def open_monitored() -> AsyncIterator[Opener]:
    """Opens runtimes on a controlled clock, each with a RecordingSink; closes them after the test."""
    opened: list[Runtime] = []

    async def opener(
        settings: Settings, clock: FakeClock, generator: RuleGenerator | None = None
    ) -> tuple[Runtime, RecordingSink]:
        sink = RecordingSink()
        runtime = await open_runtime(settings, clock=clock, generator=generator, monitoring_sinks=(sink,))
        opened.append(runtime)
        return runtime, sink

    yield opener
    for runtime in opened:
        await runtime.close()
