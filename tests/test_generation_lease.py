"""A generation holds its feedback with a lease its process renews: a second instance starting up, or running
run-all, never takes a live generation for an interrupted one (that made two rules' worth of Claude calls and a
500 on the unique rule of a feedback); a generation whose process stopped is taken over once its lease runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from autotrain.models import Feedback, FeedbackIn, FeedbackStatus, Rule
from autotrain.options import utcnow
from autotrain.ports import GenerationResult
from bot.runtime import build_generator, open_runtime
from tests.conftest import ADMIN, REPORTER, WEATHER_FEEDBACK, make_settings, submit


class GatedGenerator:
    """The real offline generator, held at a gate until the test opens it; counts its calls."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.quotes_feedback = inner.quotes_feedback
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.calls = 0

    async def generate(
        self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]], *, recurrence: Rule | None = None
    ) -> GenerationResult:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        return await self.inner.generate(feedback, current_rules)


async def test_a_second_instance_leaves_a_live_generation_alone(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir)
    first_generator = GatedGenerator(build_generator(settings))
    second_generator = GatedGenerator(build_generator(settings))
    second_generator.gate.set()
    first = await open_runtime(settings, generator=first_generator)
    try:
        feedback = await submit(first.service)
        generating = asyncio.create_task(first.service.generate(feedback.feedback_id, REPORTER))
        await asyncio.wait_for(first_generator.started.wait(), 5)

        # a second instance starts (reconciling) and runs run-all while the first is still generating
        second = await open_runtime(settings, generator=second_generator, reconcile=True)
        try:
            assert (await second.service.get_feedback(feedback.feedback_id)).status is FeedbackStatus.PROCESSING
            summary = await second.service.run_all(ADMIN)
            assert summary.total == 0 and summary.errors == []
            assert second_generator.calls == 0

            first_generator.gate.set()
            rule = await asyncio.wait_for(generating, 5)
            assert (await second.service.list_rules()).total == 1
            assert (await second.service.get_feedback(feedback.feedback_id)).rule_id == rule.rule_id
            assert first_generator.calls == 1
        finally:
            await second.close()
    finally:
        await first.close()


async def test_an_abandoned_generation_is_taken_over_once_its_lease_runs_out(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir)
    runtime = await open_runtime(settings)
    try:
        feedback = await submit(runtime.service)
        # a process claimed it two minutes ago with a one-minute lease, then stopped renewing it (it died)
        assert await runtime.store.claim_feedback(
            feedback.feedback_id, now=runtime.clock() - timedelta(minutes=2), lease_seconds=60
        )
        summary = await runtime.service.run_all(ADMIN)
        assert summary.total == 1 and len(summary.rules_created) == 1
        assert (await runtime.service.get_feedback(feedback.feedback_id)).status is FeedbackStatus.PROCESSED
    finally:
        await runtime.close()


async def test_a_waiting_caller_takes_over_when_the_other_generation_stops(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir)
    runtime = await open_runtime(settings)
    try:
        feedback = await submit(runtime.service)
        # another process holds it for one more second, then stops renewing
        assert await runtime.store.claim_feedback(
            feedback.feedback_id, now=runtime.clock() - timedelta(seconds=59), lease_seconds=60
        )
        rule = await asyncio.wait_for(runtime.service.generate(feedback.feedback_id, REPORTER), 10)
        assert (await runtime.service.get_feedback(feedback.feedback_id)).rule_id == rule.rule_id
    finally:
        await runtime.close()


async def test_a_long_generation_keeps_renewing_its_lease(tmp_path: Path, rules_dir: Path) -> None:
    """A generation that outlasts its lease (a slow Claude) renews it, so no other process takes it over."""
    import sqlite3

    from autotrain.options import PipelineOptions
    from autotrain.rulefiles import RuleFiles
    from autotrain.usecases.complaints import Complaints
    from autotrain.usecases.deploys import DeployRules
    from autotrain.usecases.generation import GenerateRules
    from autotrain.usecases.locks import RuleFileLocks
    from autotrain.usecases.reconcile import PendingDeployments
    from autotrain.usecases.reloads import ChatbotReloads
    from storage.sqlite import SqliteStore

    settings = make_settings(tmp_path, rules_dir)
    store = SqliteStore(settings.database_path)
    await store.open()
    try:
        options = PipelineOptions(generation_lease_seconds=0.3)
        rule_files = RuleFiles(settings.rules_dir, settings.allowed_modules, settings.backup_keep)
        pending = PendingDeployments(rules=store, deployments=store, rule_files=rule_files, history=None, clock=utcnow)
        deploys = DeployRules(
            rules=store,
            deployments=store,
            rule_files=rule_files,
            locks=RuleFileLocks(rule_files),
            pending=pending,
            history=None,
            reloads=ChatbotReloads(hook=None, log_store=store, clock=utcnow),
            clock=utcnow,
            options=options,
            wake=lambda: None,
        )
        generator = GatedGenerator(build_generator(settings))
        generation = GenerateRules(
            feedback=store,
            rules=store,
            generation_log=store,
            generator=generator,
            rule_files=rule_files,
            deploys=deploys,
            complaints=Complaints(complaints=store, options=options),
            clock=utcnow,
            options=options,
            wake=lambda: None,
        )
        feedback = await store.create_feedback(
            FeedbackIn(**WEATHER_FEEDBACK), user_id="u", source="api", actor_id="u", now=utcnow()
        )
        running = asyncio.create_task(generation.generate(feedback.feedback_id, REPORTER))
        await asyncio.wait_for(generator.started.wait(), 5)

        def lease_until() -> str:
            with sqlite3.connect(settings.database_path) as db:
                query = "SELECT generation_lease_until FROM feedbacks WHERE feedback_id = ?"
                return db.execute(query, (feedback.feedback_id,)).fetchone()[0]

        first = lease_until()
        await asyncio.sleep(1.0)  # more than three lease lengths
        assert lease_until() > first  # renewed meanwhile
        # still held: another process (or a start-up) cannot take it over
        assert not await store.claim_feedback(feedback.feedback_id, now=utcnow(), lease_seconds=60)
        assert await store.requeue_interrupted_feedback(now=utcnow()) == []
        generator.gate.set()
        rule = await asyncio.wait_for(running, 5)
        assert rule.feedback_id == feedback.feedback_id
    finally:
        await store.close()
