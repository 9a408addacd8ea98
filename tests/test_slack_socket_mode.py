"""Socket Mode: with SLACK_APP_TOKEN the server connects out over a WebSocket (served here on loopback,
its URL handed out by the fake Web API's apps.connections.open) and handles what Slack sends through it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from aiohttp import WSMsgType, web

from bot.api import create_app
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import ADMIN_USER, slack_settings


class FakeSocketModeServer:
    """Slack's side of a Socket Mode connection: says hello, sends envelopes, collects the acks."""

    def __init__(self) -> None:
        self.acks: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.acked = asyncio.Event()
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
        return socket

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
