"""The Slack app, assembled in one place: a Bolt AsyncApp with our listeners, its Web API client, and the
rule-card notifier wired into the pipeline. Tests build their own with their own settings and service."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.monitoring import Monitor
from autotrain.service import PipelineService
from autotrain.settings import Settings
from bot.slack.cards import HomeTabs, RuleCardPublisher
from bot.slack.deps import AdminDirectory, SlackDeps
from bot.slack.listeners import register_listeners

log = logging.getLogger("autotrain.slack")


@dataclass
class SlackBot:
    app: AsyncApp
    client: AsyncWebClient
    deps: SlackDeps

    async def start(self) -> None:
        """Post the cards a previous run could not, then keep retrying failed ones in the background."""
        self.deps.cards.start()

    async def close(self) -> None:
        await self.deps.cards.stop()
        await self.deps.home.stop()


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


def build_slack_app(settings: Settings, service: PipelineService, monitor: Monitor) -> SlackBot:
    client = build_web_client(settings)
    signing_secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        # Socket Mode has no HTTP requests to sign
        request_verification_enabled=signing_secret is not None,
        logger=logging.getLogger("autotrain.slack.bolt"),
    )
    home = HomeTabs(client, service, settings)
    cards = RuleCardPublisher(client=client, service=service, store=service.store, settings=settings, home=home)
    deps = SlackDeps(
        settings=settings,
        service=service,
        admins=AdminDirectory(client, settings.admins, settings.admin_usergroup),
        cards=cards,
        home=home,
        monitor=monitor,
    )
    register_listeners(app, deps)

    @app.error
    async def on_error(error: Exception, body: dict) -> None:
        # Bolt's own failures (not ours, which listeners catch): log them, Slack gets no stack trace
        log.error("Slack request failed: %s", error, exc_info=error)

    service.add_notifier(cards)
    return SlackBot(app=app, client=client, deps=deps)
