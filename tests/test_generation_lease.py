"""A generation holds its feedback with a lease its process renews: a second instance starting up, or running
run-all, never takes a live generation for an interrupted one (that made two rules' worth of Claude calls and a
500 on the unique rule of a feedback); a generation whose process stopped is taken over once its lease runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from autotrain.models import Feedback, FeedbackStatus, Rule
from autotrain.options import utcnow
from autotrain.ports import GenerationResult
from bot.runtime import build_generator, open_runtime
from tests.conftest import ADMIN, REPORTER, make_settings, submit
from tests.reliability_support import database_url, rows

pytestmark = pytest.mark.both_backends  # the lease lives in the database: a SQLite file, or PostgreSQL


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
    settings = make_settings(tmp_path, rules_dir, generation_lease_seconds=0.3)
    generator = GatedGenerator(build_generator(settings))
    runtime = await open_runtime(settings, generator=generator)
    try:
        store = runtime.store
        feedback = await submit(runtime.service)
        running = asyncio.create_task(runtime.service.generate(feedback.feedback_id, REPORTER))
        await asyncio.wait_for(generator.started.wait(), 5)

        async def lease_until() -> Any:
            # read from outside the store, as another process would see it (an ISO text on SQLite, a timestamptz)
            query = "SELECT generation_lease_until FROM feedbacks WHERE feedback_id = $1"
            [(until,)] = await rows(database_url(tmp_path), query, feedback.feedback_id)
            return until

        first = await lease_until()
        await asyncio.sleep(1.0)  # more than three lease lengths
        assert await lease_until() > first  # renewed meanwhile
        # still held: another process (or a start-up) cannot take it over
        assert not await store.claim_feedback(feedback.feedback_id, now=utcnow(), lease_seconds=60)
        assert await store.requeue_interrupted_feedback(now=utcnow()) == []
        generator.gate.set()
        rule = await asyncio.wait_for(running, 5)
        assert rule.feedback_id == feedback.feedback_id
    finally:
        await runtime.close()
