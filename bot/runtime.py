"""The composition root: settings in, a wired PipelineService out (store, generator, rule files, hooks)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from autotrain.generators.heuristic import HeuristicRuleGenerator
from autotrain.ports import RuleGenerator
from autotrain.rulefiles import RuleFiles
from autotrain.service import Clock, PipelineService, utcnow
from autotrain.settings import Settings
from bot.auth import resolve_secret
from bot.reload import HttpReloadHook
from storage.sqlite import SqliteStore

log = logging.getLogger("autotrain")


@dataclass
class Runtime:
    settings: Settings
    store: SqliteStore
    service: PipelineService
    jwt_secret: str

    async def close(self) -> None:
        await self.service.drain()
        await self.store.close()


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
    return Runtime(settings=settings, store=store, service=service, jwt_secret=resolve_secret(settings))


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
