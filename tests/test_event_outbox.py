"""Notifications are off the request path: a state change records its event in the same transaction, and
the dispatcher delivers it to the review card and the webhooks afterwards — also after a SIGKILL."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotrain.models import RuleStatus
from tests.conftest import JWT_SECRET, SHIPPED_RULES, WEATHER_FEEDBACK, bearer
from tests.fakes.slack_api import FakeSlackApi
from tests.serve_process import serving, subprocess_environment
from tests.slack_support import ADMIN_USER, BOT_TOKEN, REVIEW_CHANNEL, SIGNING_SECRET, SlackSimulator, block_texts

pytestmark = pytest.mark.both_backends  # the outbox survives a SIGKILL on SQLite and on PostgreSQL

SLOW_SLACK_SECONDS = 2.0
FAST_ENOUGH_SECONDS = 0.5


def card_updates(api: FakeSlackApi, ts: str) -> list[dict[str, Any]]:
    return [call.params for call in api.calls_to("chat.update") if call.params.get("ts") == ts]


async def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_admin_actions_do_not_wait_for_a_slow_slack(slack: SlackSimulator) -> None:
    admin = bearer(subject=ADMIN_USER)
    response = await slack.http.post("/autotrain/feedback", json=WEATHER_FEEDBACK, headers=bearer())
    assert response.status_code == 201
    posted = await slack.api.wait_for("chat.postMessage", timeout=10)
    ts = posted[0].response["ts"]
    await wait_until(lambda: bool(slack.api.calls_to("chat.postMessage")), what="the card")
    await slack.service.drain()  # the card is posted; from here every Slack call is slow
    slack.api.delay("chat.update", SLOW_SLACK_SECONDS)
    slack.api.delay("chat.postMessage", SLOW_SLACK_SECONDS)

    timings = {}
    for action in ("approve", "deploy", "rollback"):
        started = time.perf_counter()
        response = await slack.http.post(f"/autotrain/rules/RUL-1001/{action}", headers=admin)
        timings[action] = time.perf_counter() - started
        assert response.status_code == 200, response.text
    assert all(seconds < FAST_ENOUGH_SECONDS for seconds in timings.values()), timings
    assert (await slack.service.get_rule("RUL-1001")).status is RuleStatus.ROLLED_BACK

    # the card still ends up showing the final state
    await wait_until(
        lambda: any("Rolled back by" in block_texts(u["blocks"]) for u in card_updates(slack.api, ts)),
        timeout=4 * SLOW_SLACK_SECONDS + 10,
        what="the card's update to rolled back",
    )
    assert "Rolled back by" in block_texts(card_updates(slack.api, ts)[-1]["blocks"])


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 that records each event it is sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.events.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == event_type]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_an_event_recorded_before_a_sigkill_is_delivered_once_after_restart(
    tmp_path: Path, slack_api: FakeSlackApi, webhook_receiver: WebhookReceiver
) -> None:
    import shutil

    workdir = tmp_path / "served"
    shutil.copytree(SHIPPED_RULES, workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    env = subprocess_environment(
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_GIT="false",
        AUTOTRAIN_AUTO_GENERATE="false",
        AUTOTRAIN_WEBHOOK_URLS=webhook_receiver.url,
        AUTOTRAIN_WEBHOOK_SECRET="webhook-secret",
        AUTOTRAIN_EVENT_LEASE_SECONDS="2",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack_api.base_url,
        AUTOTRAIN_REVIEW_CHANNEL=REVIEW_CHANNEL,
        AUTOTRAIN_ADMINS=ADMIN_USER,
    )
    admin = bearer(subject=ADMIN_USER)
    with serving(workdir, env) as (base_url, process):
        with httpx.Client(base_url=base_url, timeout=10) as http:
            feedback = http.post("/autotrain/feedback", json=WEATHER_FEEDBACK, headers=bearer()).json()
            rule = http.post(f"/autotrain/generate/{feedback['feedback_id']}", headers=admin).json()
            rule_id = rule["rule_id"]
            assert http.post(f"/autotrain/rules/{rule_id}/approve", headers=admin).status_code == 200
            deadline = time.monotonic() + 20
            while len(webhook_receiver.of_type("rule_approved")) < 1:  # cards and webhooks flow before the kill
                assert time.monotonic() < deadline, webhook_receiver.events
                time.sleep(0.05)
            ts = slack_api.calls_to("chat.postMessage")[0].response["ts"]
            # Slack hangs: the deploy's card update (delivered before its webhook) cannot finish
            slack_api.delay("chat.update", 30)
            response = http.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin)
            assert response.status_code == 200, response.text
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert webhook_receiver.of_type("rule_deployed") == []
    slack_api.delay("chat.update", 0)
    restarted_at = time.monotonic()  # the hung request of the killed process was received before this

    with serving(workdir, env) as (base_url, _):
        deadline = time.monotonic() + 30
        while not webhook_receiver.of_type("rule_deployed"):
            assert time.monotonic() < deadline, "the deploy's webhook was never delivered after the restart"
            time.sleep(0.1)
        time.sleep(3)  # a lease's length more: nothing is delivered a second time
    deployed_hooks = webhook_receiver.of_type("rule_deployed")
    assert len(deployed_hooks) == 1
    assert deployed_hooks[0]["data"]["rule"]["rule_id"] == rule_id
    assert deployed_hooks[0]["data"]["rule"]["status"] == "deployed"
    after_restart = [
        call.params for call in slack_api.calls_to("chat.update") if call.at > restarted_at and call.params["ts"] == ts
    ]
    deployed_updates = [u for u in after_restart if "Deployed by" in block_texts(u["blocks"])]
    assert len(deployed_updates) == 1, [block_texts(u["blocks"]) for u in after_restart]
