"""The composition root: settings in, every object built with all its collaborators out (store, use cases,
the facade, the event dispatcher, Slack, webhooks, the monitor). Nothing is patched on afterwards."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from autotrain.effect import EffectSettings
from autotrain.evaluation import ChatbotReplay, EvaluationLimits, ReplayJudge
from autotrain.generators.heuristic import HeuristicRuleGenerator
from autotrain.i18n import set_default_language
from autotrain.monitoring import AlertThresholds, Monitor, MonitoringSink
from autotrain.notifications import EventDispatcher
from autotrain.options import Clock, PipelineOptions, utcnow
from autotrain.ports import PeopleDirectory, PipelineNotifier, RuleGenerator, RuleHistory
from autotrain.rulefiles import RuleFiles
from autotrain.service import PipelineService, Readers
from autotrain.settings import SEED_RULES_DIR, Settings, redacted_url
from autotrain.usecases.commits import push_pending
from autotrain.usecases.complaints import Complaints
from autotrain.usecases.deploys import DeployRules
from autotrain.usecases.effects import DecideCanaries, RuleEffects
from autotrain.usecases.evaluate import EvaluateOnChange, EvaluateRules
from autotrain.usecases.file_truth import DatabaseTruth, FolderTruth, RuleFileTruth
from autotrain.usecases.generation import GenerateRules
from autotrain.usecases.intake import SubmitFeedback
from autotrain.usecases.locks import RuleFileLocks
from autotrain.usecases.materialize import MaterializeRuleFiles
from autotrain.usecases.reconcile import PendingDeployments, Reconcile
from autotrain.usecases.reloads import ChatbotReloads
from autotrain.usecases.reports import StatusReports
from autotrain.usecases.review import ReviewRules
from autotrain.usecases.rulesets import RuleSets
from autotrain.usecases.run_all import RunAll
from bot.auth import verification_key
from bot.ratelimit import LimitsRateLimiter
from bot.reload import HttpReloadHook
from bot.shared_history import SharedGitHistory
from bot.webhooks import WebhookDispatcher, WebhookNotifier
from storage.postgres import PostgresStore
from storage.sqlite import SqliteStore

if TYPE_CHECKING:
    from bot.slack.app import SlackBot
    from bot.slack.people import SlackPeople

log = logging.getLogger("autotrain")


@dataclass
class Runtime:
    """Everything a process runs, built once by `open_runtime`."""

    settings: Settings
    store: SqliteStore | PostgresStore
    service: PipelineService
    jwt_secret: str  # the key that verifies tokens (HS256 secret or RS256 public key)
    monitor: Monitor
    events: EventDispatcher
    generation: GenerateRules
    generator: RuleGenerator
    rule_files: RuleFiles
    options: PipelineOptions
    clock: Clock
    reloads: ChatbotReloads
    effects: RuleEffects
    webhooks: WebhookDispatcher | None = None
    slack: SlackBot | None = None
    history: RuleHistory | None = None  # the rules folder's git history (None: AUTOTRAIN_GIT off or unusable)
    # PostgreSQL: this instance's rules folder, a copy of the versions in the database (None: the folder is the truth)
    materializer: MaterializeRuleFiles | None = None
    _started: bool = False
    _warming: asyncio.Task[None] | None = None

    async def push_pending(self) -> bool:
        """The scheduler's retry of failed pushes to AUTOTRAIN_GIT_REMOTE (True: nothing left unpushed)."""
        if self.history is None:
            return True
        return await push_pending(self.history, self.store, clock=self.clock)

    async def start(self) -> None:
        """Serve: deliver events in the background, start Slack (card retries, Socket Mode), and build the
        intake's complaint index and the deployed rules' effect windows in the background (the first requests
        need not wait for them)."""
        self._started = True
        if self.materializer is not None:
            self.materializer.start()
        self.events.start()
        self._warming = asyncio.create_task(self._warm())
        self._warming.add_done_callback(_log_warm_failure)
        if self.slack is not None:
            await self.slack.start()

    async def _warm(self) -> None:
        """What the first requests would otherwise count: the complaint index, and the window before each deploy
        (its effect's figures)."""
        await self.generation.complaints.warm()
        await self.effects.warm()

    async def close(self) -> None:
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
            await asyncio.wait([self._warming])
        await self.generation.drain()
        if self._started:
            await self.events.stop()
            await self.events.drain()  # what was recorded before shutdown, while Slack is still there
            if self.slack is not None:
                await self.slack.close()
        if self.materializer is not None:
            await self.materializer.stop()
        await self.store.close()


def _log_warm_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:  # the first feedback builds it instead
        log.warning("building the complaint index at start failed: %s", task.exception())


def alert_thresholds(settings: Settings) -> AlertThresholds:
    return AlertThresholds(
        pending_max=settings.alert_pending_max,
        error_rate_max=settings.alert_error_rate_max,
        error_rate_window_minutes=settings.alert_error_rate_window_minutes,
        error_rate_min_attempts=settings.alert_error_rate_min_attempts,
        deploys_per_day_max=settings.alert_deploys_per_day_max,
        approval_hours_max=settings.alert_approval_hours_max,
        cooldown_seconds=settings.alert_cooldown_seconds,
        recurrences_min=settings.alert_recurrences_min,
    )


def pipeline_options(settings: Settings) -> PipelineOptions:
    return PipelineOptions(
        auto_generate=settings.auto_generate,
        run_all_concurrency=settings.run_all_concurrency,
        generation_wait_seconds=settings.generation_wait_seconds,
        timezone=ZoneInfo(settings.timezone),
        auto_approve_confidence=settings.auto_approve_confidence,
        auto_deploy=settings.auto_deploy,
        require_canary=settings.require_canary,
        require_evaluation=settings.require_evaluation,
        canary_percent=settings.canary_percent,
        cluster_threshold=settings.cluster_threshold,
        generation_lease_seconds=settings.generation_lease_seconds,
        effect=EffectSettings(
            window_days=settings.effect_window_days, min_sample=settings.effect_min_sample, alpha=settings.effect_alpha
        ),
    )


def build_generator(settings: Settings) -> RuleGenerator:
    if settings.claude_enabled:
        from bot.claude import ClaudeRuleGenerator

        return ClaudeRuleGenerator.from_settings(settings)
    return HeuristicRuleGenerator(settings.allowed_modules)


async def open_runtime(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    reconcile: bool = False,
    generator: RuleGenerator | None = None,
    monitoring_sinks: Sequence[MonitoringSink] = (),
) -> Runtime:
    """Build every object with all its collaborators, in dependency order; nothing is set afterwards.
    `clock` and `generator` replace the real ones, `monitoring_sinks` are told of alerts and digests too
    (tests, benchmarks)."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    set_default_language(settings.language)
    prepare_rules_folder(settings)
    options = pipeline_options(settings)
    store = open_store(settings)
    await store.open()
    rule_files = RuleFiles(settings.rules_dir, settings.allowed_modules, settings.backup_keep)
    generator = generator or build_generator(settings)
    reload_secret = settings.reload_secret or settings.webhook_secret
    reload_hook = (
        HttpReloadHook(
            settings.reload_url,
            settings.reload_timeout_seconds,
            secret=reload_secret.get_secret_value() if reload_secret else None,
        )
        if settings.reload_url
        else None
    )
    reloads = ChatbotReloads(hook=reload_hook, log_store=store, clock=clock)

    # the side channels: Slack, webhooks (notifiers of rule events, sinks of alerts and digests)
    webhook_notifier = None
    webhooks = None
    if settings.webhook_urls and settings.webhook_secret is not None:
        webhook_notifier = WebhookNotifier(store, settings.webhook_urls, clock)
        webhooks = WebhookDispatcher(
            store,
            secret=settings.webhook_secret.get_secret_value(),
            clock=clock,
            max_attempts=settings.webhook_max_attempts,
        )
    slack_client = None
    people: SlackPeople | None = None  # one users.info cache for the process: Slack's replies and git authors
    if settings.slack_enabled:
        from bot.slack.app import build_web_client
        from bot.slack.people import SlackPeople

        slack_client = build_web_client(settings)
        people = SlackPeople(slack_client)
    sinks: list[MonitoringSink] = []
    if slack_client is not None:
        from bot.slack.monitoring import SlackMonitoringSink

        sinks.append(
            SlackMonitoringSink(
                slack_client,
                alert_channel=settings.alert_channel,
                digest_channel=settings.digest_channel,
                review_channel=settings.review_channel,
            )
        )
    if webhook_notifier is not None:
        sinks.append(webhook_notifier)
    sinks += monitoring_sinks
    effects = RuleEffects(complaints=store, clock=clock, settings=options.effect)
    monitor = Monitor(
        store=store,
        thresholds=alert_thresholds(settings),
        clock=clock,
        timezone=options.timezone,
        approval_window_days=settings.approval_window_days,
        holder=holder,
        sinks=sinks,
        effects=effects.deployed,
        not_working=effects.not_working,
        effect_window_days=options.effect.window_days,
        hand_edits=store.hand_edits if isinstance(store, PostgresStore) else None,
    )
    shared = store if isinstance(store, PostgresStore) else None
    history = git_history(settings, people=people, shared=shared, rule_files=rule_files, clock=clock)
    # PostgreSQL: this folder is a copy of the rule files' versions in the database (made below), and its git
    # history follows the one every instance shares
    materializer = (
        MaterializeRuleFiles(
            rule_files=rule_files,
            versions=store,
            changes=store,
            clock=clock,
            after_sync=history.follow if isinstance(history, SharedGitHistory) else None,
            instance=holder,
        )
        if isinstance(store, PostgresStore)
        else None
    )
    reports = StatusReports(
        reports=store,
        deployments=store,
        generation_log=store,
        outbox=store,
        generator_name=generator.name,
        metrics=monitor.metrics,
        clock=clock,
        options=options,
        git_history=history is not None,
        evaluations=store,
        hand_edits=store.hand_edits if isinstance(store, PostgresStore) else None,
    )
    cards = home = None
    notifiers: list[PipelineNotifier] = []
    if slack_client is not None:
        from bot.slack.cards import HomeTabs, RuleCardPublisher

        home = HomeTabs(slack_client, reports=reports, rules=store, settings=settings)
        cards = RuleCardPublisher(
            client=slack_client,
            feedback=store,
            rules=store,
            deployments=store,
            cards=store,
            evaluations=store,
            settings=settings,
            clock=clock,
            home=home,
        )
        notifiers.append(cards)
    if webhook_notifier is not None:
        notifiers.append(webhook_notifier)
    replay, judge = evaluation_adapters(settings, generator)
    evaluations = EvaluateRules(
        rules=store,
        evaluations=store,
        rule_files=rule_files,
        replay=replay,
        judge=judge,
        clock=clock,
        limits=EvaluationLimits(
            complaints=settings.eval_complaints,
            regressions=settings.eval_regressions,
            praise=settings.eval_praise,
            token_budget=settings.eval_token_budget,
            revisions=settings.eval_revisions,
            concurrency=settings.eval_concurrency,
        ),
        enabled=settings.evaluate == "auto",
        wake=lambda: events.wake(),  # the dispatcher is built just below, with the notifier that starts replays
    )
    notifiers.append(EvaluateOnChange(evaluations))
    events = EventDispatcher(
        outbox=store,
        deployments=store,
        notifiers=notifiers,
        clock=clock,
        holder=holder,
        lease_seconds=settings.event_lease_seconds,
    )

    # Where the rule files' truth is, decided here once: the rules folder under flock (SQLite, one instance), or
    # the versions in the database under its lock, each instance's folder a copy (PostgreSQL, several instances)
    truth: RuleFileTruth
    if materializer is not None:
        assert isinstance(store, PostgresStore)
        truth = DatabaseTruth(
            rule_files=rule_files, versions=store, deployments=store, folder=materializer, clock=clock
        )
        locks = RuleFileLocks(rule_files, across=store)
        await materializer.start_up()
    else:
        truth = FolderTruth(rule_files=rule_files, deployments=store)
        locks = RuleFileLocks(rule_files)

    # the use cases, and the facade the edges call
    pending = PendingDeployments(
        rules=store, deployments=store, rule_files=rule_files, history=history, clock=clock, truth=truth
    )
    deploys = DeployRules(
        rules=store,
        deployments=store,
        rule_files=rule_files,
        locks=locks,
        pending=pending,
        history=history,
        reloads=reloads,
        clock=clock,
        options=options,
        wake=events.wake,
        evaluations=store,
        truth=truth,
    )
    generation = GenerateRules(
        feedback=store,
        rules=store,
        generation_log=store,
        generator=generator,
        rule_files=rule_files,
        deploys=deploys,
        complaints=Complaints(complaints=store, options=options),
        clock=clock,
        options=options,
        wake=events.wake,
        evaluate=evaluations.evaluate if evaluations.enabled and replay and judge else None,
    )
    service = PipelineService(
        readers=Readers(feedback=store, rules=store, deployments=store),
        intake=SubmitFeedback(
            feedback=store,
            generation=generation,
            rate_limiter=LimitsRateLimiter(settings.feedback_rate_limit, settings.rate_limit_storage),
            clock=clock,
            options=options,
            token_rate_limiter=LimitsRateLimiter(settings.token_rate_limit, settings.rate_limit_storage),
        ),
        generation=generation,
        run_all=RunAll(
            feedback=store,
            rules=store,
            complaints=store,
            generation=generation,
            clock=clock,
            options=options,
            wake=events.wake,
        ),
        review=ReviewRules(rules=store, feedback=store, rule_files=rule_files, clock=clock, wake=events.wake),
        deploys=deploys,
        reports=reports,
        reconciler=Reconcile(
            pending=pending,
            locks=locks,
            deployments=store,
            feedback=store,
            rule_files=rule_files,
            clock=clock,
        ),
        events=events,
        effects=effects,
        canaries=DecideCanaries(effects=effects, deploys=deploys, announce=monitor.announce_canary),
        rulesets=RuleSets(rule_files=rule_files, truth=truth),
        evaluations=evaluations,
    )
    slack = None
    if slack_client is not None:
        from bot.slack.app import build_slack_app

        assert cards is not None and home is not None
        slack = build_slack_app(settings, service, monitor, client=slack_client, cards=cards, home=home, people=people)
    if reconcile:
        report = await service.reconcile()
        if report.deployments_completed or report.deployments_aborted or report.feedback_requeued:
            log.warning(
                "reconciled after an interrupted run: deployments completed %s, aborted %s; feedback requeued %s",
                report.deployments_completed,
                report.deployments_aborted,
                report.feedback_requeued,
            )
        if report.commits_restored:
            log.warning("committed to git after a restart: deployments %s", report.commits_restored)
    return Runtime(
        settings=settings,
        store=store,
        service=service,
        jwt_secret=verification_key(settings),
        monitor=monitor,
        events=events,
        generation=generation,
        generator=generator,
        rule_files=rule_files,
        options=options,
        clock=clock,
        reloads=reloads,
        effects=effects,
        webhooks=webhooks,
        slack=slack,
        history=history,
        materializer=materializer,
    )


def rules_seed(settings: Settings) -> Path | None:
    """The folder the rules folder is copied from at this start: the seed rule files shipped in config/, for
    the default rules folder (AUTOTRAIN_RULES_DIR unset) that does not exist yet. None: nothing is copied."""
    if not settings.rules_dir_is_default or settings.rules_dir.exists() or not SEED_RULES_DIR.is_dir():
        return None
    return SEED_RULES_DIR


def prepare_rules_folder(settings: Settings) -> None:
    """On first start, the default rules folder is a copy of the shipped seed rule files, so deploys edit a
    folder of the working folder's own (ignored by git in a clone), never the tracked config/."""
    if settings.rules_dir_is_legacy:
        log.warning(
            "rules folder: %s, where Auto-Train has deployed before (the default was config/; it is now rules/,"
            " a copy of config/): set AUTOTRAIN_RULES_DIR=config to keep it and silence this warning",
            settings.rules_dir.resolve(),
        )
        return
    seed = rules_seed(settings)
    if seed is None:
        return
    target = settings.rules_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    # copied beside the target, then renamed into place: a second instance starting at the same moment, or
    # a crash half way, never leaves a partial folder
    staging = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    copied = []
    try:
        for name in settings.allowed_modules:
            if (seed / name).is_file():
                shutil.copy2(seed / name, staging / name)
                copied.append(name)
        try:
            staging.rename(target)
        except OSError:  # another process made it first: use that one
            if not target.is_dir():
                raise
            return
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "rules folder %s created on first start: %s copied from the shipped rule files in %s (deploys change"
        " this copy; set AUTOTRAIN_RULES_DIR for another folder)",
        target.resolve(),
        ", ".join(copied) or "no file",
        seed,
    )


def open_store(settings: Settings) -> SqliteStore | PostgresStore:
    """The store AUTOTRAIN_DATABASE_URL names: embedded SQLite, or PostgreSQL for several instances."""
    if settings.uses_postgres:
        return PostgresStore(settings.database_url)
    return SqliteStore(settings.database_path)


def database_description(settings: Settings) -> str:
    if settings.uses_postgres:
        return (
            f"database: PostgreSQL at {redacted_url(settings.database_url)} (shared by every instance; leases, claims"
            " and the event outbox hold across them)"
        )
    return (
        f"database: {settings.database_path.resolve()} (SQLite, WAL; durable group commits; reads on their own"
        " connections)"
    )


def rate_limit_description(settings: Settings) -> str:
    limits = f"feedback {settings.feedback_rate_limit} per end user, {settings.token_rate_limit} per token"
    if settings.rate_limit_storage.startswith(("memory://", "async+memory://")):
        return f"rate limits: {limits}, counted in this process (AUTOTRAIN_RATE_LIMIT_STORAGE=redis://… shares them)"
    return f"rate limits: {limits}, shared through {redacted_url(settings.rate_limit_storage)}"


def describe(settings: Settings) -> list[str]:
    """What is on and off, for the start-up log (never the secrets themselves)."""
    # a rules folder about to be copied from the seed has the seed's files
    folder = rules_seed(settings) or settings.rules_dir
    missing = [m for m in settings.allowed_modules if not (folder / m).exists()]
    lines = [
        database_description(settings),
        f"rules folder: {settings.rules_dir.resolve()} (files: {', '.join(settings.allowed_modules)})"
        + (f"; missing, created on first deploy: {', '.join(missing)}" if missing else ""),
        generator_description(settings),
        slack_description(settings),
        f"language: {settings.language.value} (AUTOTRAIN_LANGUAGE; a Slack user's own locale wins)",
        f"auto-generate on submit: {'on' if settings.auto_generate else 'off'}",
        f"one complaint, one card: feedback matched to rules at similarity {settings.cluster_threshold:g}"
        if settings.cluster_threshold is not None
        else "one complaint, one card: off (AUTOTRAIN_CLUSTER_THRESHOLD empty): every feedback its own rule",
        f"effect of deployed rules: {settings.effect_window_days} days before vs since, at least "
        f"{settings.effect_min_sample} feedbacks, p < {settings.effect_alpha:g}; canaries decided "
        + ("automatically (AUTOTRAIN_CANARY_AUTO_DECIDE)" if settings.canary_auto_decide else "by admins"),
        f"reload hook: {settings.reload_url} ("
        + ("signed" if (settings.reload_secret or settings.webhook_secret) else "unsigned: set AUTOTRAIN_RELOAD_SECRET")
        + ", a failed call retried with backoff)"
        if settings.reload_url
        else "reload hook: off (AUTOTRAIN_RELOAD_URL not set)",
        monitoring_description(settings),
        webhook_description(settings),
        git_description(settings),
        evaluation_description(settings),
        f"HTTP: at most {settings.max_connections} connections; a request's headers, then its body, within "
        f"{settings.read_timeout_seconds:g} s each (408 after)",
        "rule events: recorded with each change, delivered in the background to the review card and webhooks "
        f"(a delivery holds its event {settings.event_lease_seconds:g} s)",
        rate_limit_description(settings),
        "JWT secret: from AUTOTRAIN_JWT_SECRET"
        if settings.jwt_secret
        else "JWT secret: generated file beside the database (run `autotrain token --role admin` for a token)",
    ]
    return lines


def evaluation_adapters(
    settings: Settings, generator: RuleGenerator | None = None
) -> tuple[ChatbotReplay | None, ReplayJudge | None]:
    """Who replays (the chatbot's replay endpoint, else Claude playing it) and who judges (Claude). They share
    the generator's Claude client and pace, so every call of ours counts against AUTOTRAIN_CLAUDE_RATE_LIMIT."""
    if settings.evaluate == "off" or not (settings.claude_enabled or settings.chatbot_replay_url):
        return None, None
    from bot.claude import ClaudeRuleGenerator
    from bot.evaluation import build_evaluation_adapters

    claude = generator if isinstance(generator, ClaudeRuleGenerator) else None
    return build_evaluation_adapters(
        settings, client=claude.client if claude else None, throttle=claude.throttle if claude else None
    )


def evaluation_description(settings: Settings) -> str:
    if settings.evaluate == "off":
        return "replay before deploy: off (AUTOTRAIN_EVALUATE=off)"
    replay = (
        f"the chatbot at {settings.chatbot_replay_url}"
        if settings.chatbot_replay_url
        else ("Claude playing the chatbot" if settings.claude_enabled else None)
    )
    if replay is None or not settings.claude_enabled:
        why = "no judge (ANTHROPIC_API_KEY not set)" if not settings.claude_enabled else "no chatbot to replay with"
        return f"replay before deploy: skipped, {why}"
    gate = "; deploy requires it to pass" if settings.require_evaluation else ""
    return f"replay before deploy: on, replayed by {replay}, judged by Claude{gate}"


def git_description(settings: Settings) -> str:
    if not settings.git_history:
        return "git history: off (AUTOTRAIN_GIT=false)"
    if inside_another_repository(settings.rules_dir):
        return (
            f"git history: off, {settings.rules_dir.resolve()} is inside another git repository (set"
            " AUTOTRAIN_RULES_DIR to a folder of its own to keep the rules' history)"
        )
    shared = ", one history shared by every instance through the database" if settings.uses_postgres else ""
    if not settings.git_remote:
        return f"git history: on{shared}, commits stay in the rules folder (AUTOTRAIN_GIT_REMOTE not set)"
    from bot.git_history import redact

    branch = settings.git_branch or "the current branch"
    return f"git history: on{shared}, every commit pushed to {redact(settings.git_remote)} ({branch})"


def inside_another_repository(rules_dir: Path) -> bool:
    """A rules folder inside a larger work tree (the config/ of a clone) gets no history, by design. A folder
    not created yet is judged as it will be (the start-up log is written before it is created)."""
    from bot.git_history import GitHistoryError, folder_state

    try:
        return folder_state(rules_dir) == "inside"
    except (GitHistoryError, OSError):  # no git binary, an odd folder: git_history() says why when it opens
        return False


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


def git_history(
    settings: Settings,
    *,
    people: PeopleDirectory | None = None,
    shared: PostgresStore | None = None,
    rule_files: RuleFiles | None = None,
    clock: Clock = utcnow,
) -> RuleHistory | None:
    """Every deploy, promote and rollback becomes a commit in the rules folder (AUTOTRAIN_GIT), authored by
    whoever made it (with `people`, a Slack user's real name and e-mail). With `shared` (PostgreSQL, several
    instances), one history for all of them, in the database's order (bot/shared_history.py)."""
    if not settings.git_history:
        return None
    from bot.git_history import AsyncGitHistory, RulesFolderInsideRepository

    try:
        local = AsyncGitHistory.open(
            settings.rules_dir,
            remote=settings.git_remote,
            branch=settings.git_branch,
            people=people,
            initial_commit=shared is None,
        )
        if shared is None:
            return local
        files = rule_files or RuleFiles(settings.rules_dir, settings.allowed_modules, settings.backup_keep)
        return SharedGitHistory(local, shared=shared, versions=shared, rule_files=files, clock=clock)
    except RulesFolderInsideRepository as exc:  # the README's default start: not a failure (describe() says so)
        log.debug("git history: off, %s", exc)
        return None
    except Exception as exc:  # no git binary, unwritable folder: deploys still work, without history
        log.error("git history is off: %s", exc)
        return None
