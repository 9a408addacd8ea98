"""The composition root: settings in, a wired PipelineService out (store, generator, rule files, hooks)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from autotrain.generators.heuristic import HeuristicRuleGenerator
from autotrain.monitoring import AlertThresholds, Monitor
from autotrain.ports import RuleGenerator, RuleHistory
from autotrain.rulefiles import RuleFiles
from autotrain.service import Clock, PipelineService, utcnow
from autotrain.settings import Settings
from bot.auth import verification_key
from bot.ratelimit import LimitsRateLimiter
from bot.reload import HttpReloadHook
from bot.webhooks import WebhookDispatcher, WebhookNotifier
from storage.sqlite import SqliteStore

log = logging.getLogger("autotrain")


@dataclass
class Runtime:
    settings: Settings
    store: SqliteStore
    service: PipelineService
    jwt_secret: str  # the key that verifies tokens (HS256 secret or RS256 public key)
    monitor: Monitor
    webhooks: WebhookDispatcher | None = None

    async def close(self) -> None:
        await self.service.drain()
        await self.store.close()


def alert_thresholds(settings: Settings) -> AlertThresholds:
    return AlertThresholds(
        pending_max=settings.alert_pending_max,
        error_rate_max=settings.alert_error_rate_max,
        error_rate_window_minutes=settings.alert_error_rate_window_minutes,
        error_rate_min_attempts=settings.alert_error_rate_min_attempts,
        deploys_per_day_max=settings.alert_deploys_per_day_max,
        approval_hours_max=settings.alert_approval_hours_max,
        cooldown_seconds=settings.alert_cooldown_seconds,
    )


def build_generator(settings: Settings) -> RuleGenerator:
    if settings.claude_enabled:
        from bot.claude import ClaudeRuleGenerator

        return ClaudeRuleGenerator.from_settings(settings)
    return HeuristicRuleGenerator(settings.allowed_modules)


async def open_runtime(settings: Settings, *, clock: Clock = utcnow, reconcile: bool = False) -> Runtime:
    store = SqliteStore(settings.database_path)
    await store.open()
    rule_files = RuleFiles(settings.rules_dir, settings.allowed_modules, settings.backup_keep)
    reload_hook = HttpReloadHook(settings.reload_url, settings.reload_timeout_seconds) if settings.reload_url else None
    service = PipelineService(
        store=store,
        generator=build_generator(settings),
        rule_files=rule_files,
        reload_hook=reload_hook,
        clock=clock,
        auto_generate=settings.auto_generate,
        run_all_concurrency=settings.run_all_concurrency,
        generation_wait_seconds=settings.generation_wait_seconds,
        rate_limiter=LimitsRateLimiter(settings.feedback_rate_limit, settings.rate_limit_storage),
        timezone=ZoneInfo(settings.timezone),
        auto_approve_confidence=settings.auto_approve_confidence,
        auto_deploy=settings.auto_deploy,
        require_canary=settings.require_canary,
        cluster_threshold=settings.cluster_threshold,
        history=git_history(settings),
    )
    monitor = Monitor(
        store=store,
        thresholds=alert_thresholds(settings),
        clock=clock,
        timezone=ZoneInfo(settings.timezone),
        approval_window_days=settings.approval_window_days,
        holder=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}",
    )
    service.metrics_provider = monitor.metrics
    webhooks = None
    if settings.webhook_urls and settings.webhook_secret is not None:
        notifier = WebhookNotifier(store, settings.webhook_urls, clock)
        service.add_notifier(notifier)
        monitor.add_sink(notifier)
        webhooks = WebhookDispatcher(
            store,
            secret=settings.webhook_secret.get_secret_value(),
            clock=clock,
            max_attempts=settings.webhook_max_attempts,
        )
    if reconcile:
        report = await service.reconcile()
        if report.deployments_completed or report.deployments_aborted or report.feedback_requeued:
            log.warning(
                "reconciled after an interrupted run: deployments completed %s, aborted %s; feedback requeued %s",
                report.deployments_completed,
                report.deployments_aborted,
                report.feedback_requeued,
            )
    return Runtime(
        settings=settings,
        store=store,
        service=service,
        jwt_secret=verification_key(settings),
        monitor=monitor,
        webhooks=webhooks,
    )


def describe(settings: Settings) -> list[str]:
    """What is on and off, for the start-up log (never the secrets themselves)."""
    missing = [m for m in settings.allowed_modules if not (settings.rules_dir / m).exists()]
    lines = [
        f"database: {settings.database_path.resolve()}",
        f"rules folder: {settings.rules_dir.resolve()} (files: {', '.join(settings.allowed_modules)})"
        + (f"; missing, created on first deploy: {', '.join(missing)}" if missing else ""),
        generator_description(settings),
        slack_description(settings),
        f"auto-generate on submit: {'on' if settings.auto_generate else 'off'}",
        f"reload hook: {settings.reload_url}"
        if settings.reload_url
        else "reload hook: off (AUTOTRAIN_RELOAD_URL not set)",
        monitoring_description(settings),
        webhook_description(settings),
        "JWT secret: from AUTOTRAIN_JWT_SECRET"
        if settings.jwt_secret
        else "JWT secret: generated file beside the database (run `autotrain token --role admin` for a token)",
    ]
    return lines


def slack_description(settings: Settings) -> str:
    if not settings.slack_enabled:
        return "Slack: off (set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET, or SLACK_APP_TOKEN for Socket Mode)"
    mode = "Socket Mode" if settings.socket_mode else "HTTP mode at /slack/events"
    channel = settings.review_channel or "none (AUTOTRAIN_REVIEW_CHANNEL not set: no rule cards)"
    admins = len(settings.admins)
    group = f" + user group {settings.admin_usergroup}" if settings.admin_usergroup else ""
    api = f"; Web API at {settings.slack_api_url}" if settings.slack_api_url else ""
    return f"Slack: on, {mode}; review channel {channel}; {admins} admins{group}{api}"


def generator_description(settings: Settings) -> str:
    if not settings.claude_enabled:
        return "rule generator: offline heuristic (ANTHROPIC_API_KEY not set)"
    where = f" at {settings.anthropic_base_url}" if settings.anthropic_base_url else ""
    return (
        f"rule generator: Claude {settings.model}{where} ({settings.claude_max_retries} retries, "
        f"{settings.claude_timeout_seconds:g} s timeout, {settings.claude_output_retries} re-asks on invalid output)"
    )


def monitoring_description(settings: Settings) -> str:
    if not settings.scheduler_enabled:
        return "scheduler: off (AUTOTRAIN_SCHEDULER=false): no alerts, no digest, no webhook deliveries"
    alerts = settings.alert_channel or "no channel (AUTOTRAIN_ALERT_CHANNEL not set)"
    digest = settings.digest_channel or "no channel (AUTOTRAIN_DIGEST_CHANNEL not set)"
    return (
        f"scheduler: alerts every {settings.alert_interval_seconds} s to {alerts}; "
        f"digest '{settings.digest_cron}' {settings.timezone} to {digest}"
    )


def webhook_description(settings: Settings) -> str:
    if not settings.webhook_urls:
        return "webhooks: off (AUTOTRAIN_WEBHOOK_URLS not set)"
    if settings.webhook_secret is None:
        return "webhooks: OFF — AUTOTRAIN_WEBHOOK_URLS is set but AUTOTRAIN_WEBHOOK_SECRET is not (events are signed)"
    return f"webhooks: {len(settings.webhook_urls)} URL(s), signed, up to {settings.webhook_max_attempts} attempts"


def git_history(settings: Settings) -> RuleHistory | None:
    """Every deploy, promote and rollback becomes a commit in the rules folder (AUTOTRAIN_GIT)."""
    if not settings.git_history:
        return None
    from bot.git_history import AsyncGitHistory

    try:
        return AsyncGitHistory.open(settings.rules_dir)
    except Exception as exc:  # no git binary, unwritable folder: deploys still work, without history
        log.error("git history is off: %s", exc)
        return None
