"""Webhook notifications (the cookbook's "Webhook notifications"): signed JSON events to configured URLs.

Events go through an outbox table first (`webhook_deliveries`), so a receiver that is down, or a restart,
loses nothing: the dispatcher sends what is due, retries with exponential backoff up to
AUTOTRAIN_WEBHOOK_MAX_ATTEMPTS, and keeps every attempt's outcome as the delivery log.

Each request carries `X-Autotrain-Event`, `X-Autotrain-Delivery`, `X-Autotrain-Timestamp` and
`X-Autotrain-Signature: sha256=<hex>`, the HMAC-SHA256 of "<timestamp>.<body>" with AUTOTRAIN_WEBHOOK_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from autotrain.effect import CanaryOutcome
from autotrain.models import PipelineEvent
from autotrain.monitoring import AlertEvent, Digest
from autotrain.ports import WebhookOutbox

log = logging.getLogger("autotrain.webhooks")

RETRY_BASE_SECONDS = 2.0  # 2, 4, 8, 16 … seconds between attempts
LEASE_MARGIN_SECONDS = 30.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: str, event_type: str, delivery_id: str, body: bytes, now: float) -> dict[str, str]:
    """The headers of a signed call (a webhook, the chatbot's reload): what it is, and its signature."""
    timestamp = str(int(now))
    return {
        "X-Autotrain-Event": event_type,
        "X-Autotrain-Delivery": delivery_id,
        "X-Autotrain-Timestamp": timestamp,
        "X-Autotrain-Signature": sign(secret, timestamp, body),
    }


class WebhookNotifier:
    """Puts events in the outbox: rule created / edited / approved / rejected / deployed / rolled back,
    alerts fired / repeated / resolved. (PipelineNotifier and MonitoringSink.)"""

    def __init__(self, store: WebhookOutbox, urls: tuple[str, ...], clock: Callable[[], datetime]) -> None:
        self.store = store
        self.urls = urls
        self.clock = clock

    async def _enqueue(
        self, event_type: str, data: dict[str, Any], event_id: str | None = None, at: datetime | None = None
    ) -> None:
        event_id = event_id or uuid.uuid4().hex
        now = self.clock()
        payload = {"id": event_id, "type": event_type, "at": (at or now).isoformat(), "data": data}
        await self.store.enqueue_webhooks(
            event_id=event_id, event_type=event_type, payload=payload, urls=self.urls, now=now
        )

    async def notify(self, event: PipelineEvent) -> None:
        data: dict[str, Any] = {"actor": event.actor_id, "rule": event.rule.model_dump(mode="json")}
        if event.deployment is not None:
            data["deployment"] = event.deployment.model_dump(mode="json")
        # an outbox event gets the same id each time it is delivered, so the outbox queues it only once
        event_id = f"evt-{event.event_id}" if event.event_id is not None else None
        await self._enqueue(event.kind.value, data, event_id, event.occurred_at)

    async def alert(self, event: AlertEvent) -> None:
        await self._enqueue(f"alert_{event.kind.value}", event.model_dump(mode="json"))

    async def digest(self, digest: Digest) -> None:
        pass  # digests are for people; webhooks get the events themselves

    async def canary_decided(self, outcome: CanaryOutcome) -> None:
        """The evidence behind an auto-canary decision (its promote or rollback is a rule event of its own)."""
        await self._enqueue("canary_decided", outcome.model_dump(mode="json"))


class WebhookDispatcher:
    """Sends the due deliveries of the outbox."""

    def __init__(
        self,
        store: WebhookOutbox,
        *,
        secret: str,
        clock: Callable[[], datetime],
        max_attempts: int = 5,
        timeout_seconds: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.secret = secret
        self.clock = clock
        self.max_attempts = max_attempts
        self.timeout_seconds = timeout_seconds
        self.transport = transport

    async def deliver_due(self, limit: int = 50) -> int:
        """One pass over what is due now; returns how many were delivered.

        Each delivery is claimed just before it is sent, with a lease longer than the request's timeout, so a
        slow pass never lets another process send what this one has not reached yet.
        """
        delivered = 0
        async with httpx.AsyncClient(timeout=self.timeout_seconds, transport=self.transport) as client:
            for _ in range(limit):
                due = await self.store.due_webhooks(
                    now=self.clock(), limit=1, lease_seconds=self.timeout_seconds + LEASE_MARGIN_SECONDS
                )
                if not due:
                    break
                delivered += await self._attempt(client, due[0])
        return delivered

    async def _attempt(self, client: httpx.AsyncClient, delivery: dict[str, Any]) -> bool:
        body = delivery["payload"].encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Auto-Train webhooks",
            **signed_headers(
                self.secret,
                delivery["event_type"],
                f"{delivery['event_id']}:{delivery['id']}",
                body,
                self.clock().timestamp(),
            ),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = await client.post(delivery["url"], content=body, headers=headers)
            status = response.status_code
            if response.is_success:
                await self.store.webhook_attempted(
                    delivery["id"], delivered=True, status=status, error=None, next_attempt_at=None, now=self.clock()
                )
                return True
            error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempt = delivery["attempts"] + 1
        retry_at = None
        if attempt < self.max_attempts:
            retry_at = self.clock() + timedelta(seconds=RETRY_BASE_SECONDS * 2 ** (attempt - 1))
        else:
            log.warning("webhook %s to %s failed for good: %s", delivery["event_type"], delivery["url"], error)
        await self.store.webhook_attempted(
            delivery["id"], delivered=False, status=status, error=error, next_attempt_at=retry_at, now=self.clock()
        )
        return False
