"""Delivering the outbox: every recorded event goes to the notifiers (review cards, App Home, webhooks), in
order per rule, after the action that recorded it has answered.

A state change writes its event in its own transaction (`EventOutbox`), so an event is never lost: one that a
killed process did not deliver is claimed again when its lease runs out, here or in another instance. The
notifiers are idempotent for a redelivered event (a card is re-rendered from the current state; a webhook
carries the event's id), so delivery at least once reads as exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from autotrain.errors import StoreBusy
from autotrain.models import OutboxEvent, PipelineEvent
from autotrain.options import Clock
from autotrain.ports import DeploymentStore, EventOutbox, PipelineNotifier

log = logging.getLogger("autotrain.events")


class EventDispatcher:
    def __init__(
        self,
        *,
        outbox: EventOutbox,
        deployments: DeploymentStore,
        notifiers: Sequence[PipelineNotifier],
        clock: Clock,
        holder: str,
        lease_seconds: float = 60.0,
        poll_seconds: float = 5.0,
        batch: int = 20,
    ) -> None:
        self.outbox = outbox
        self.deployments = deployments
        self.notifiers = tuple(notifiers)
        self.clock = clock
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.batch = batch
        self._wakeup = asyncio.Event()
        self._pass = asyncio.Lock()  # one delivery pass at a time, so drain() waits for the one under way
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Something was recorded: deliver soon (the loop also polls, for other processes' events)."""
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self) -> int:
        """Deliver everything that is ready now, waiting for a pass already under way; how many were delivered."""
        return await self.deliver_ready()

    async def deliver_ready(self) -> int:
        async with self._pass:
            delivered = 0
            if not await self.outbox.undelivered_event_count():
                return 0  # an idle poll reads; it never takes the write lock another process may need
            while True:
                events = await self.outbox.claim_events(
                    holder=self.holder, now=self.clock(), lease_seconds=self.lease_seconds, limit=self.batch
                )
                if not events:
                    return delivered
                for event in events:
                    await self._deliver(event)
                    delivered += 1

    async def _deliver(self, event: OutboxEvent) -> None:
        deployment = None
        if event.deployment_id is not None:
            deployment = await self.deployments.get_deployment(event.deployment_id)
        told = PipelineEvent(
            kind=event.kind,
            rule=event.rule,
            actor_id=event.actor_id,
            deployment=deployment,
            event_id=event.event_id,
            occurred_at=event.created_at,
        )
        for notifier in self.notifiers:
            try:
                await notifier.notify(told)
            except Exception:  # a notifier keeps its own retries (cards, webhook deliveries); the others go on
                log.exception(
                    "notifier %s failed on %s of %s", type(notifier).__name__, event.kind.value, event.rule.rule_id
                )
        await self.outbox.event_delivered(event.event_id, holder=self.holder, now=self.clock())

    async def _run(self) -> None:
        while True:
            try:
                await self.deliver_ready()
            except StoreBusy as exc:  # another process holds the database: the next turn delivers
                log.warning("delivering events postponed: %s", exc.message)
            except Exception:
                log.exception("delivering events failed; trying again in %ss", self.poll_seconds)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that meets a wake-up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wakeup.wait()
            self._wakeup.clear()
