"""Shared fixtures: real SQLite files, real rule files in a temp folder, the real ASGI app over HTTP,
a fake chatbot reload endpoint on loopback, and `autotrain serve` as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.services  # read the services' URLs before any test removes the AUTOTRAIN_ variables
from autotrain.i18n import Language, set_default_language
from autotrain.models import FeedbackIn, Rule, RuleStatus, RuleType
from autotrain.policy import Actor, Role
from autotrain.service import PipelineService
from autotrain.settings import Settings
from bot.api import create_app
from bot.auth import mint_token
from bot.runtime import Runtime, build_generator, open_runtime
from tests.fakes.generators import SwitchableGenerator
from tests.serve_process import free_port, serving, subprocess_environment  # noqa: F401 (free_port: for tests)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_RULES = REPO_ROOT / "config"
JWT_SECRET = "test-secret-for-autotrain-tests-0123456789"

ADMIN = Actor("U_ADMIN", Role.ADMIN)
REPORTER = Actor("chatbot", Role.REPORTER)

WEATHER_FEEDBACK = {
    "query": "tìm áo khoác cho trời 35 độ",
    "ai_response": "Mình gợi ý áo khoác nỉ này...",
    "feedback_text": "Trời nóng quá, AI còn tư vấn áo khoác",
    "feedback_type": "bug",
}
HEIGHT_FEEDBACK = {
    "query": "gợi ý đầm đi tiệc",
    "ai_response": "Bạn thử đầm maxi dài này nhé",
    "feedback_text": "Mình dáng lùn, mặc maxi bị chìm",
    "feedback_type": "bug",
}
OLD_WEATHER_RULE = "- Luôn ưu tiên áo khoác/dày"
NEW_WEATHER_RULE = "- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the machine's Slack / Anthropic / Auto-Train settings or a stray .env."""
    for name in list(os.environ):
        if name.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    # open_runtime sets the process's default language (AUTOTRAIN_LANGUAGE): a test in `vi` must not leak it
    set_default_language(Language.EN)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A copy of the shipped rule files in a temp folder."""
    folder = tmp_path / "rules"
    shutil.copytree(SHIPPED_RULES, folder, ignore=shutil.ignore_patterns(".autotrain"))
    return folder


@pytest.fixture
def settings(tmp_path: Path, rules_dir: Path) -> Settings:
    return make_settings(tmp_path, rules_dir)


# The database of the running test: a fresh PostgreSQL database in the modules marked `both_backends` (their
# tests run twice, once on each backend), else None: a SQLite file in the test's folder.
_postgres_database = tests.services.current_postgres


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_backends") and "database_backend" in metafunc.fixturenames:
        metafunc.parametrize("database_backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(autouse=True)
def database_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which store `make_settings` points at: SQLite, or (parametrized, `both_backends`) a fresh PostgreSQL."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield backend
        return
    from tests.postgres_support import fresh_database_sync
    from tests.services import service_url

    server = service_url("PostgreSQL", "AUTOTRAIN_TEST_POSTGRES_URL", request)
    with fresh_database_sync(server) as url:
        _postgres_database[0] = url
        try:
            yield backend
        finally:
            _postgres_database[0] = None


def make_settings(tmp_path: Path, rules_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": _postgres_database[0] or f"sqlite:///{tmp_path / 'autotrain.db'}",
        "rules_dir": rules_dir,
        "jwt_secret": JWT_SECRET,
        "auto_generate": False,
        "scheduler_enabled": False,  # tests drive the jobs themselves, with a controlled clock
        # limits are tested on their own (test_rate_limits.py); elsewhere they would only get in the way
        "feedback_rate_limit": "100000/minute",
        "token_rate_limit": "100000/minute",
        "claude_rate_limit": "100000/minute",
        "slack_post_rate_limit": "100000/second",
        "git_history": False,  # tested in test_git_history.py and test_rollout.py; elsewhere the folder stays bare
        # one complaint, one rule: tested on its own (test_one_complaint_one_card.py, test_run_all_clustering.py);
        # elsewhere a test may make several rules from one feedback text
        "cluster_threshold": None,
        # replay before deploy: tested on its own (test_evaluation.py); elsewhere no background replays
        "evaluate": "off",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def generator(settings: Settings) -> SwitchableGenerator:
    """The runtime's generator: the real offline one, which a test may swap (`generator.inner = ...`)."""
    return SwitchableGenerator(build_generator(settings))


@pytest.fixture
async def runtime(settings: Settings, generator: SwitchableGenerator) -> AsyncIterator[Runtime]:
    runtime = await open_runtime(settings, generator=generator)
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture
def service(runtime: Runtime) -> PipelineService:
    return runtime.service


async def submit(service: PipelineService, payload: dict[str, Any] | None = None, actor: Actor = REPORTER):
    return await service.submit(FeedbackIn(**(payload or WEATHER_FEEDBACK)), actor)


async def approved_rule(service: PipelineService, payload: dict[str, Any] | None = None):
    feedback = await submit(service, payload)
    rule = await service.generate(feedback.feedback_id, REPORTER)
    return await service.approve(rule.rule_id, ADMIN)


async def rule_of(service: PipelineService, feedback_id: str):
    """The rule answering this feedback (generated from it, or attached to it), or None."""
    feedback = await service.get_feedback(feedback_id)
    return await service.get_rule(feedback.rule_id) if feedback.rule_id else None


def a_rule(status: RuleStatus, module_name: str = "fashion_rules.json", rollout_percent: int | None = None) -> Rule:
    """A rule record as the store returns it, for tests of what a rule's state allows (no database)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Rule(
        rule_id="RUL-1001",
        feedback_id="FB-1001",
        module_name=module_name,
        rule_type=RuleType.PROMPT_UPDATE,
        old_rule=None,
        new_rule="- a rule",
        reasoning="why",
        confidence=0.8,
        status=status,
        generator="heuristic",
        created_at=now,
        updated_at=now,
        rollout_percent=rollout_percent,
    )


def read_rule_lines(rules_dir: Path, module_name: str = "fashion_rules.json") -> list[str]:
    path = rules_dir / module_name
    if module_name.endswith(".json"):
        return [entry["rule"] for entry in json.loads(path.read_text(encoding="utf-8"))["rules"]]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("- ")]


# ---------------------------------------------------------------------- HTTP: the ASGI app


def bearer(role: Role = Role.ADMIN, subject: str = "U_ADMIN") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(JWT_SECRET, subject=subject, role=role)}"}


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return bearer(Role.ADMIN, "U_ADMIN")


@pytest.fixture
def reporter_headers() -> dict[str, str]:
    return bearer(Role.REPORTER, "chatbot")


@pytest.fixture
async def app(settings: Settings):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as client:
        yield client


# ---------------------------------------------------------------------- fake chatbot reload endpoint


@dataclass
class ReloadServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def reload_server() -> Iterator[ReloadServer]:
    """The chatbot's reload endpoint on 127.0.0.1: records each POST, answers with `status`."""
    state = ReloadServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            state.requests.append({"path": self.path, "json": json.loads(body or b"null")})
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"reloaded": true}')

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/reload"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------- `autotrain serve` as a subprocess


@dataclass
class ServedApp:
    base_url: str
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def log(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedApp]:
    """`autotrain serve` on a free port, in a fresh folder holding a copy of config/, with no settings."""
    workdir = tmp_path / "served"
    shutil.copytree(SHIPPED_RULES, workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    env = subprocess_environment()
    with serving(workdir, env) as (base_url, process):
        yield ServedApp(base_url, workdir, env, process)


# ---------------------------------------------------------------------- Slack: the fake Web API and the simulator

from tests.fakes.anthropic_api import messages_api  # noqa: E402, F401  (fixture)
from tests.fakes.monitoring import open_monitored  # noqa: E402, F401  (fixture)
from tests.fakes.slack_api import slack_api  # noqa: E402, F401  (fixture)
from tests.services import HOW  # noqa: E402
from tests.slack_support import slack  # noqa: E402, F401  (fixture)
from tests.stores import store, store_backend  # noqa: E402, F401  (fixtures: the store contract suite)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many tests a missing service skipped, and how to run them (tests/services.py); from the reports,
    so that it also counts what the xdist workers skipped."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if " not available: " in reason:
            service = reason.split(" not available: ")[0].split(":")[-1].strip()
            counts[service] = counts.get(service, 0) + 1
    for service, n in sorted(counts.items()):
        env = "AUTOTRAIN_TEST_REDIS_URL" if service == "Redis" else "AUTOTRAIN_TEST_POSTGRES_URL"
        terminalreporter.write_line(
            f"{n} test(s) skipped: {service} not available ({HOW.format(name=env)})", yellow=True
        )
