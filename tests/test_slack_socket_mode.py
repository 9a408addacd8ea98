"""Socket Mode: with SLACK_APP_TOKEN the server connects out over a WebSocket (served here on loopback,
its URL handed out by the fake Web API's apps.connections.open) and handles what Slack sends through it."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import WSMsgType, web
from fastapi import FastAPI

from bot.api import create_app
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import ADMIN_USER, BOT_TOKEN, REVIEW_CHANNEL, slack_settings
from tests.test_slack_malformed import BLOCK_ACTIONS, VIEWS, block_actions


class FakeSocketModeServer:
    """Slack's side of a Socket Mode connection: says hello, sends envelopes, collects the acks."""

    def __init__(self) -> None:
        self.acks: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.acked = asyncio.Event()
        self._new_ack = asyncio.Condition()
        self._socket: web.WebSocketResponse | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/link", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/link"

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        await socket.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        self.connected.set()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                self.acks.append(json.loads(message.data))
                self.acked.set()
                async with self._new_ack:
                    self._new_ack.notify_all()
        return socket

    async def ack_of(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The ack the app sent for this envelope (fails when none comes within `timeout`)."""

        def found() -> dict[str, Any] | None:
            return next((ack for ack in self.acks if ack.get("envelope_id") == envelope_id), None)

        async with asyncio.timeout(timeout), self._new_ack:
            await self._new_ack.wait_for(lambda: found() is not None)
        ack = found()
        assert ack is not None
        return ack

    async def send(self, envelope: dict[str, Any]) -> None:
        assert self._socket is not None
        await self._socket.send_str(json.dumps(envelope))


async def test_socket_mode_receives_a_command_and_acks_it(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    server = FakeSocketModeServer()
    await server.start()
    slack_api.socket_mode_url = server.url
    settings = slack_settings(tmp_path, rules_dir, slack_api, slack_signing_secret=None, slack_app_token="xapp-test")
    assert settings.socket_mode
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(server.connected.wait(), 10)
            opened = slack_api.calls_to("apps.connections.open")
            assert opened and opened[0].token == "xapp-test"
            await server.send(
                {
                    "envelope_id": "env-1",
                    "type": "slash_commands",
                    "accepts_response_payload": True,
                    "payload": {
                        "team_id": "T0001",
                        "channel_id": "CGENERAL",
                        "user_id": ADMIN_USER,
                        "command": "/autotrain",
                        "text": "help",
                        "api_app_id": "A0001",
                        "response_url": slack_api.response_url("socket"),
                        "trigger_id": slack_api.new_trigger_id(),
                    },
                }
            )
            await asyncio.wait_for(server.acked.wait(), 10)
            assert server.acks[0]["envelope_id"] == "env-1"
            replies = await slack_api.wait_for("response_url:socket")
            assert "/autotrain feedback" in replies[0].params["text"]
            # no HTTP endpoint for Slack in Socket Mode
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                assert (await http.post("/slack/events", content=b"{}")).status_code == 404
    finally:
        await server.stop()


async def test_server_serves_the_api_while_socket_mode_cannot_connect(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    slack_api.socket_mode_url = None  # apps.connections.open fails
    settings = slack_settings(tmp_path, rules_dir, slack_api, slack_signing_secret=None, slack_app_token="xapp-test")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
        await slack_api.wait_for("apps.connections.open")
    slack_api.violations.clear()  # the refused connection is what this test wanted


@dataclass
class SocketSlack:
    """The whole server in Socket Mode, connected to the fake Socket Mode server."""

    server: FakeSocketModeServer
    api: FakeSlackApi
    app: FastAPI
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def interaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send an interaction envelope, as Slack does; the app's ack for it."""
        envelope_id = f"env-{next(self._ids)}"
        await self.server.send(
            {"envelope_id": envelope_id, "type": "interactive", "accepts_response_payload": False, "payload": payload}
        )
        return await self.server.ack_of(envelope_id)


@pytest.fixture
async def socket_slack(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> AsyncIterator[SocketSlack]:
    server = FakeSocketModeServer()
    await server.start()
    slack_api.socket_mode_url = server.url
    settings = slack_settings(tmp_path, rules_dir, slack_api, slack_signing_secret=None, slack_app_token="xapp-test")
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(server.connected.wait(), 10)
            yield SocketSlack(server=server, api=slack_api, app=app)
    finally:
        await server.stop()


MALFORMED = {**BLOCK_ACTIONS, **VIEWS}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_interactions_are_acknowledged_over_socket_mode(
    socket_slack: SocketSlack, payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11 in Socket Mode: the same check as over HTTP; the envelope is acked, nothing is logged as an error,
    and the next, well-formed click is answered as usual."""
    caplog.set_level(logging.INFO)
    ack = await socket_slack.interaction(payload)
    assert ack == {"envelope_id": "env-1"}
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("malformed Slack interaction")]
    # the shape check lets real payloads through: a click on an unknown rule gets the polite private reply
    ack = await socket_slack.interaction(block_actions())
    assert ack == {"envelope_id": "env-2"}
    [reply] = await socket_slack.api.wait_for("chat.postEphemeral")
    assert reply.token == BOT_TOKEN
    assert reply.params == {
        "channel": REVIEW_CHANNEL,
        "user": ADMIN_USER,
        "text": "🤷 No rule RUL-1001.",
        "team_id": "T0001",
    }
    # the malformed envelope itself made no call: the click's reply is the only message
    assert [c.method for c in socket_slack.api.calls if c.method.startswith(("chat.", "views.", "response_url"))] == [
        "chat.postEphemeral"
    ]
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, [r.getMessage() for r in problems]
