"""Monitoring on a real SQLite file with a controlled clock: metrics, thresholds, cool-down, resolve, restarts,
two monitors on one database."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autotrain.errors import GenerationFailed
from autotrain.i18n import Language, catalogue, speaking
from autotrain.models import Feedback, GenerationInfo, Rule
from autotrain.monitoring import (
    ALERTS,
    AlertAction,
    AlertDecision,
    AlertEvent,
    AlertState,
    AlertThresholds,
    Metrics,
    Severity,
    Unit,
    decide,
    measured_value,
    percentile,
    shown_value,
)
from autotrain.ports import GenerationResult
from bot.runtime import Runtime, open_runtime
from tests.conftest import ADMIN, REPORTER, make_settings, submit
from tests.fakes.clock import FakeClock
from tests.fakes.monitoring import Opener, RecordingSink

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
COOLDOWN = 3600
DEFINITIONS = {definition.name: definition for definition in ALERTS}


class FailingGenerator:
    """A rule generator that fails like an upstream outage."""

    name = "failing"

    async def generate(
        self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]], *, recurrence: Rule | None = None
    ) -> GenerationResult:
        raise ConnectionError("upstream unavailable")


def feedback_payload(n: int, feedback_type: str = "bug") -> dict[str, Any]:
    """A distinct feedback (the heuristic generator drafts a distinct rule from it)."""
    return {
        "query": f"câu hỏi số {n} về áo sơ mi",
        "ai_response": "Mình gợi ý mẫu này",
        "feedback_text": f"Góp ý số {n}: tư vấn chưa đúng",
        "feedback_type": feedback_type,
    }


async def new_rule(runtime: Runtime, n: int) -> Rule:
    feedback = await submit(runtime.service, feedback_payload(n))
    return await runtime.service.generate(feedback.feedback_id, REPORTER)


async def record_generations(runtime: Runtime, clock: FakeClock, *, failed: int = 0, succeeded: int = 0) -> None:
    feedback = await submit(runtime.service, feedback_payload(900))
    info = GenerationInfo(generator="test")
    for outcome, count in (("failed", failed), ("succeeded", succeeded)):
        for _ in range(count):
            await runtime.store.record_generation(
                feedback.feedback_id, info, outcome=outcome, now=clock(), error="boom" if outcome == "failed" else None
            )


def only(events: list[AlertEvent]) -> AlertEvent:
    assert len(events) == 1, events
    return events[0]


def assert_event(event: AlertEvent, name: str, kind: AlertDecision, value: float | None, at: datetime) -> None:
    definition = DEFINITIONS[name]
    assert event.name == name
    assert event.kind is kind
    if value is None:
        assert event.value is None
    else:
        assert event.value == pytest.approx(value)
    assert event.at == at
    assert event.title == definition.title
    assert event.severity is definition.severity
    assert event.advice == definition.advice
    assert event.action is definition.action


# ---------------------------------------------------------------------- decide(): the whole table


def state(active: bool, notified: datetime | None) -> AlertState:
    return AlertState(name="x", active=active, since=T0, last_notified_at=notified, version=3)


@pytest.mark.parametrize(
    ("previous", "crossed", "now", "expected"),
    [
        # never seen
        (None, False, T0, AlertDecision.NONE),
        (None, True, T0, AlertDecision.FIRE),
        # inactive (resolved earlier): a new crossing fires, whether or not the cool-down has elapsed
        (state(False, T0), False, T0 + timedelta(seconds=10), AlertDecision.NONE),
        (state(False, T0), False, T0 + timedelta(seconds=COOLDOWN + 10), AlertDecision.NONE),
        (state(False, T0), True, T0 + timedelta(seconds=10), AlertDecision.FIRE),
        (state(False, T0), True, T0 + timedelta(seconds=COOLDOWN + 10), AlertDecision.FIRE),
        # active, still crossed: quiet within the cool-down, repeated once it has elapsed (inclusive)
        (state(True, T0), True, T0 + timedelta(seconds=COOLDOWN - 1), AlertDecision.NONE),
        (state(True, T0), True, T0 + timedelta(seconds=COOLDOWN), AlertDecision.REPEAT),
        (state(True, T0), True, T0 + timedelta(seconds=COOLDOWN * 5), AlertDecision.REPEAT),
        (state(True, None), True, T0, AlertDecision.REPEAT),
        # active, cleared: resolved at once, cool-down or not
        (state(True, T0), False, T0 + timedelta(seconds=1), AlertDecision.RESOLVE),
        (state(True, T0), False, T0 + timedelta(seconds=COOLDOWN + 1), AlertDecision.RESOLVE),
    ],
)
def test_decide_table(previous: AlertState | None, crossed: bool, now: datetime, expected: AlertDecision) -> None:
    assert decide(previous, crossed, now, COOLDOWN) is expected


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.9) is None
    assert percentile([7.0], 0.9) == 7.0
    values = [float(v) for v in range(10, 0, -1)]  # 10 values, unsorted
    assert percentile(values, 0.9) == 9.0  # the 9th smallest, not an interpolation
    assert percentile(values, 0.5) == 5.0
    assert percentile([1.0, 2.0, 3.0], 0.9) == 3.0
    assert percentile([6.0, 1.0, 5.0, 2.0, 4.0, 3.0], 0.9) == 6.0  # rank ceil(5.4) = 6
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0  # rank ceil(2.5) = 3


def test_error_rate_is_not_measured_below_min_attempts() -> None:
    thresholds = AlertThresholds(error_rate_min_attempts=5)
    definition = DEFINITIONS["generation_error_rate"]
    base = {
        "at": T0,
        "pending_feedback": 0,
        "oldest_pending_feedback_id": None,
        "oldest_pending_at": None,
        "pending_rules": 0,
        "feedback_by_status": {},
        "feedback_by_type": {},
        "rules_by_status": {},
        "error_rate_window_minutes": 60,
        "deployed_today": 0,
        "approval_window_days": 7,
        "approvals_in_window": 0,
        "approval_seconds_avg": None,
        "approval_seconds_p90": None,
    }
    four = Metrics(**base, generation_attempts_in_window=4, generation_failures_in_window=4, generation_error_rate=1.0)
    five = Metrics(**base, generation_attempts_in_window=5, generation_failures_in_window=1, generation_error_rate=0.2)
    assert measured_value(definition, four, thresholds) is None
    assert measured_value(definition, five, thresholds) == 0.2


# ---------------------------------------------------------------------- each threshold, end to end


class DownSink:
    """A sink whose channel is unreachable (Slack down past its retries)."""

    def __init__(self) -> None:
        self.tries = 0

    async def alert(self, event: AlertEvent) -> None:
        self.tries += 1
        raise ConnectionError("slack is down")

    async def digest(self, digest: object) -> None:
        raise ConnectionError("slack is down")


async def test_an_alert_nobody_was_told_about_is_sent_at_the_next_check(tmp_path: Path, rules_dir: Path) -> None:
    """Not lost until the cool-down ends: when every sink failed, the next check tries again."""
    clock = FakeClock(T0)
    runtime = await open_runtime(make_settings(tmp_path, rules_dir, alert_pending_max=0), clock=clock)
    try:
        down = DownSink()
        runtime.monitor.sinks = [down]
        await submit(runtime.service, feedback_payload(0))
        assert only(await runtime.monitor.check_alerts()).kind is AlertDecision.FIRE
        assert down.tries == 1
        recording = RecordingSink()
        runtime.monitor.sinks = [recording]
        clock.advance(minutes=5)  # well inside the cool-down
        again = only(await runtime.monitor.check_alerts())
        assert again.name == "pending_feedback" and recording.alerts == [again]
        clock.advance(minutes=5)
        assert await runtime.monitor.check_alerts() == []  # told now: the cool-down applies
    finally:
        await runtime.close()


async def test_pending_feedback_fires_once_respects_cooldown_repeats_and_resolves(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0)
    runtime, sink = await open_monitored(make_settings(tmp_path, rules_dir, alert_pending_max=2), clock)
    monitor = runtime.monitor

    ids = [(await submit(runtime.service, feedback_payload(n))).feedback_id for n in range(2)]
    assert await monitor.check_alerts() == []  # 2 is not above 2

    ids.append((await submit(runtime.service, feedback_payload(2))).feedback_id)
    fired = only(await monitor.check_alerts())
    assert_event(fired, "pending_feedback", AlertDecision.FIRE, 3.0, T0)
    assert fired.threshold == 2.0
    assert (fired.value_text, fired.threshold_text) == ("3", "2")
    assert fired.severity is Severity.WARNING
    assert fired.action is AlertAction.RUN_ALL
    assert fired.since == T0
    assert "3" in fired.summary and "2" in fired.summary
    assert sink.alerts == [fired]

    clock.advance(minutes=30)
    assert await monitor.check_alerts() == []
    ids.append((await submit(runtime.service, feedback_payload(3))).feedback_id)
    clock.advance(minutes=29, seconds=59)
    assert await monitor.check_alerts() == []  # still inside the hour

    clock.advance(seconds=1)  # exactly one cool-down after the first post
    repeated = only(await monitor.check_alerts())
    assert_event(repeated, "pending_feedback", AlertDecision.REPEAT, 4.0, T0 + timedelta(hours=1))
    assert repeated.since == T0  # crossed since the first post
    clock.advance(minutes=10)
    assert await monitor.check_alerts() == []  # the cool-down restarts at the repeat

    for feedback_id in ids[:3]:
        await runtime.service.generate(feedback_id, REPORTER)
    resolved = only(await monitor.check_alerts())
    assert_event(resolved, "pending_feedback", AlertDecision.RESOLVE, 1.0, clock.now)
    assert resolved.threshold == 2.0
    assert "back to normal" in resolved.summary

    assert await monitor.check_alerts() == []
    clock.advance(hours=3)
    assert await monitor.check_alerts() == []
    assert [e.kind for e in sink.alerts] == [AlertDecision.FIRE, AlertDecision.REPEAT, AlertDecision.RESOLVE]


async def test_generation_error_rate_fires_repeats_resolves(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0)
    settings = make_settings(
        tmp_path, rules_dir, alert_error_rate_max=0.2, alert_error_rate_window_minutes=180, alert_pending_max=1000
    )
    runtime, sink = await open_monitored(settings, clock)
    monitor = runtime.monitor

    await record_generations(runtime, clock, failed=4)
    metrics = await monitor.metrics()
    assert (metrics.generation_attempts_in_window, metrics.generation_failures_in_window) == (4, 4)
    assert await monitor.check_alerts() == []  # 4 attempts < 5: not measured, however bad

    await record_generations(runtime, clock, succeeded=1)
    fired = only(await monitor.check_alerts())
    assert_event(fired, "generation_error_rate", AlertDecision.FIRE, 0.8, T0)
    assert fired.threshold == 0.2
    assert (fired.value_text, fired.threshold_text) == ("80.0%", "20.0%")
    assert fired.severity is Severity.CRITICAL
    assert fired.action is AlertAction.SHOW_STATUS

    clock.advance(minutes=59)
    assert await monitor.check_alerts() == []
    clock.advance(minutes=2)
    repeated = only(await monitor.check_alerts())
    assert_event(repeated, "generation_error_rate", AlertDecision.REPEAT, 0.8, clock.now)

    await record_generations(runtime, clock, succeeded=15)  # 4 failed of 20: exactly the threshold, not above
    resolved = only(await monitor.check_alerts())
    assert_event(resolved, "generation_error_rate", AlertDecision.RESOLVE, 0.2, clock.now)

    assert await monitor.check_alerts() == []
    clock.advance(minutes=90)
    assert await monitor.check_alerts() == []
    assert [e.kind for e in sink.alerts] == [AlertDecision.FIRE, AlertDecision.REPEAT, AlertDecision.RESOLVE]


async def test_error_rate_counts_failures_recorded_by_the_service_within_the_window(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0)
    settings = make_settings(tmp_path, rules_dir, alert_error_rate_max=0.5, alert_pending_max=1000)
    runtime, sink = await open_monitored(settings, clock, generator=FailingGenerator())

    for n in range(5):
        feedback = await submit(runtime.service, feedback_payload(n))
        with pytest.raises(GenerationFailed):
            await runtime.service.generate(feedback.feedback_id, REPORTER)
    metrics = await runtime.monitor.metrics()
    assert metrics.generation_attempts_in_window == 5
    assert metrics.generation_failures_in_window == 5
    assert metrics.generation_error_rate == 1.0
    fired = only(await runtime.monitor.check_alerts())
    assert_event(fired, "generation_error_rate", AlertDecision.FIRE, 1.0, T0)
    assert sink.alerts == [fired]

    clock.advance(minutes=61)  # the failures left the 60-minute window: nothing to measure
    metrics = await runtime.monitor.metrics()
    assert metrics.generation_attempts_in_window == 0
    assert metrics.generation_error_rate == 0.0


async def test_error_rate_below_min_attempts_never_alerts(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0)
    settings = make_settings(tmp_path, rules_dir, alert_error_rate_max=0.05, alert_error_rate_min_attempts=3)
    runtime, sink = await open_monitored(settings, clock)

    await record_generations(runtime, clock, failed=2)
    assert await runtime.monitor.check_alerts() == []
    clock.advance(minutes=30)
    assert await runtime.monitor.check_alerts() == []  # 100 % failed, but only 2 attempts
    await record_generations(runtime, clock, failed=1)  # the third attempt in the window: measured now
    assert only(await runtime.monitor.check_alerts()).name == "generation_error_rate"
    assert len(sink.alerts) == 1


async def test_deploys_per_day_counts_the_configured_timezones_day(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    # 08:00 UTC is 15:00 in Ho Chi Minh City; its day ends at 17:00 UTC
    clock = FakeClock(T0)
    settings = make_settings(tmp_path, rules_dir, alert_deploys_per_day_max=1, timezone="Asia/Ho_Chi_Minh")
    runtime, sink = await open_monitored(settings, clock)
    monitor = runtime.monitor

    for n in range(2):
        rule = await new_rule(runtime, n)
        await runtime.service.approve(rule.rule_id, ADMIN)
        await runtime.service.deploy(rule.rule_id, ADMIN)
        if n == 0:
            assert await monitor.check_alerts() == []  # one deploy is not above one

    fired = only(await monitor.check_alerts())
    assert_event(fired, "deploys_per_day", AlertDecision.FIRE, 2.0, T0)
    assert (fired.value_text, fired.threshold_text) == ("2", "1")
    assert fired.severity is Severity.INFO
    assert fired.action is AlertAction.SHOW_DEPLOYMENTS

    clock.advance(minutes=45)
    assert await monitor.check_alerts() == []
    clock.advance(minutes=20)
    assert_event(only(await monitor.check_alerts()), "deploys_per_day", AlertDecision.REPEAT, 2.0, clock.now)

    clock.now = datetime(2026, 11, 26, 16, 59, 59, tzinfo=UTC)  # 23:59:59 local: still the same day
    assert_event(only(await monitor.check_alerts()), "deploys_per_day", AlertDecision.REPEAT, 2.0, clock.now)
    clock.now = datetime(2026, 11, 26, 17, 0, 1, tzinfo=UTC)  # 00:00:01 local: a new day (still the 26th in UTC)
    resolved = only(await monitor.check_alerts())
    assert_event(resolved, "deploys_per_day", AlertDecision.RESOLVE, 0.0, clock.now)

    clock.advance(hours=2)
    assert await monitor.check_alerts() == []
    kinds = [e.kind for e in sink.alerts]
    assert kinds == [AlertDecision.FIRE, AlertDecision.REPEAT, AlertDecision.REPEAT, AlertDecision.RESOLVE]


async def test_approval_time_fires_repeats_resolves(tmp_path: Path, rules_dir: Path, open_monitored: Opener) -> None:
    clock = FakeClock(T0)
    settings = make_settings(tmp_path, rules_dir, alert_approval_hours_max=2, alert_pending_max=1000)
    runtime, sink = await open_monitored(settings, clock)
    monitor = runtime.monitor

    slow = await new_rule(runtime, 1)
    assert await monitor.check_alerts() == []  # nothing approved yet: no average to judge
    clock.advance(hours=3)
    await runtime.service.approve(slow.rule_id, ADMIN)
    fired = only(await monitor.check_alerts())
    assert_event(fired, "approval_time", AlertDecision.FIRE, 3.0, clock.now)
    assert (fired.value_text, fired.threshold_text) == ("3.0 h", "2.0 h")
    assert fired.severity is Severity.WARNING
    assert fired.action is AlertAction.SHOW_PENDING_RULES

    clock.advance(minutes=59)
    assert await monitor.check_alerts() == []
    clock.advance(minutes=1)
    assert_event(only(await monitor.check_alerts()), "approval_time", AlertDecision.REPEAT, 3.0, clock.now)

    quick = await new_rule(runtime, 2)
    await runtime.service.approve(quick.rule_id, ADMIN)  # 0 s: the average drops to 1.5 h
    resolved = only(await monitor.check_alerts())
    assert_event(resolved, "approval_time", AlertDecision.RESOLVE, 1.5, clock.now)
    assert resolved.value_text == "1.5 h"

    clock.advance(hours=2)
    assert await monitor.check_alerts() == []
    assert [e.kind for e in sink.alerts] == [AlertDecision.FIRE, AlertDecision.REPEAT, AlertDecision.RESOLVE]


async def test_a_new_crossing_after_resolve_fires_again_with_a_new_start(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0)
    runtime, sink = await open_monitored(make_settings(tmp_path, rules_dir, alert_pending_max=0), clock)
    first = await submit(runtime.service, feedback_payload(1))
    assert only(await runtime.monitor.check_alerts()).since == T0
    clock.advance(minutes=5)
    await runtime.service.generate(first.feedback_id, REPORTER)
    assert only(await runtime.monitor.check_alerts()).kind is AlertDecision.RESOLVE
    clock.advance(minutes=5)  # well inside the cool-down: a new crossing is news, not a repeat
    await submit(runtime.service, feedback_payload(2))
    again = only(await runtime.monitor.check_alerts())
    assert_event(again, "pending_feedback", AlertDecision.FIRE, 1.0, T0 + timedelta(minutes=10))
    assert again.since == T0 + timedelta(minutes=10)
    assert len(sink.alerts) == 3


# ---------------------------------------------------------------------- restarts and two processes


async def test_alert_state_survives_a_restart(tmp_path: Path, rules_dir: Path, open_monitored: Opener) -> None:
    clock = FakeClock(T0)
    settings = make_settings(tmp_path, rules_dir, alert_pending_max=1)
    first, first_sink = await open_monitored(settings, clock)
    ids = [(await submit(first.service, feedback_payload(n))).feedback_id for n in range(2)]
    assert only(await first.monitor.check_alerts()).kind is AlertDecision.FIRE
    await first.close()

    second, second_sink = await open_monitored(settings, clock)  # same database file, same instant
    assert await second.monitor.check_alerts() == []  # no re-fire
    clock.advance(minutes=30)
    assert await second.monitor.check_alerts() == []  # the cool-down from before the restart holds
    clock.advance(minutes=30)
    repeated = only(await second.monitor.check_alerts())
    assert repeated.kind is AlertDecision.REPEAT
    assert repeated.since == T0  # it remembers when the alert started

    await second.service.generate(ids[0], REPORTER)
    await second.close()
    third, third_sink = await open_monitored(settings, clock)
    resolved = only(await third.monitor.check_alerts())  # not forgotten: the new process resolves it
    assert_event(resolved, "pending_feedback", AlertDecision.RESOLVE, 1.0, clock.now)
    await third.close()

    fourth, fourth_sink = await open_monitored(settings, clock)
    assert await fourth.monitor.check_alerts() == []  # resolved once, not again after another restart
    assert [len(s.alerts) for s in (first_sink, second_sink, third_sink, fourth_sink)] == [1, 1, 1, 0]


async def test_two_monitors_post_once_and_the_other_takes_over_when_the_lease_expires(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0)
    interval = 300
    settings = make_settings(tmp_path, rules_dir, alert_pending_max=1, alert_interval_seconds=interval)
    one, one_sink = await open_monitored(settings, clock)
    two, two_sink = await open_monitored(settings, clock)
    assert one.monitor.holder != two.monitor.holder
    ids = [(await submit(one.service, feedback_payload(n))).feedback_id for n in range(2)]

    results = await asyncio.gather(one.monitor.run_alert_job(interval), two.monitor.run_alert_job(interval))
    assert sum(len(events) for events in results) == 1
    assert len(one_sink.alerts) + len(two_sink.alerts) == 1
    leader, follower = (one, two) if one_sink.alerts else (two, one)
    leader_sink, follower_sink = (one_sink, two_sink) if leader is one else (two_sink, one_sink)

    for _ in range(12):  # both tick every interval for an hour: the leader renews, the follower stays quiet
        clock.advance(seconds=interval)
        await asyncio.gather(leader.monitor.run_alert_job(interval), follower.monitor.run_alert_job(interval))
    assert [e.kind for e in leader_sink.alerts] == [AlertDecision.FIRE, AlertDecision.REPEAT]
    assert follower_sink.alerts == []

    # the leader stops; the backlog clears
    await follower.service.generate(ids[0], REPORTER)
    clock.advance(seconds=interval)
    assert await follower.monitor.run_alert_job(interval) == []  # the lease (2 × interval) is still held
    clock.advance(seconds=interval + 1)  # now past 2 × interval since the leader's last renewal
    resolved = only(await follower.monitor.run_alert_job(interval))
    assert resolved.kind is AlertDecision.RESOLVE
    assert follower_sink.alerts == [resolved]
    assert len(leader_sink.alerts) == 2


async def test_two_monitors_checking_at_the_same_instant_without_a_lease_post_once(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0)
    settings = make_settings(tmp_path, rules_dir, alert_pending_max=0)
    one, one_sink = await open_monitored(settings, clock)
    two, two_sink = await open_monitored(settings, clock)
    await submit(one.service, feedback_payload(1))

    results = await asyncio.gather(one.monitor.check_alerts(), two.monitor.check_alerts())
    assert sum(len(events) for events in results) == 1
    assert len(one_sink.alerts) + len(two_sink.alerts) == 1

    clock.advance(seconds=COOLDOWN)
    results = await asyncio.gather(one.monitor.check_alerts(), two.monitor.check_alerts())
    assert [e.kind for events in results for e in events] == [AlertDecision.REPEAT]


# ---------------------------------------------------------------------- metrics


async def test_metrics_pending_counts_and_oldest_pending(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0)
    runtime, _ = await open_monitored(make_settings(tmp_path, rules_dir), clock)
    empty = await runtime.monitor.metrics()
    assert (empty.pending_feedback, empty.oldest_pending_feedback_id, empty.oldest_pending_at) == (0, None, None)

    ids = []
    for n, feedback_type in enumerate(["bug", "suggestion", "bug", "praise"]):
        ids.append((await submit(runtime.service, feedback_payload(n, feedback_type))).feedback_id)
        clock.advance(hours=1)
    first_rule = await runtime.service.generate(ids[0], REPORTER)
    second_rule = await runtime.service.generate(ids[1], REPORTER)
    await runtime.service.reject(second_rule.rule_id, ADMIN, "not useful")

    metrics = await runtime.monitor.metrics()
    assert metrics.at == T0 + timedelta(hours=4)
    assert metrics.pending_feedback == 1  # the praise (ids[3]) was processed when it arrived
    assert metrics.oldest_pending_feedback_id == ids[2] == "FB-1003"
    assert metrics.oldest_pending_at == T0 + timedelta(hours=2)
    assert metrics.pending_rules == 1
    assert metrics.feedback_by_status == {"pending": 1, "processing": 0, "processed": 2, "rejected": 1}
    assert metrics.feedback_by_type == {"bug": 2, "suggestion": 1, "praise": 1}
    assert metrics.rules_by_status["pending"] == 1
    assert metrics.rules_by_status["rejected"] == 1
    assert sum(metrics.rules_by_status.values()) == 2
    assert first_rule.rule_id == "RUL-1001"


async def test_metrics_deployed_today_in_the_configured_timezone(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    # 16:30 UTC is 23:30 in Ho Chi Minh City (UTC+7); 17:30 UTC is 00:30 the next day there
    clock = FakeClock(datetime(2026, 11, 26, 16, 30, tzinfo=UTC))
    settings = make_settings(tmp_path, rules_dir, timezone="Asia/Ho_Chi_Minh")
    runtime, _ = await open_monitored(settings, clock)

    rules = [await new_rule(runtime, n) for n in range(3)]
    for rule in rules:
        await runtime.service.approve(rule.rule_id, ADMIN)
    await runtime.service.deploy(rules[0].rule_id, ADMIN)  # late on the 26th, local time
    assert (await runtime.monitor.metrics()).deployed_today == 1

    clock.now = datetime(2026, 11, 26, 17, 30, tzinfo=UTC)
    assert (await runtime.monitor.metrics()).deployed_today == 0  # a new local day
    await runtime.service.deploy(rules[1].rule_id, ADMIN)
    await runtime.service.deploy(rules[2].rule_id, ADMIN)
    await runtime.service.rollback(rules[2].rule_id, ADMIN)  # a rollback is not a deploy
    assert (await runtime.monitor.metrics()).deployed_today == 2

    utc_runtime, _ = await open_monitored(make_settings(tmp_path, rules_dir, timezone="UTC"), clock)
    assert (await utc_runtime.monitor.metrics()).deployed_today == 3  # still the 26th in UTC


async def test_metrics_approval_average_and_p90_nearest_rank(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(T0 - timedelta(days=10))
    runtime, _ = await open_monitored(make_settings(tmp_path, rules_dir), clock)

    old = await new_rule(runtime, 100)
    clock.advance(hours=1)
    await runtime.service.approve(old.rule_id, ADMIN)  # 10 days before: outside the 7-day window

    clock.now = T0
    rules = [await new_rule(runtime, n) for n in range(10)]
    minutes = [5, 10, 20, 30, 60, 90, 120, 240, 480, 1440]
    for rule, after in zip(rules, minutes, strict=True):
        clock.now = T0 + timedelta(minutes=after)
        await runtime.service.approve(rule.rule_id, ADMIN)
    unapproved = await new_rule(runtime, 200)  # pending: not in the figures
    assert unapproved.status.value == "pending"

    metrics = await runtime.monitor.metrics()
    assert metrics.approval_window_days == 7
    assert metrics.approvals_in_window == 10
    assert metrics.approval_seconds_avg == pytest.approx(sum(minutes) * 60 / 10)  # 14,970 s
    assert metrics.approval_seconds_p90 == 480 * 60  # the 9th of 10, not interpolated


async def test_status_includes_the_metrics(tmp_path: Path, rules_dir: Path, open_monitored: Opener) -> None:
    clock = FakeClock(T0)
    runtime, _ = await open_monitored(make_settings(tmp_path, rules_dir), clock)
    rule = await new_rule(runtime, 1)
    await submit(runtime.service, feedback_payload(2))
    clock.advance(hours=2)
    await runtime.service.approve(rule.rule_id, ADMIN)

    status = await runtime.service.status()
    assert status.metrics is not None
    assert status.metrics == await runtime.monitor.metrics()
    assert status.metrics.pending_feedback == status.pending_feedback == 1
    assert status.metrics.oldest_pending_feedback_id == "FB-1002"
    assert status.metrics.approval_seconds_avg == 7200
    assert status.metrics.at == clock.now


async def test_status_deployed_today_agrees_with_the_metrics_in_the_configured_timezone(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(datetime(2026, 11, 26, 16, 30, tzinfo=UTC))  # 23:30 in Ho Chi Minh City
    settings = make_settings(tmp_path, rules_dir, timezone="Asia/Ho_Chi_Minh")
    runtime, _ = await open_monitored(settings, clock)
    rules = [await new_rule(runtime, n) for n in range(2)]
    for rule in rules:
        await runtime.service.approve(rule.rule_id, ADMIN)
    await runtime.service.deploy(rules[0].rule_id, ADMIN)
    clock.now = datetime(2026, 11, 26, 17, 30, tzinfo=UTC)  # 00:30 the next day there
    await runtime.service.deploy(rules[1].rule_id, ADMIN)

    status = await runtime.service.status()
    assert status.metrics is not None
    assert status.metrics.deployed_today == 1
    assert status.deployed_today == status.metrics.deployed_today  # one "today" in one report


# ---------------------------------------------------------------------- what a reader sees, in their language


async def test_an_alert_reads_in_the_current_language_and_records_its_figures_in_none(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    """The event keeps the catalogue's English source and language-free figures (for webhooks); its title,
    advice and summary are rendered in the current language, numbers written as that language writes them."""
    clock = FakeClock(T0)
    settings = make_settings(tmp_path, rules_dir, alert_error_rate_max=0.025, alert_pending_max=1000)
    runtime, sink = await open_monitored(settings, clock)
    await record_generations(runtime, clock, failed=1, succeeded=7)
    fired = only(await runtime.monitor.check_alerts())
    assert fired.name == "generation_error_rate" and fired.value == 0.125
    assert (fired.title, fired.value_text, fired.threshold_text) == ("Rule generation error rate", "12.5%", "2.5%")
    assert sink.alerts[0].model_dump(mode="json")["title"] == "Rule generation error rate"

    with speaking(Language.EN):
        assert fired.summary == "Rule generation error rate is 12.5%, above the threshold of 2.5%."
        assert fired.shown_advice.startswith("Check the generator (Claude API key")
    with speaking(Language.VI):
        assert fired.shown_title == "Tỷ lệ lỗi khi tạo quy tắc"
        assert fired.summary == "Tỷ lệ lỗi khi tạo quy tắc đang ở mức 12,5%, vượt ngưỡng 2,5%."
        assert fired.shown_advice.startswith("Kiểm tra bộ tạo quy tắc (khóa API Claude")

    await record_generations(runtime, clock, succeeded=42)  # 1 of 50
    resolved = only(await runtime.monitor.check_alerts())
    with speaking(Language.VI):
        assert resolved.summary == "Tỷ lệ lỗi khi tạo quy tắc đã trở lại bình thường: 2% (ngưỡng 2,5%)."


def test_every_alert_has_its_title_and_advice_in_both_catalogues() -> None:
    vietnamese, english = catalogue(Language.VI), catalogue(Language.EN)
    for definition in ALERTS:
        for text in (definition.title, definition.advice):
            assert vietnamese.gettext(text) != text, definition.name
            assert english.gettext(text) == text, definition.name


@pytest.mark.parametrize(
    ("unit", "value", "english", "vietnamese"),
    [
        (Unit.COUNT, 1234.0, "1,234", "1.234"),
        (Unit.SHARE, 0.05, "5%", "5%"),
        (Unit.SHARE, 0.0333, "3.3%", "3,3%"),
        (Unit.HOURS, 26.25, "26.2 h", "26,2 giờ"),
        (Unit.HOURS, 2.0, "2 h", "2 giờ"),
        (Unit.COUNT, None, "not measurable", "chưa đo được"),
    ],
)
def test_figures_are_shown_as_the_language_writes_them(
    unit: Unit, value: float | None, english: str, vietnamese: str
) -> None:
    with speaking(Language.EN):
        assert shown_value(unit, value) == english
    with speaking(Language.VI):
        assert shown_value(unit, value) == vietnamese
