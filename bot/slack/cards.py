"""Rule cards in the review channel and the App Home tab, kept in step with the pipeline.

`RuleCardPublisher` is a PipelineNotifier: a new rule gets a card (claimed in the database first, so a
double event or a second process never posts two), every later change updates that card in place. A card
that could not be posted is marked failed and retried by a background loop, so none is silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict

from slack_sdk.web.async_client import AsyncWebClient

from autotrain.evaluation import candidate_version
from autotrain.i18n import Language, speaking
from autotrain.models import Deployment, EventKind, PipelineEvent, RuleStatus
from autotrain.options import Clock
from autotrain.ports import DeploymentStore, EvaluationStore, FeedbackStore, ReviewCardStore, RuleStore
from autotrain.settings import Settings
from autotrain.usecases.lookup import rule_or_404
from autotrain.usecases.reports import StatusReports
from bot.ratelimit import Throttle
from bot.slack import blocks

log = logging.getLogger("autotrain.slack")

# A post in flight (with the client's own retries on 429 / 5xx) is never taken for abandoned before this.
POSTING_LEASE_SECONDS = 300.0


class HomeTabs:
    """Publishes the App Home dashboard, and refreshes it for users who opened it recently.

    Refreshes are coalesced: a burst of rule events (a run-all) republishes each Home once, not once per rule.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        reports: StatusReports,
        rules: RuleStore,
        settings: Settings,
        keep: int = 50,
        refresh_delay_seconds: float = 1.0,
    ) -> None:
        self.client = client
        self.reports = reports
        self.rules = rules
        self.settings = settings
        self.keep = keep
        self.refresh_delay_seconds = refresh_delay_seconds
        self._recent: OrderedDict[str, tuple[float, Language]] = OrderedDict()  # user → (opened at, language)
        self._refresh: asyncio.Task[None] | None = None
        self._dirty = False

    def request_refresh(self) -> None:
        self._dirty = True
        if self._recent and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._refresh_later())

    async def _refresh_later(self) -> None:
        while self._dirty:  # a change during a refresh triggers one more
            self._dirty = False
            await asyncio.sleep(self.refresh_delay_seconds)
            await self.refresh_recent()

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh

    async def publish(self, user_id: str, language: Language | None = None) -> None:
        """`language`: the user's (remembered for the refreshes); AUTOTRAIN_LANGUAGE when never told."""
        language = language or self._recent.get(user_id, (0.0, self.settings.language))[1]
        self._recent[user_id] = (time.monotonic(), language)
        self._recent.move_to_end(user_id)
        while len(self._recent) > self.keep:
            self._recent.popitem(last=False)
        with speaking(language):
            await self._publish(user_id)

    async def _publish(self, user_id: str) -> None:
        report = await self.reports.status()
        pending = await self.rules.list_rules(status=RuleStatus.PENDING, module_name=None, limit=10, offset=0)
        deployed = await self.rules.list_rules(status=RuleStatus.DEPLOYED, module_name=None, limit=100, offset=0)
        came_back = sorted((r for r in deployed.items if r.recurrences), key=lambda r: -r.recurrences)
        view = blocks.home_view(report, pending.items, pending.total, self.settings, came_back=came_back)
        await self.client.views_publish(user_id=user_id, view=view)

    async def refresh_recent(self) -> None:
        for user_id in list(self._recent):
            try:
                await self.publish(user_id)
            except Exception as exc:  # a stale home tab is not worth failing an action for
                log.warning("could not refresh the App Home of %s: %s", user_id, exc)


class RuleCardPublisher:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        feedback: FeedbackStore,
        rules: RuleStore,
        deployments: DeploymentStore,
        cards: ReviewCardStore,
        evaluations: EvaluationStore,
        settings: Settings,
        clock: Clock,
        home: HomeTabs | None = None,
    ) -> None:
        self.client = client
        self.feedback = feedback
        self.rules = rules
        self.deployments = deployments
        self.store = cards
        self.clock = clock
        self.channel = settings.review_channel
        self.language = settings.language
        self.canary_percent = settings.canary_percent
        self.require_evaluation = settings.require_evaluation
        self.evaluations = evaluations
        self.retry_seconds = settings.card_retry_seconds
        self.home = home
        self.throttle = Throttle(settings.slack_post_rate_limit, settings.rate_limit_storage)
        self._retry_task: asyncio.Task[None] | None = None
        # a lock per card being updated, gone once no update holds or waits for it
        self._updating: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def notify(self, event: PipelineEvent) -> None:
        if event.kind is EventKind.RULE_CREATED:
            await self.post_card(event.rule.rule_id)
        else:
            await self.update_card(event.rule.rule_id, event.deployment)
        if self.home is not None:
            self.home.request_refresh()

    async def render(self, rule_id: str, deployment: Deployment | None = None) -> tuple[str, list[blocks.Block]]:
        """The card as the channel sees it: in the workspace's language, whoever's action it follows."""
        with speaking(self.language):
            return await self._render(rule_id, deployment)

    async def _render(self, rule_id: str, deployment: Deployment | None) -> tuple[str, list[blocks.Block]]:
        rule = await rule_or_404(self.rules, rule_id)
        feedback = await self.feedback.get_feedback(rule.feedback_id)
        if deployment is None and rule.status in (RuleStatus.DEPLOYED, RuleStatus.ROLLED_BACK):
            latest = await self.deployments.list_deployments(rule_id=rule_id, limit=1, offset=0)
            deployment = latest.items[0] if latest.items else None
        examples = await self.rules.cluster_feedback_texts(rule_id) if rule.cluster_size > 1 else None
        return blocks.rule_card(
            rule,
            feedback,
            deployment,
            cluster_examples=examples,
            canary_percent=self.canary_percent,
            # the replay of the line the card shows: the gate (deploys.py) looks at that one too
            evaluation=await self.evaluations.latest_evaluation(
                rule_id, candidate_version(rule.module_name, rule.old_rule, rule.new_rule)
            ),
            evaluation_required=self.require_evaluation,
        )

    async def post_card(self, rule_id: str) -> bool:
        """Post the card of a rule that has none; False when there is no review channel or it is taken."""
        if not self.channel:
            return False
        attempt = await self.store.claim_card(
            rule_id, channel=self.channel, now=self.clock(), posting_lease_seconds=POSTING_LEASE_SECONDS
        )
        if attempt is None:
            return False
        try:
            text, card = await self.render(rule_id)
            await self.throttle.wait(self.channel)  # Slack allows about one message a second per channel
            response = await self.client.chat_postMessage(
                channel=self.channel, text=text, blocks=card, unfurl_links=False, unfurl_media=False
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            await self.store.card_failed(rule_id, attempt=attempt, error=error, now=self.clock())
            log.warning("card of %s not posted (retried in %ss): %s", rule_id, self.retry_seconds, exc)
            return False
        return await self.store.card_posted(
            rule_id, attempt=attempt, channel=response["channel"], message_ts=response["ts"], now=self.clock()
        )

    async def update_card(self, rule_id: str, deployment: Deployment | None = None) -> None:
        card = await self.store.get_card(rule_id)
        if card is None or card.state != "posted" or not card.message_ts:
            await self.post_card(rule_id)  # never posted (Slack was down, or turned on later): post it now
            return
        # One update of a card at a time, rendered after the throttle's wait: two events of one rule (its approval
        # and its replay's result) never let the older rendering reach Slack last.
        lock = self._updating.setdefault(rule_id, asyncio.Lock())
        async with lock:
            await self.throttle.wait(card.channel)
            text, rendered = await self.render(rule_id, deployment)
            try:
                await self.client.chat_update(channel=card.channel, ts=card.message_ts, text=text, blocks=rendered)
            except Exception as exc:
                log.warning("card of %s not updated: %s", rule_id, exc)

    async def retry_missing(self) -> int:
        """Post the cards of rules under review that have none (never posted, or failed earlier)."""
        posted = 0
        rule_ids = await self.store.rules_without_card(
            now=self.clock(),
            retry_after_seconds=self.retry_seconds,
            posting_lease_seconds=POSTING_LEASE_SECONDS,
            limit=20,
        )
        for rule_id in rule_ids:
            posted += await self.post_card(rule_id)
        return posted

    def start(self) -> None:
        if self.channel and self._retry_task is None:
            self._retry_task = asyncio.create_task(self._retry_loop())

    async def stop(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None

    async def _retry_loop(self) -> None:
        while True:
            try:
                await self.retry_missing()
            except Exception:
                log.exception("retrying rule cards failed; trying again in %ss", self.retry_seconds)
            await asyncio.sleep(self.retry_seconds)
