"""Alerts to the alert channel and digests to the digest channel (a MonitoringSink)."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.effect import CanaryOutcome
from autotrain.monitoring import AlertEvent, Digest
from bot.slack import monitoring_blocks

log = logging.getLogger("autotrain.slack")


class SlackMonitoringSink:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        alert_channel: str | None,
        digest_channel: str | None,
        review_channel: str | None = None,
    ) -> None:
        self.client = client
        self.alert_channel = alert_channel
        self.digest_channel = digest_channel
        self.review_channel = review_channel  # where the auto-canary says what it decided, beside the cards

    async def alert(self, event: AlertEvent) -> None:
        if not self.alert_channel:
            return
        text, rendered = monitoring_blocks.alert_message(event)
        await self.client.chat_postMessage(channel=self.alert_channel, text=text, blocks=rendered, unfurl_links=False)

    async def canary_decided(self, outcome: CanaryOutcome) -> None:
        if not self.review_channel:
            return
        text, rendered = monitoring_blocks.canary_decision_message(outcome)
        await self.client.chat_postMessage(channel=self.review_channel, text=text, blocks=rendered, unfurl_links=False)

    async def digest(self, digest: Digest) -> None:
        if not self.digest_channel:
            return
        permalinks: dict[str, str] = {}
        for rule in digest.deployed[:15]:
            if rule.channel and rule.message_ts:
                try:
                    response = await self.client.chat_getPermalink(channel=rule.channel, message_ts=rule.message_ts)
                    permalinks[rule.rule_id] = response["permalink"]
                except SlackApiError as exc:
                    # Slack's error code when it gave one; an answer without one (a proxy's 503 page) is its status
                    log.info(
                        "no link to the card of %s (the digest lists it without one): chat.getPermalink answered"
                        " HTTP %s (%s)",
                        rule.rule_id,
                        exc.response.status_code,
                        exc.response.get("error") or "no error code",
                    )
                except Exception as exc:  # unreachable, a timeout: the digest still goes out, without the link
                    log.info("no link to the card of %s (the digest lists it without one): %s", rule.rule_id, exc)
        text, rendered = monitoring_blocks.digest_message(digest, permalinks)
        await self.client.chat_postMessage(
            channel=self.digest_channel, text=text, blocks=rendered, unfurl_links=False, unfurl_media=False
        )
