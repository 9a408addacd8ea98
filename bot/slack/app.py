"""The Slack app, assembled in one place: a Bolt AsyncApp with our listeners, and its start-up in HTTP mode
or Socket Mode. The composition root (`bot/runtime.py`) hands it the Web API client, the rule cards and the
App Home it built; nothing here reaches into the pipeline's internals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.monitoring import Monitor
from autotrain.service import PipelineService
from autotrain.settings import Settings
from bot.slack.cards import HomeTabs, RuleCardPublisher
from bot.slack.deps import AdminDirectory, SlackDeps
from bot.slack.listeners import malformed_reason, register_listeners
from bot.slack.people import SlackPeople

log = logging.getLogger("autotrain.slack")


class ScreenedSocketModeHandler(AsyncSocketModeHandler):
    """Socket Mode's counterpart of the check the HTTP route (`bot/api.py`) makes before Bolt: an interaction
    envelope whose payload `malformed_reason` rejects is acknowledged and goes no further.

    It has to come before Bolt, not in a Bolt middleware: Bolt reads the payload while it builds the request
    (`"id" in payload["channel"]`), and its listener matchers and error handler index `actions[0]` and
    `user["id"]`, so such a payload fails before, or outside, anything registered on the app. An envelope that
    is not acknowledged is sent again by Slack."""

    async def handle(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        if req.type == "interactive":  # what arrives over HTTP as a form-encoded `payload=<json>`
            reason = malformed_reason(req.payload)
            if reason:
                log.warning("malformed Slack interaction ignored: %s", reason)
                await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
                return
        await super().handle(client, req)  # type: ignore[arg-type]


@dataclass
class SlackBot:
    """The Slack side of a running server: the Bolt app, and in Socket Mode its connection."""

    app: AsyncApp
    client: AsyncWebClient
    deps: SlackDeps
    settings: Settings
    socket_handler: Any = None
    connecting: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        """Keep posting the cards a previous run could not; in Socket Mode, connect in the background, so
        Slack being unreachable never keeps the REST API from serving."""
        self.deps.cards.start()
        if self.settings.socket_mode:
            assert self.settings.slack_app_token is not None
            token = self.settings.slack_app_token.get_secret_value()
            self.socket_handler = ScreenedSocketModeHandler(self.app, token)
            self.connecting = asyncio.create_task(self.connect_socket_mode())

    async def connect_socket_mode(self, first_delay: float = 1.0, max_delay: float = 60.0) -> None:
        delay = first_delay
        while True:
            try:
                await self.socket_handler.connect_async()
                log.info("Slack Socket Mode connected")
                return
            except Exception as exc:  # the client reconnects by itself once connected; until then, retry
                log.error("Slack Socket Mode could not connect (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)

    async def close(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.connecting
        await self.deps.cards.stop()
        await self.deps.home.stop()
        if self.socket_handler is not None:
            await self.socket_handler.close_async()


def build_web_client(settings: Settings) -> AsyncWebClient:
    assert settings.slack_bot_token is not None
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url or AsyncWebClient.BASE_URL,
        # Slack answers 429 with Retry-After on chat.postMessage / chat.update: wait and retry
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def build_slack_app(
    settings: Settings,
    service: PipelineService,
    monitor: Monitor,
    *,
    client: AsyncWebClient,
    cards: RuleCardPublisher,
    home: HomeTabs,
    people: SlackPeople | None = None,
) -> SlackBot:
    """`people`: the one users.info cache of the process (git authors use it too); a new one when not given."""
    signing_secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        # Socket Mode has no HTTP requests to sign
        request_verification_enabled=signing_secret is not None,
        logger=logging.getLogger("autotrain.slack.bolt"),
    )
    deps = SlackDeps(
        settings=settings,
        service=service,
        admins=AdminDirectory(client, settings.admins, settings.admin_usergroup),
        cards=cards,
        home=home,
        monitor=monitor,
        people=people or SlackPeople(client),
    )
    register_listeners(app, deps)

    @app.error
    async def on_error(error: Exception, body: dict) -> None:
        # Bolt's own failures (not ours, which listeners catch): log them, Slack gets no stack trace
        log.error("Slack request failed: %s", error, exc_info=error)

    return SlackBot(app=app, client=client, deps=deps, settings=settings)
