"""Driving the real Bolt app the way Slack does: signed HTTP requests to /slack/events on the ASGI app,
with the app's Web API client pointed at the fake Slack Web API server (tests/fakes/slack_api.py)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from autotrain.service import PipelineService
from autotrain.settings import Settings
from bot.api import create_app
from bot.runtime import Runtime
from storage.sqlite import SqliteStore
from tests.fakes.slack_api import FakeSlackApi, SlackCall

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
REVIEW_CHANNEL = "CREVIEW"
ADMIN_USER = "UADMIN"
OTHER_USER = "UMEMBER"
ACK_DEADLINE_SECONDS = 3.0


def sign(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class SlackSimulator:
    """Sends what Slack sends. Every request must be acked within Slack's 3 s."""

    http: httpx.AsyncClient
    api: FakeSlackApi
    runtime: Runtime
    ack_seconds: list[float] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def service(self) -> PipelineService:
        return self.runtime.service

    @property
    def store(self) -> SqliteStore:
        return self.runtime.store

    async def send(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        timestamp = int(time.time()) if timestamp is None else timestamp
        request_headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": signature or sign(body, timestamp),
            **(headers or {}),
        }
        started = time.perf_counter()
        response = await self.http.post("/slack/events", content=body.encode(), headers=request_headers)
        elapsed = time.perf_counter() - started
        self.ack_seconds.append(elapsed)
        assert elapsed < ACK_DEADLINE_SECONDS, f"ack took {elapsed:.2f} s"
        return response

    async def form(self, fields: dict[str, str], **kwargs: Any) -> httpx.Response:
        return await self.send(urlencode(fields), "application/x-www-form-urlencoded", **kwargs)

    async def interaction(self, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.form({"payload": json.dumps(payload)}, **kwargs)

    async def command(self, text: str, *, user: str = ADMIN_USER, channel: str = "CGENERAL") -> httpx.Response:
        n = next(self._ids)
        return await self.form(
            {
                "token": "legacy",
                "team_id": "T0001",
                "team_domain": "fake",
                "channel_id": channel,
                "channel_name": "general",
                "user_id": user,
                "user_name": user.lower(),
                "command": "/autotrain",
                "text": text,
                "api_app_id": "A0001",
                "response_url": self.api.response_url(f"command-{n}"),
                "trigger_id": self.api.new_trigger_id(),
            }
        )

    def command_replies(self) -> list[dict[str, Any]]:
        return [call.params for call in self.api.calls if call.method.startswith("response_url:command-")]

    async def press(
        self,
        action_id: str,
        value: str,
        *,
        channel: str,
        ts: str,
        block_id: str,
        user: str = ADMIN_USER,
    ) -> httpx.Response:
        """A click on a button of a message, as Slack sends it (block_actions)."""
        return await self.interaction(
            {
                "type": "block_actions",
                "team": {"id": "T0001", "domain": "fake"},
                "user": {"id": user, "username": user.lower(), "team_id": "T0001"},
                "api_app_id": "A0001",
                "token": "legacy",
                "trigger_id": self.api.new_trigger_id(),
                "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
                "channel": {"id": channel, "name": "channel"},
                "message": {"type": "message", "ts": ts, "text": "message"},
                "response_url": self.api.response_url(f"action-{next(self._ids)}"),
                "actions": [
                    {
                        "type": "button",
                        "action_id": action_id,
                        "block_id": block_id,
                        "value": value,
                        "action_ts": f"{time.time():.6f}",
                    }
                ],
            }
        )

    async def click(
        self, action_id: str, rule_id: str, *, user: str = ADMIN_USER, message_ts: str | None = None
    ) -> httpx.Response:
        """A click on a rule card's button (the card's channel and ts come from the store)."""
        card = await self.store.get_card(rule_id)
        ts = message_ts or (card.message_ts if card and card.message_ts else "1700000000.000100")
        channel = card.channel if card else REVIEW_CHANNEL
        return await self.press(action_id, rule_id, channel=channel, ts=ts, block_id="rule_actions", user=user)

    async def submit_view(
        self, callback_id: str, values: dict[str, Any], *, user: str = ADMIN_USER, private_metadata: str = ""
    ) -> httpx.Response:
        return await self.interaction(
            {
                "type": "view_submission",
                "team": {"id": "T0001", "domain": "fake"},
                "user": {"id": user, "username": user.lower(), "team_id": "T0001"},
                "api_app_id": "A0001",
                "token": "legacy",
                "trigger_id": self.api.new_trigger_id(),
                "view": {
                    "id": "V0001",
                    "type": "modal",
                    "callback_id": callback_id,
                    "private_metadata": private_metadata,
                    "hash": "h1",
                    "state": {"values": values},
                },
            }
        )

    async def submit_feedback(
        self,
        *,
        query: str,
        feedback_text: str,
        ai_response: str = "",
        feedback_type: str = "bug",
        user: str = OTHER_USER,
        channel: str = "CGENERAL",
    ) -> httpx.Response:
        values = {
            "query": {"query": {"type": "plain_text_input", "value": query}},
            "ai_response": {"ai_response": {"type": "plain_text_input", "value": ai_response or None}},
            "feedback_text": {"feedback_text": {"type": "plain_text_input", "value": feedback_text}},
            "feedback_type": {"feedback_type": {"type": "static_select", "selected_option": {"value": feedback_type}}},
        }
        return await self.submit_view(
            "feedback_submit", values, user=user, private_metadata=json.dumps({"channel": channel})
        )

    async def shortcut(
        self, text: str, *, ts: str, thread_ts: str | None = None, user: str = OTHER_USER, channel: str = "CBOT"
    ) -> httpx.Response:
        message: dict[str, Any] = {"type": "message", "text": text, "ts": ts, "user": "UCHATBOT"}
        if thread_ts:
            message["thread_ts"] = thread_ts
        return await self.interaction(
            {
                "type": "message_action",
                "callback_id": "autotrain_report",
                "team": {"id": "T0001", "domain": "fake"},
                "user": {"id": user, "username": user.lower(), "team_id": "T0001"},
                "api_app_id": "A0001",
                "token": "legacy",
                "trigger_id": self.api.new_trigger_id(),
                "channel": {"id": channel, "name": "chatbot"},
                "message": message,
                "message_ts": ts,
                "response_url": self.api.response_url(f"shortcut-{next(self._ids)}"),
            }
        )

    async def event(self, event: dict[str, Any]) -> httpx.Response:
        n = next(self._ids)
        body = {
            "token": "legacy",
            "team_id": "T0001",
            "api_app_id": "A0001",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{n:04d}",
            "event_time": int(time.time()),
        }
        return await self.send(json.dumps(body), "application/json")


def block_texts(blocks: list[dict[str, Any]]) -> str:
    """Every piece of text in the blocks, one per line."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"]["text"])
        for item in block.get("fields") or []:
            parts.append(item["text"])
        if block["type"] == "context":
            parts.extend(item.get("text", "") for item in block["elements"])
    return "\n".join(parts)


def action_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def ok(call: SlackCall) -> bool:
    """Slack accepted the call."""
    return call.status == 200 and isinstance(call.response, dict) and call.response.get("ok") is True


def slack_settings(tmp_path: Path, rules_dir: Path, api: FakeSlackApi, **overrides: Any) -> Settings:
    from tests.conftest import make_settings

    values: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": api.base_url,
        "review_channel": REVIEW_CHANNEL,
        "admins": (ADMIN_USER,),
        "auto_generate": True,
    }
    values.update(overrides)
    return make_settings(tmp_path, rules_dir, **values)


@pytest.fixture
async def slack(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> AsyncIterator[SlackSimulator]:
    """The whole server (REST API + Slack in HTTP mode) with Slack pointed at the fake Web API."""
    app = create_app(slack_settings(tmp_path, rules_dir, slack_api))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            yield SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)
