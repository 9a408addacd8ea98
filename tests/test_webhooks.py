"""Webhooks: events go to the outbox, the dispatcher sends them signed to a real HTTP receiver on loopback,
retries with exponential backoff on failure and keeps the delivery log. Time comes from a controlled clock."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from autotrain.policy import Actor, Role
from bot.runtime import Runtime, open_runtime
from bot.webhooks import RETRY_BASE_SECONDS, sign
from tests.conftest import ADMIN, HEIGHT_FEEDBACK, REPORTER, WEATHER_FEEDBACK, make_settings, submit
from tests.fakes.clock import FakeClock

SECRET = "whsec-test-0123456789"
START = datetime(2025, 6, 2, 10, 0, 0, tzinfo=UTC)


# ---------------------------------------------------------------------- the receiver on 127.0.0.1


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Receiver:
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering (a slow endpoint)
    hook: Callable[[int], None] | None = None  # called with the request's number (from 1) before answering


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    """Starts webhook receivers on 127.0.0.1 (threaded http.server); each records every POST."""
    servers: list[ThreadingHTTPServer] = []

    def start() -> Receiver:
        state = Receiver()
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with lock:
                    state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    number = len(state.requests)
                if state.hook is not None:
                    state.hook(number)
                if state.delay:
                    time.sleep(state.delay)
                payload = b'{"ok": true}' if state.status < 400 else b"receiver is down"
                self.send_response(state.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/autotrain"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return state

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def receiver(receivers: Callable[[], Receiver]) -> Receiver:
    return receivers()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody-listens"


# ---------------------------------------------------------------------- helpers


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Computed here, independently of bot.webhooks."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verifies(request: Received, secret: str = SECRET, body: bytes | None = None) -> bool:
    timestamp = request.headers["x-autotrain-timestamp"]
    wanted = expected_signature(secret, timestamp, request.body if body is None else body)
    return hmac.compare_digest(wanted, request.headers["x-autotrain-signature"])


def stored_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@asynccontextmanager
async def webhook_runtime(
    tmp_path: Path, rules_dir: Path, clock: FakeClock, urls: tuple[str, ...], **overrides: Any
) -> AsyncIterator[Runtime]:
    values: dict[str, Any] = {"webhook_urls": urls, "webhook_secret": SECRET}
    values.update(overrides)
    runtime = await open_runtime(make_settings(tmp_path, rules_dir, **values), clock=clock)
    try:
        yield runtime
    finally:
        await runtime.close()


async def deliveries(runtime: Runtime) -> list[dict[str, Any]]:
    """The delivery log, oldest first, once the events recorded so far have reached it (the event outbox)."""
    await runtime.service.drain()
    return list(reversed(await runtime.store.list_webhook_deliveries()))


async def send_due(runtime: Runtime) -> int:
    """One pass of the webhook dispatcher, once the events recorded so far have reached its outbox."""
    await runtime.service.drain()
    assert runtime.webhooks is not None
    return await runtime.webhooks.deliver_due()


async def generated_rule(runtime: Runtime, payload: dict[str, Any] | None = None):
    feedback = await submit(runtime.service, payload)
    return await runtime.service.generate(feedback.feedback_id, REPORTER)


# ---------------------------------------------------------------------- signing


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = '{"type": "rule_approved", "text": "áo khoác"}'.encode()
    assert sign(SECRET, "1748858400", body) == expected_signature(SECRET, "1748858400", body)
    assert sign(SECRET, "1748858400", body) != sign(SECRET, "1748858401", body)
    assert sign(SECRET, "1748858400", body) != sign("another-secret", "1748858400", body)


# ---------------------------------------------------------------------- events are enqueued, then delivered signed


async def test_rule_events_are_delivered_signed_with_the_rule(
    tmp_path: Path, rules_dir: Path, receiver: Receiver
) -> None:
    clock = FakeClock(START)
    async with webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,)) as runtime:
        assert runtime.webhooks is not None
        rule = await generated_rule(runtime)
        await runtime.service.approve(rule.rule_id, ADMIN)
        deployed = await runtime.service.deploy(rule.rule_id, ADMIN)

        queued = await deliveries(runtime)
        assert [d["event_type"] for d in queued] == ["rule_created", "rule_approved", "rule_deployed"]
        assert all(d["state"] == "pending" and d["attempts"] == 0 for d in queued)
        assert all(d["url"] == receiver.url for d in queued)
        assert receiver.requests == []  # nothing is sent before the dispatcher runs

        clock.advance(7)
        assert await send_due(runtime) == 3

        assert [r.headers["x-autotrain-event"] for r in receiver.requests] == [
            "rule_created",
            "rule_approved",
            "rule_deployed",
        ]
        for request, delivery in zip(receiver.requests, queued, strict=True):
            assert request.path == "/hooks/autotrain"
            assert request.headers["content-type"].startswith("application/json")
            assert request.headers["x-autotrain-delivery"] == f"{delivery['event_id']}:{delivery['id']}"
            assert request.headers["x-autotrain-timestamp"] == str(int(clock.now.timestamp()))
            assert request.headers["x-autotrain-signature"].startswith("sha256=")
            assert verifies(request)
            # a tampered body, or the wrong secret, does not verify
            tampered = request.body.replace(rule.rule_id.encode(), b"RUL-9999")
            assert tampered != request.body
            assert not verifies(request, body=tampered)
            assert not verifies(request, secret="not-the-secret")
            # the payload
            payload = request.json
            assert set(payload) == {"id", "type", "at", "data"}
            assert payload["id"] == delivery["event_id"]
            assert payload["type"] == request.headers["x-autotrain-event"]
            assert payload["data"]["rule"]["rule_id"] == rule.rule_id
            assert payload["data"]["rule"]["new_rule"] == rule.new_rule
            assert payload["data"]["rule"]["feedback_id"] == rule.feedback_id

        created, approved, deployed_event = (r.json for r in receiver.requests)
        assert created["data"]["rule"]["status"] == "pending"
        assert approved["data"]["rule"]["status"] == "approved"
        assert approved["data"]["actor"] == ADMIN.id
        assert deployed_event["data"]["rule"]["status"] == "deployed"
        assert deployed_event["data"]["deployment"]["deployment_id"] == deployed.deployment.deployment_id
        assert deployed_event["data"]["deployment"]["module_name"] == deployed.deployment.module_name
        # `at` is when the event happened (the injected clock), not when it was sent
        assert all(stored_time(p["at"]) == START for p in (created, approved, deployed_event))
        assert len({p["id"] for p in (created, approved, deployed_event)}) == 3

        log = await deliveries(runtime)
        assert [(d["state"], d["attempts"], d["last_status"], d["last_error"]) for d in log] == [
            ("delivered", 1, 200, None)
        ] * 3
        assert all(stored_time(d["delivered_at"]) == clock.now for d in log)

        # delivered means done: a second pass sends nothing
        clock.advance(3600)
        assert await send_due(runtime) == 0
        assert len(receiver.requests) == 3


async def test_reject_and_rollback_are_events_too(tmp_path: Path, rules_dir: Path, receiver: Receiver) -> None:
    clock = FakeClock(START)
    async with webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,)) as runtime:
        first = await generated_rule(runtime, WEATHER_FEEDBACK)
        second = await generated_rule(runtime, HEIGHT_FEEDBACK)
        await runtime.service.reject(second.rule_id, ADMIN, reason="not now")
        await runtime.service.approve(first.rule_id, ADMIN)
        await runtime.service.deploy(first.rule_id, ADMIN)
        await runtime.service.rollback(first.rule_id, ADMIN)
        assert runtime.webhooks is not None
        assert await send_due(runtime) == 6
        events = [(r.json["type"], r.json["data"]["rule"]["rule_id"]) for r in receiver.requests]
        assert events == [
            ("rule_created", first.rule_id),
            ("rule_created", second.rule_id),
            ("rule_rejected", second.rule_id),
            ("rule_approved", first.rule_id),
            ("rule_deployed", first.rule_id),
            ("rule_rolled_back", first.rule_id),
        ]
        rolled_back = receiver.requests[-1].json["data"]
        assert rolled_back["rule"]["status"] == "rolled_back"
        assert rolled_back["deployment"]["rollback_of"] is not None
        assert all(verifies(r) for r in receiver.requests)


# ---------------------------------------------------------------------- retries and the delivery log


async def test_a_500_is_retried_with_exponential_backoff(tmp_path: Path, rules_dir: Path, receiver: Receiver) -> None:
    assert RETRY_BASE_SECONDS == 2
    clock = FakeClock(START)
    receiver.status = 500
    async with webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,)) as runtime:
        assert runtime.webhooks is not None
        rule = await generated_rule(runtime)

        assert await send_due(runtime) == 0
        assert len(receiver.requests) == 1
        [delivery] = await deliveries(runtime)
        assert delivery["state"] == "pending"
        assert delivery["attempts"] == 1
        assert delivery["last_status"] == 500
        assert "500" in delivery["last_error"]
        assert stored_time(delivery["next_attempt_at"]) == START + timedelta(seconds=2)

        # not due before its time
        clock.advance(1.9)
        assert await send_due(runtime) == 0
        assert len(receiver.requests) == 1
        assert (await deliveries(runtime))[0]["attempts"] == 1

        # due at its time; fails again: the next wait doubles
        clock.advance(0.1)
        assert await send_due(runtime) == 0
        assert len(receiver.requests) == 2
        [delivery] = await deliveries(runtime)
        assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == ("pending", 2, 500)
        assert stored_time(delivery["next_attempt_at"]) == START + timedelta(seconds=2 + 4)

        clock.advance(3.5)
        assert await send_due(runtime) == 0
        assert len(receiver.requests) == 2

        # the receiver is back: the retry delivers
        receiver.status = 200
        clock.advance(0.5)
        assert await send_due(runtime) == 1
        assert len(receiver.requests) == 3
        [delivery] = await deliveries(runtime)
        assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == ("delivered", 3, 200)
        assert delivery["last_error"] is None
        assert stored_time(delivery["delivered_at"]) == START + timedelta(seconds=6)

        # every attempt was the same event, body and delivery id, each freshly signed
        assert len({r.body for r in receiver.requests}) == 1
        assert len({r.headers["x-autotrain-delivery"] for r in receiver.requests}) == 1
        assert [r.headers["x-autotrain-timestamp"] for r in receiver.requests] == [
            str(int(START.timestamp())),
            str(int(START.timestamp()) + 2),
            str(int(START.timestamp()) + 6),
        ]
        assert all(verifies(r) for r in receiver.requests)
        assert receiver.requests[0].json["data"]["rule"]["rule_id"] == rule.rule_id

        clock.advance(86400)
        assert await send_due(runtime) == 0
        assert len(receiver.requests) == 3


async def test_after_max_attempts_the_delivery_fails_for_good(
    tmp_path: Path, rules_dir: Path, receiver: Receiver
) -> None:
    clock = FakeClock(START)
    receiver.status = 500
    async with webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,), webhook_max_attempts=3) as runtime:
        assert runtime.webhooks is not None
        await generated_rule(runtime)
        waits = []
        for attempt in (1, 2, 3):
            assert await send_due(runtime) == 0
            assert len(receiver.requests) == attempt
            [delivery] = await deliveries(runtime)
            assert delivery["attempts"] == attempt
            assert delivery["last_status"] == 500
            if attempt < 3:
                assert delivery["state"] == "pending"
                wait = stored_time(delivery["next_attempt_at"]) - clock.now
                waits.append(wait.total_seconds())
                clock.now = stored_time(delivery["next_attempt_at"])
        assert waits == [2.0, 4.0]

        [delivery] = await deliveries(runtime)
        assert delivery["state"] == "failed"
        assert delivery["attempts"] == 3
        assert delivery["last_error"] and "HTTP 500" in delivery["last_error"]
        assert "receiver is down" in delivery["last_error"]
        assert delivery["delivered_at"] is None

        # failed for good: never sent again, even when the receiver is back
        receiver.status = 200
        clock.advance(7 * 86400)
        assert await send_due(runtime) == 0
        assert len(receiver.requests) == 3
        assert (await deliveries(runtime))[0]["state"] == "failed"


async def test_an_unreachable_receiver_is_logged_and_retried(tmp_path: Path, rules_dir: Path) -> None:
    clock = FakeClock(START)
    url = closed_port_url()
    async with webhook_runtime(tmp_path, rules_dir, clock, (url,), webhook_max_attempts=2) as runtime:
        assert runtime.webhooks is not None
        await generated_rule(runtime)
        assert await send_due(runtime) == 0
        [delivery] = await deliveries(runtime)
        assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == ("pending", 1, None)
        assert "Connect" in delivery["last_error"]
        assert stored_time(delivery["next_attempt_at"]) == START + timedelta(seconds=2)
        clock.advance(2)
        assert await send_due(runtime) == 0
        [delivery] = await deliveries(runtime)
        assert (delivery["state"], delivery["attempts"]) == ("failed", 2)


async def test_the_delivery_log_shows_each_delivery_with_its_outcome(
    tmp_path: Path, rules_dir: Path, receivers: Callable[[], Receiver]
) -> None:
    good, bad = receivers(), receivers()
    bad.status = 503
    clock = FakeClock(START)
    async with webhook_runtime(tmp_path, rules_dir, clock, (good.url, bad.url)) as runtime:
        assert runtime.webhooks is not None
        rule = await generated_rule(runtime)
        await runtime.service.approve(rule.rule_id, ADMIN)
        assert await send_due(runtime) == 2
        log = await runtime.store.list_webhook_deliveries()
        assert [d["id"] for d in log] == sorted((d["id"] for d in log), reverse=True)  # newest first
        outcome = {(d["event_type"], d["url"]): (d["state"], d["attempts"], d["last_status"]) for d in log}
        assert outcome == {
            ("rule_created", good.url): ("delivered", 1, 200),
            ("rule_approved", good.url): ("delivered", 1, 200),
            ("rule_created", bad.url): ("pending", 1, 503),
            ("rule_approved", bad.url): ("pending", 1, 503),
        }


# ---------------------------------------------------------------------- several URLs; alerts; off without a secret


async def test_each_url_gets_the_event(tmp_path: Path, rules_dir: Path, receivers: Callable[[], Receiver]) -> None:
    first, second = receivers(), receivers()
    clock = FakeClock(START)
    async with webhook_runtime(tmp_path, rules_dir, clock, (first.url, second.url)) as runtime:
        assert runtime.webhooks is not None
        rule = await generated_rule(runtime)
        log = await deliveries(runtime)
        assert len(log) == 2
        assert {d["url"] for d in log} == {first.url, second.url}
        assert log[0]["event_id"] == log[1]["event_id"]
        assert log[0]["id"] != log[1]["id"]

        assert await send_due(runtime) == 2
        [a], [b] = first.requests, second.requests
        assert a.body == b.body
        assert a.json["data"]["rule"]["rule_id"] == rule.rule_id
        assert a.headers["x-autotrain-delivery"] != b.headers["x-autotrain-delivery"]
        assert a.headers["x-autotrain-delivery"].split(":")[0] == b.headers["x-autotrain-delivery"].split(":")[0]
        assert verifies(a) and verifies(b)


async def test_alerts_fire_and_resolve_as_webhook_events(tmp_path: Path, rules_dir: Path, receiver: Receiver) -> None:
    clock = FakeClock(START)
    async with webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,), alert_pending_max=1) as runtime:
        assert runtime.webhooks is not None
        await submit(runtime.service, WEATHER_FEEDBACK)
        await submit(runtime.service, HEIGHT_FEEDBACK)

        fired = await runtime.monitor.check_alerts()
        assert [(e.name, e.kind.value) for e in fired] == [("pending_feedback", "fired")]
        clock.advance(60)
        assert await runtime.monitor.check_alerts() == []  # still crossed, inside the cool-down: nothing new

        await runtime.service.run_all(Actor("U_ADMIN", Role.ADMIN))
        clock.advance(60)
        resolved = await runtime.monitor.check_alerts()
        assert [(e.name, e.kind.value) for e in resolved] == [("pending_feedback", "resolved")]

        assert await send_due(runtime) == 4
        alerts = [r for r in receiver.requests if r.headers["x-autotrain-event"].startswith("alert_")]
        assert [r.headers["x-autotrain-event"] for r in alerts] == ["alert_fired", "alert_resolved"]
        on, off = (r.json for r in alerts)
        assert on["type"] == "alert_fired"
        assert on["data"]["name"] == "pending_feedback"
        assert on["data"]["severity"] == "warning"
        assert on["data"]["value"] == 2
        assert on["data"]["threshold"] == 1
        assert on["data"]["action"] == "run_all"
        assert stored_time(on["at"]) == START
        assert off["type"] == "alert_resolved"
        assert off["data"]["name"] == "pending_feedback"
        assert off["data"]["value"] == 0
        assert stored_time(off["at"]) == START + timedelta(seconds=120)
        assert all(verifies(r) for r in receiver.requests)
        rules = [r.json["data"]["rule"]["rule_id"] for r in receiver.requests if r.json["type"] == "rule_created"]
        assert sorted(rules) == ["RUL-1001", "RUL-1002"]


async def test_no_webhooks_without_a_secret(tmp_path: Path, rules_dir: Path, receiver: Receiver) -> None:
    clock = FakeClock(START)
    async with webhook_runtime(
        tmp_path, rules_dir, clock, (receiver.url,), webhook_secret=None, alert_pending_max=0
    ) as runtime:
        assert runtime.webhooks is None
        rule = await generated_rule(runtime)
        await runtime.service.approve(rule.rule_id, ADMIN)
        await runtime.service.deploy(rule.rule_id, ADMIN)
        await submit(runtime.service, HEIGHT_FEEDBACK)
        assert [e.name for e in await runtime.monitor.check_alerts()] == ["pending_feedback"]
        assert await runtime.store.list_webhook_deliveries() == []
    assert receiver.requests == []


async def test_no_webhooks_without_urls(tmp_path: Path, rules_dir: Path) -> None:
    clock = FakeClock(START)
    async with webhook_runtime(tmp_path, rules_dir, clock, ()) as runtime:
        assert runtime.webhooks is None
        await generated_rule(runtime)
        assert await runtime.store.list_webhook_deliveries() == []


async def test_two_processes_on_one_database_deliver_each_event_once(
    tmp_path: Path, rules_dir: Path, receiver: Receiver
) -> None:
    """Two `serve` processes share the outbox: a due delivery is sent by one of them, not both."""
    clock = FakeClock(START)
    receiver.delay = 0.3  # a slow endpoint: both dispatchers are due at the same tick
    async with (
        webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,)) as one,
        webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,)) as two,
    ):
        assert one.webhooks is not None and two.webhooks is not None
        await generated_rule(one)
        await one.service.drain()  # the event has reached the webhook outbox
        sent = await asyncio.gather(one.webhooks.deliver_due(), two.webhooks.deliver_due())
        assert sum(sent) == 1
        assert len(receiver.requests) == 1, [r.headers["x-autotrain-delivery"] for r in receiver.requests]
        [delivery] = await deliveries(one)
        assert (delivery["state"], delivery["attempts"]) == ("delivered", 1)


async def test_a_long_pass_does_not_let_the_other_process_send_what_it_claimed(
    tmp_path: Path, rules_dir: Path, receiver: Receiver
) -> None:
    """One pass sends its due deliveries one after the other, each allowed up to 10 s: with a receiver that takes
    9 s to answer, eight deliveries take 72 s. The other process's tick must not send one of them a second time."""
    clock = FakeClock(START)

    def slow_receiver(n: int) -> None:
        clock.advance(9)  # each answer comes 9 s later (under the 10 s timeout)
        if n == 8:
            time.sleep(0.3)  # hold the last one so that the other process's tick happens meanwhile

    receiver.hook = slow_receiver
    async with (
        webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,)) as one,
        webhook_runtime(tmp_path, rules_dir, clock, (receiver.url,)) as two,
    ):
        assert one.webhooks is not None and two.webhooks is not None
        for n in range(8):
            await one.store.enqueue_webhooks(
                event_id=f"event-{n}", event_type="rule_created", payload={"n": n}, urls=(receiver.url,), now=clock()
            )
        first_pass = asyncio.create_task(one.webhooks.deliver_due())
        deadline = time.monotonic() + 5
        while len(receiver.requests) < 8:  # the first pass is sending its eighth delivery, 63 s after it began
            assert time.monotonic() < deadline, len(receiver.requests)
            await asyncio.sleep(0.01)
        await two.webhooks.deliver_due()  # the other process's tick
        assert await first_pass == 8
        sent = [r.headers["x-autotrain-delivery"] for r in receiver.requests]
        assert len(sent) == len(set(sent)) == 8, sent
        assert [(d["state"], d["attempts"]) for d in await deliveries(one)] == [("delivered", 1)] * 8
