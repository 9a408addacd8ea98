"""/metrics in Prometheus text format: admin token unless AUTOTRAIN_METRICS_PUBLIC=true, every name starts with
autotrain_, and every figure is computed from the database (checked here against the SQLite file itself)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autotrain.models import GenerationInfo
from autotrain.policy import Role
from autotrain.service import PipelineService
from bot.api import create_app
from bot.runtime import open_runtime
from storage.sqlite import SqliteStore
from tests.conftest import ADMIN, HEIGHT_FEEDBACK, REPORTER, WEATHER_FEEDBACK, bearer, make_settings, submit
from tests.fakes.clock import FakeClock

DAY_ONE = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)
DAY_TWO = datetime(2025, 6, 2, 9, 30, 0, tzinfo=UTC)

SHOES_FEEDBACK = {
    "query": "gợi ý giày đi làm",
    "ai_response": "Bạn thử giày cao gót 12cm nhé",
    "feedback_text": "Đi làm cả ngày mà gợi ý gót 12cm thì đau chân lắm",
    "feedback_type": "suggestion",
}
PRAISE_FEEDBACK = {
    "query": "áo sơ mi trắng",
    "ai_response": "Áo sơ mi trắng phối quần tây rất hợp",
    "feedback_text": "Tư vấn rất hay, cảm ơn",
    "feedback_type": "praise",
}
WAITING_FEEDBACK = {
    "query": "quần jean cho người cao",
    "ai_response": "Quần jean ống đứng nhé",
    "feedback_text": "Không có size dài cho người cao 1m85",
    "feedback_type": "bug",
}


@dataclass
class Served:
    http: httpx.AsyncClient
    service: PipelineService
    clock: FakeClock
    database: Path
    store: SqliteStore


@asynccontextmanager
async def served(tmp_path: Path, rules_dir: Path, clock: FakeClock, **overrides: Any) -> AsyncIterator[Served]:
    settings = make_settings(tmp_path, rules_dir, **overrides)
    app = create_app(settings, open_runtime_fn=lambda s: open_runtime(s, clock=clock))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            yield Served(http, app.state.runtime.service, clock, settings.database_path, app.state.runtime.store)


async def seed(service: PipelineService, clock: FakeClock, store: SqliteStore) -> None:
    """Day one: five feedbacks, one rule approved after 2 h and deployed. Day two: a rule approved after 30 min
    and deployed, one left pending, one generation that failed (praise is processed when it arrives). The clock
    ends on day two at 10:00."""
    clock.now = DAY_ONE
    weather = await submit(service, WEATHER_FEEDBACK)
    height = await submit(service, HEIGHT_FEEDBACK)
    shoes = await submit(service, SHOES_FEEDBACK)
    await submit(service, PRAISE_FEEDBACK)
    waiting = await submit(service, WAITING_FEEDBACK)
    first = await service.generate(weather.feedback_id, REPORTER)
    clock.advance(2 * 3600)
    await service.approve(first.rule_id, ADMIN)
    await service.deploy(first.rule_id, ADMIN)

    clock.now = DAY_TWO
    second = await service.generate(height.feedback_id, REPORTER)
    clock.advance(30 * 60)
    await service.approve(second.rule_id, ADMIN)
    await service.deploy(second.rule_id, ADMIN)
    await service.generate(shoes.feedback_id, REPORTER)
    await store.record_generation(
        waiting.feedback_id,
        GenerationInfo(generator="heuristic", latency_ms=3),
        outcome="failed",
        error="upstream down",
        now=clock(),
    )


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value}; also checks every name starts with autotrain_."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    families = list(text_string_to_metric_families(text))
    assert families, text
    for family in families:
        assert family.name.startswith("autotrain_"), family.name
        for sample in family.samples:
            assert sample.name.startswith("autotrain_"), sample.name
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def db_groups(database: Path, sql: str, *args: Any) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        return {row[0]: row[1] for row in db.execute(sql, args)}


def db_value(database: Path, sql: str, *args: Any) -> Any:
    with sqlite3.connect(database) as db:
        return db.execute(sql, args).fetchone()[0]


async def scrape(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> httpx.Response:
    return await http.get("/metrics", headers=headers or {})


# ---------------------------------------------------------------------- auth


async def test_metrics_needs_an_admin_token(tmp_path: Path, rules_dir: Path) -> None:
    async with served(tmp_path, rules_dir, FakeClock(DAY_ONE)) as app:
        anonymous = await scrape(app.http)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert "autotrain_" not in anonymous.text

        forged = await scrape(app.http, {"Authorization": "Bearer not.a.token"})
        assert forged.status_code == 401

        reporter = await scrape(app.http, bearer(Role.REPORTER, "chatbot"))
        assert reporter.status_code == 403
        assert reporter.json()["error"]["code"] == "forbidden"
        assert "autotrain_" not in reporter.text

        admin = await scrape(app.http, bearer(Role.ADMIN, "U_ADMIN"))
        assert admin.status_code == 200, admin.text
        assert admin.headers["content-type"].startswith("text/plain")
        parse(admin.text)


async def test_metrics_public_needs_no_token(tmp_path: Path, rules_dir: Path) -> None:
    async with served(tmp_path, rules_dir, FakeClock(DAY_ONE), metrics_public=True) as app:
        await submit(app.service, WEATHER_FEEDBACK)
        response = await scrape(app.http)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        samples = parse(response.text)
        assert value(samples, "autotrain_feedback_pending") == 1
        # the REST API itself still wants a token
        assert (await app.http.get("/autotrain/status")).status_code == 401


# ---------------------------------------------------------------------- figures


async def test_metrics_match_the_database(tmp_path: Path, rules_dir: Path) -> None:
    clock = FakeClock(DAY_ONE)
    async with served(tmp_path, rules_dir, clock) as app:
        await seed(app.service, clock, app.store)
        response = await scrape(app.http, bearer(Role.ADMIN))
        assert response.status_code == 200, response.text
        samples = parse(response.text)
        database = app.database

        # by status, straight from the tables
        feedback = db_groups(database, "SELECT status, COUNT(*) FROM feedbacks GROUP BY status")
        for status in ("pending", "processing", "processed", "rejected"):
            assert value(samples, "autotrain_feedback", status=status) == feedback.get(status, 0), status
        assert feedback == {"pending": 1, "processed": 4}  # praise is processed when it arrives
        assert value(samples, "autotrain_feedback_pending") == feedback["pending"] == 1

        by_type = db_groups(database, "SELECT feedback_type, COUNT(*) FROM feedbacks GROUP BY feedback_type")
        assert by_type == {"bug": 3, "suggestion": 1, "praise": 1}
        for kind, count in by_type.items():
            assert value(samples, "autotrain_feedback_by_type", type=kind) == count

        rules = db_groups(database, "SELECT status, COUNT(*) FROM generated_rules GROUP BY status")
        assert rules == {"deployed": 2, "pending": 1}
        for status in ("pending", "approved", "deployed", "rejected", "rolled_back"):
            assert value(samples, "autotrain_rules", status=status) == rules.get(status, 0), status

        generations = db_groups(database, "SELECT outcome, COUNT(*) FROM generations GROUP BY outcome")
        assert generations == {"succeeded": 3, "failed": 1}
        for outcome in ("succeeded", "failed", "declined"):
            assert value(samples, "autotrain_generations", outcome=outcome) == generations.get(outcome, 0)

        # the error rate is over the last hour: day two's three generations, one failed (day one's is older)
        in_window = db_value(
            database, "SELECT COUNT(*) FROM generations WHERE at >= ?", (clock.now - timedelta(hours=1)).isoformat()
        )
        assert in_window == 3
        assert value(samples, "autotrain_generation_error_rate") == pytest.approx(1 / 3, abs=1e-4)

        # deployed today: day two's deploy only, of the two
        assert db_value(database, "SELECT COUNT(*) FROM deployments WHERE state = 'applied'") == 2
        assert value(samples, "autotrain_deployed_today") == 1
        assert value(samples, "autotrain_deployments") == 2
        assert value(samples, "autotrain_rollbacks") == 0

        # approval times: 2 h and 30 min
        assert value(samples, "autotrain_approval_seconds_avg") == pytest.approx((7200 + 1800) / 2)
        assert value(samples, "autotrain_approval_seconds_p90") == pytest.approx(7200)


async def test_status_shows_the_same_figures(tmp_path: Path, rules_dir: Path) -> None:
    clock = FakeClock(DAY_ONE)
    async with served(tmp_path, rules_dir, clock) as app:
        await seed(app.service, clock, app.store)
        samples = parse((await scrape(app.http, bearer(Role.ADMIN))).text)
        response = await app.http.get("/autotrain/status", headers=bearer(Role.REPORTER, "chatbot"))
        assert response.status_code == 200, response.text
        status = response.json()
        metrics = status["metrics"]
        assert metrics is not None
        assert metrics["pending_feedback"] == value(samples, "autotrain_feedback_pending") == 1
        assert metrics["generation_error_rate"] == pytest.approx(value(samples, "autotrain_generation_error_rate"))
        assert metrics["generation_attempts_in_window"] == 3
        assert metrics["generation_failures_in_window"] == 1
        assert metrics["deployed_today"] == value(samples, "autotrain_deployed_today") == 1
        assert status["deployed_today"] == 1
        for kind, count in metrics["feedback_by_status"].items():
            assert value(samples, "autotrain_feedback", status=kind) == count
        for kind, count in metrics["rules_by_status"].items():
            assert value(samples, "autotrain_rules", status=kind) == count
        assert metrics["pending_rules"] == 1
        assert metrics["approval_seconds_avg"] == pytest.approx(value(samples, "autotrain_approval_seconds_avg"))
        assert metrics["approval_seconds_p90"] == pytest.approx(value(samples, "autotrain_approval_seconds_p90"))
        assert metrics["oldest_pending_feedback_id"] == "FB-1005"


async def test_metrics_are_read_from_the_database_at_each_scrape(tmp_path: Path, rules_dir: Path) -> None:
    """Not counters in memory: a change shows at the next scrape, and a restart keeps every figure."""
    clock = FakeClock(DAY_ONE)
    async with served(tmp_path, rules_dir, clock) as app:
        empty = parse((await scrape(app.http, bearer(Role.ADMIN))).text)
        assert value(empty, "autotrain_feedback_pending") == 0
        assert value(empty, "autotrain_generation_error_rate") == 0
        assert ("autotrain_approval_seconds_avg", ()) not in empty  # nothing approved: no figure, not a fake 0
        await seed(app.service, clock, app.store)
        before = (await scrape(app.http, bearer(Role.ADMIN))).text
        await submit(app.service, WAITING_FEEDBACK)
        after = parse((await scrape(app.http, bearer(Role.ADMIN))).text)
        assert value(after, "autotrain_feedback_pending") == 2
        assert value(after, "autotrain_feedback", status="pending") == 2
        assert value(after, "autotrain_feedback_by_type", type="bug") == 4
    async with served(tmp_path, rules_dir, clock) as restarted:
        again = parse((await scrape(restarted.http, bearer(Role.ADMIN))).text)
    assert again == after
    assert parse(before) != after


async def test_deployed_today_is_one_figure_in_the_configured_timezone(tmp_path: Path, rules_dir: Path) -> None:
    """With AUTOTRAIN_TIMEZONE=Asia/Ho_Chi_Minh (UTC+7), 03:00 local on 2 June is still 1 June in UTC:
    /metrics, the status report and the deploys-per-day alert must agree on what "today" is."""
    clock = FakeClock(datetime(2025, 6, 1, 20, 0, tzinfo=UTC))  # 2 June, 03:00 in Ho Chi Minh City
    async with served(tmp_path, rules_dir, clock, timezone="Asia/Ho_Chi_Minh") as app:
        feedback = await submit(app.service, WEATHER_FEEDBACK)
        rule = await app.service.generate(feedback.feedback_id, REPORTER)
        await app.service.approve(rule.rule_id, ADMIN)
        await app.service.deploy(rule.rule_id, ADMIN)
        clock.now = datetime(2025, 6, 2, 2, 0, tzinfo=UTC)  # 2 June, 09:00 local: the deploy was this morning
        samples = parse((await scrape(app.http, bearer(Role.ADMIN))).text)
        status = (await app.http.get("/autotrain/status", headers=bearer(Role.ADMIN))).json()
        assert status["metrics"]["deployed_today"] == 1
        assert status["deployed_today"] == 1
        assert value(samples, "autotrain_deployed_today") == 1
