"""Two `autotrain serve` processes on one database, driven over real HTTP: on SQLite (one database file, one rules
folder) and on PostgreSQL (one database; test A gives each instance a rules folder of its own, as deployed).

What two instances share is the database, the rule files and (on SQLite) the git repository of the rules folder;
what they do not share is memory. Every guard against doing a thing twice must therefore live in the database or
on disk (SQLite locking, the generation lease, flock, git's own locks), and an in-process test — two runtimes
in one event loop, one module-level lock table, one import of everything — can pass while real processes
clash. So here they are real processes, started with `python -m bot.cli serve` (settings in the environment,
each with its own log), and a SIGKILL is a real one:

- started together on a fresh database and a fresh folder (not a git repository yet), three times: both
  answer, neither says "git history is off" (a `git init` clash) or "database is locked" (WAL set-up; on
  PostgreSQL: the schema made and the seeds stored by both at once, a seed stored once), and a rule deployed
  through each at the same moment is one commit each, under its own rule and author (on PostgreSQL made by the
  instance that made it, both folders then the newest stored version and the same git history);
- a second instance started while the first is generating with a slow (fake) Claude, then running run-all
  too: nothing requeued at its start-up, exactly one Claude call and one rule per feedback, no 500 (before
  the fix: 12 calls for 8 feedbacks and a 500, `UNIQUE constraint failed: generated_rules.feedback_id`; with
  the unconditional requeue put back, this test sees 14 calls for 8 — the store now keeps the rule unique);
- the first instance SIGKILLed mid-generation while the second waits for one of those generations: the
  waiting request takes it over once the lease has run out (not before: the lease was renewed across the
  process boundary while the first lived), run-all takes the rest; one rule per feedback, one extra Claude
  call per killed generation and no more.

Tests B and C run the shipped command itself (`python -m bot.cli serve`; C with a short
AUTOTRAIN_GENERATION_LEASE_SECONDS). Test A calls the same CLI `main()` through a short launcher (LAUNCHER below),
which holds both instances at a start gate after their imports, so they open the database and the folder within
milliseconds of each other rather than whenever their imports happen to end.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotrain.policy import Role
from bot.shared_history import ROOT_MESSAGE
from tests.conftest import HEIGHT_FEEDBACK, JWT_SECRET, SHIPPED_RULES, WEATHER_FEEDBACK, bearer, read_rule_lines
from tests.fakes.anthropic_api import FakeMessagesApi, FakeReply, generic_answer
from tests.reliability_support import (
    assert_served_backend,
    database_url,
    on_postgres,
    rows_sync,
    run_sync,
    stored_versions,
)
from tests.serve_process import free_port, subprocess_environment

pytestmark = pytest.mark.both_backends  # every guard lives in the database: a SQLite file, or PostgreSQL

STARTUP_SECONDS = 30
BAD_LOG_LINES = (
    "git history is off",
    "database is locked",
    "Traceback",
    " ERROR ",
    "ERROR:",
    "UNIQUE constraint",  # SQLite's, and PostgreSQL's words for the same
    "duplicate key value",
    "deadlock detected",
)
MODULE = "fashion_rules.json"
INITIAL_COMMIT = "Auto-Train: track the rule files"
REPORTER = bearer(Role.REPORTER, "chatbot")

# `autotrain serve` (the CLI's own main) behind a start gate: the imports done, it says it is ready and waits for
# the gate file, so two instances leave the gate within a few milliseconds of each other and set up the database
# and the repository at the same moment (their imports alone take 1–2 s, which would spread two Popen calls apart)
LAUNCHER = textwrap.dedent(
    """
    import os, sys, time
    import bot.api, bot.cli, bot.git_history, bot.runtime, storage.postgres, storage.sqlite

    gate = os.environ.get("TEST_START_GATE")
    if gate:
        open(f"{gate}.ready.{os.getpid()}", "w").close()
        while not os.path.exists(gate):
            time.sleep(0.002)
    raise SystemExit(bot.cli.main(sys.argv[1:]))
    """
)


# ---------------------------------------------------------------------- processes


@dataclass
class Instance:
    name: str
    workdir: Path
    base_url: str
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def wait_healthy(self, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"instance {self.name} did not start (exit {self.process.poll()}):\n{self.log()}")
            time.sleep(0.05)

    def sigkill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextlib.contextmanager
def fleet() -> Iterator[Callable[..., Instance]]:
    """`launch(name, workdir, env, lease_seconds=None, gate=None)` starts an instance without waiting for it;
    every instance launched is stopped (SIGTERM, then SIGKILL) when the block ends, whatever happened in it."""
    launched: list[Instance] = []
    ports: set[int] = set()

    def launch(
        name: str, workdir: Path, env: dict[str, str], *, lease_seconds: float | None = None, gate: Path | None = None
    ) -> Instance:
        port = free_port()
        while port in ports:  # two quick calls may be given the same free port
            port = free_port()
        ports.add(port)
        serve = ["serve", "--port", str(port)]
        env = dict(env)
        if lease_seconds is not None:
            env["AUTOTRAIN_GENERATION_LEASE_SECONDS"] = str(lease_seconds)
        if gate is None:
            command = [sys.executable, "-m", "bot.cli", *serve]  # exactly the shipped command
        else:
            command = [sys.executable, "-c", LAUNCHER, *serve]
            env["TEST_START_GATE"] = str(gate)
        workdir.mkdir(parents=True, exist_ok=True)
        with open(workdir / "serve.log", "wb") as log:
            process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        instance = Instance(name, workdir, f"http://127.0.0.1:{port}", process)
        launched.append(instance)
        return instance

    try:
        yield launch
    finally:
        for instance in launched:
            instance.stop()


def shared_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """One database and one rules folder (a fresh copy of config/) for every instance given this environment."""
    rules = tmp_path / "rules"
    shutil.copytree(SHIPPED_RULES, rules, ignore=shutil.ignore_patterns(".autotrain"))
    return subprocess_environment(
        AUTOTRAIN_DATABASE_URL=database_url(tmp_path),
        AUTOTRAIN_RULES_DIR=str(rules),
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_AUTO_GENERATE="false",  # generation only when the test asks for it
        AUTOTRAIN_EVALUATE="off",  # only generations reach the fake Messages API (replays are tested on their own)
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="100000/minute",
        AUTOTRAIN_TOKEN_RATE_LIMIT="100000/minute",
        AUTOTRAIN_CLAUDE_RATE_LIMIT="100000/minute",
        **extra,
    )


def own_folder(env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    """`env` with a rules folder of this instance's own (a fresh copy of config/): PostgreSQL's deployment."""
    rules = tmp_path / f"rules-{name}"
    shutil.copytree(SHIPPED_RULES, rules, ignore=shutil.ignore_patterns(".autotrain"))
    return {**env, "AUTOTRAIN_RULES_DIR": str(rules)}


def bad_lines(instance: Instance) -> list[str]:
    assert_served_backend(instance.log())
    return [line for line in instance.log().splitlines() if any(bad in line for bad in BAD_LOG_LINES)]


def complaint(n: int) -> dict[str, str]:
    return {
        "query": f"gợi ý quần jean size {n}",
        "ai_response": "Bạn thử mẫu này nhé",
        "feedback_text": f"Sản phẩm mẫu số {n} không còn size",
        "feedback_type": "bug",
    }


class HeldAnswers:
    """The fake Claude's answers held until `release()`: calls that stay in flight for as long as a test needs,
    whatever the machine's load (a fixed latency would have to outlast the slowest start-up)."""

    def __init__(self, api: FakeMessagesApi, timeout: float = 60) -> None:
        self.released = threading.Event()
        self.timeout = timeout
        api.default = self.answer

    def answer(self, body: dict[str, Any]) -> FakeReply:
        self.released.wait(self.timeout)
        return generic_answer(body)

    def release(self) -> None:
        self.released.set()

    def __enter__(self) -> HeldAnswers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()  # whatever happened, no handler thread is left waiting


_FEEDBACK_TEXT = re.compile(r"<feedback_text>(.*?)</feedback_text>", re.S)


def calls_per_feedback_text(api: FakeMessagesApi) -> Counter[str]:
    counts: Counter[str] = Counter()
    for request in list(api.requests):
        match = _FEEDBACK_TEXT.search(request.user_text)
        assert match, "a Messages request without the feedback text"
        counts[match.group(1).strip()] += 1
    return counts


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def submit_all(instance: Instance, payloads: list[dict[str, str]]) -> dict[str, str]:
    """Submit each feedback; {feedback_id: feedback_text}."""
    ids = {}
    with instance.client() as http:
        for payload in payloads:
            response = http.post("/autotrain/feedback", json=payload, headers=REPORTER)
            assert response.status_code == 201, response.text
            ids[response.json()["feedback_id"]] = payload["feedback_text"]
    return ids


def rules_by_feedback(instance: Instance) -> Counter[str]:
    with instance.client() as http:
        response = http.get("/autotrain/rules", params={"limit": 200}, headers=bearer())
    assert response.status_code == 200, response.text
    return Counter(rule["feedback_id"] for rule in response.json()["items"])


def assert_one_rule_each(instance: Instance, feedback_ids: dict[str, str]) -> None:
    assert rules_by_feedback(instance) == Counter(feedback_ids.keys())  # every feedback exactly one rule, no other
    with instance.client() as http:
        for feedback_id in feedback_ids:
            feedback = http.get(f"/autotrain/feedback/{feedback_id}", headers=bearer()).json()
            assert (feedback["status"], bool(feedback["rule_id"])) == ("processed", True), feedback


# ---------------------------------------------------------------------- A: started together


def git(rules: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=rules, capture_output=True, text=True, check=True).stdout


def deploy_one(instance: Instance, payload: dict[str, str], admin: str) -> dict[str, Any]:
    """Submit, generate, approve and deploy one rule through this instance; the deployed rule."""
    admin_headers = bearer(Role.ADMIN, admin)
    with instance.client() as http:
        feedback = http.post("/autotrain/feedback", json=payload, headers=REPORTER)
        assert feedback.status_code == 201, feedback.text
        rule = http.post(f"/autotrain/generate/{feedback.json()['feedback_id']}", headers=REPORTER)
        assert rule.status_code == 200, rule.text
        rule_id = rule.json()["rule_id"]
        approved = http.post(f"/autotrain/rules/{rule_id}/approve", headers=admin_headers)
        assert approved.status_code == 200, approved.text
        deployed = http.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin_headers)
        assert deployed.status_code == 200, deployed.text
        return deployed.json()


@pytest.mark.skipif(shutil.which("git") is None, reason="the git binary is not installed")
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_two_instances_started_together_on_a_fresh_folder(tmp_path: Path, attempt: int) -> None:
    empty_gitconfig = tmp_path / "empty-global-gitconfig"
    empty_gitconfig.write_text("")
    env = shared_environment(
        tmp_path, AUTOTRAIN_GIT="true", GIT_CONFIG_GLOBAL=str(empty_gitconfig), GIT_CONFIG_NOSYSTEM="1"
    )
    # SQLite: one folder for both; PostgreSQL: each its own folder, a copy of the versions in the database
    envs = [own_folder(env, tmp_path, name) for name in ("alpha", "bravo")] if on_postgres() else [env, env]
    folders = [Path(e["AUTOTRAIN_RULES_DIR"]) for e in envs]
    assert not any((rules / ".git").exists() for rules in folders) and not (tmp_path / "autotrain.db").exists()

    with fleet() as launch:
        gate = tmp_path / "go"
        alpha = launch("alpha", tmp_path / "alpha", envs[0], gate=gate)
        bravo = launch("bravo", tmp_path / "bravo", envs[1], gate=gate)
        wait_for(lambda: len(list(tmp_path.glob("go.ready.*"))) == 2, "both instances at the start gate", 30)
        gate.touch()  # both go: the same database and folder opened at the same moment
        for instance in (alpha, bravo):
            instance.wait_healthy()
        for instance in (alpha, bravo):
            assert httpx.get(f"{instance.base_url}/healthz", timeout=5).status_code == 200

        # one rule through each, deployed at the same moment (one rule file, one repository)
        with ThreadPoolExecutor(2) as pool:
            jobs = [
                pool.submit(deploy_one, alpha, WEATHER_FEEDBACK, "U_ALPHA"),
                pool.submit(deploy_one, bravo, HEIGHT_FEEDBACK, "U_BRAVO"),
            ]
            deployed = [job.result(timeout=60) for job in jobs]

        if on_postgres():  # each folder follows the database (LISTEN/NOTIFY): both end with both changes
            url = env["AUTOTRAIN_DATABASE_URL"]
            newest = run_sync(stored_versions(url, MODULE))[-1].content
            wait_for(lambda: all((f / MODULE).read_bytes() == newest for f in folders), "both folders", 10)

            # and each folder's git history follows the one they share: a root and the two changes, in both
            def one_history() -> bool:
                logs = [git(f, "log", "--format=%H").split() for f in folders]
                return len(logs[0]) == 3 and logs[0] == logs[1]

            wait_for(one_history, "one git history", 10)

    for instance in (alpha, bravo):
        assert bad_lines(instance) == [], instance.name
    commits = []
    for rule, author in zip(deployed, ("U_ALPHA", "U_BRAVO"), strict=True):
        assert rule["status"] == "deployed"
        assert rule["deployment"]["commit_sha"], rule["deployment"]  # committed, not left for later
        subject = f"Deploy {rule['rule_id']} ({rule['feedback_id']}): {rule['new_rule']}"
        commits.append((rule["deployment"]["commit_sha"], author, subject))

    def git_log(rules: Path) -> list[tuple[str, ...]]:
        return [tuple(line.split("\t", 2)) for line in git(rules, "log", "--format=%H%x09%an%x09%s").splitlines()]

    if not on_postgres():
        log = git_log(folders[0])
        assert set(log[:2]) == set(commits)
        assert [entry[2] for entry in log[2:]] == [INITIAL_COMMIT]  # one repository, created once
        assert git(folders[0], "status", "--porcelain") == ""
        return
    # PostgreSQL: each change committed once, by the instance that made it, and both folders hold the same history
    # (bot/shared_history.py): the two changes over a root of the first stored versions, no change twice
    log = git_log(folders[0])
    assert git_log(folders[1]) == log
    assert set(log[:2]) == set(commits)
    assert [entry[2] for entry in log[2:]] == [ROOT_MESSAGE.strip()]
    assert all(n == 1 for n in Counter(entry[2] for entry in log).values()), log
    # one seed per file though both stored it at once, and one version per deploy; both lines in it once
    versions = run_sync(stored_versions(url, MODULE))
    assert [(v.number, v.deployment_id is None) for v in versions] == [(1, True), (2, False), (3, False)]
    lines = read_rule_lines(folders[0])
    assert all(lines.count(rule["new_rule"]) == 1 for rule in deployed), lines


# ---------------------------------------------------------------------- B: a second instance mid-generation


def processing(url: str) -> list[str]:
    return [row[0] for row in rows_sync(url, "SELECT feedback_id FROM feedbacks WHERE status = 'processing'")]


def run_all(instance: Instance) -> httpx.Response:
    with instance.client(timeout=120) as http:
        return http.post("/autotrain/run-all", headers=bearer())


def test_a_second_instance_started_mid_generation_redoes_nothing(tmp_path: Path, messages_api: FakeMessagesApi) -> None:
    held = HeldAnswers(messages_api)  # a slow Claude: no answer until the second instance is up and running
    messages_api.latency = 0.3
    env = shared_environment(
        tmp_path,
        AUTOTRAIN_GIT="false",
        AUTOTRAIN_CLUSTER_THRESHOLD="",  # one rule per feedback, no grouping
        ANTHROPIC_API_KEY="sk-ant-test-two-instances",
        ANTHROPIC_BASE_URL=messages_api.base_url,
    )
    database = env["AUTOTRAIN_DATABASE_URL"]
    payloads = [complaint(n) for n in range(8)]

    # on the way out: answers released, then the instances stopped, then the pool joined
    with ThreadPoolExecutor(2) as pool, fleet() as launch, held:
        # six at a time on the first: six generations in flight, two feedbacks left pending
        first = launch("first", tmp_path / "first", {**env, "AUTOTRAIN_RUN_ALL_CONCURRENCY": "6"})
        first.wait_healthy()
        feedback_ids = submit_all(first, payloads)
        first_run: Future[httpx.Response] = pool.submit(run_all, first)
        wait_for(lambda: len(messages_api.requests) >= 6, "the first instance's six Claude calls")
        assert len(processing(database)) == 6

        # the second starts (and reconciles) while those six are being generated, then runs run-all: it
        # takes the two pending ones, and must leave the six alone
        second = launch("second", tmp_path / "second", env)
        second.wait_healthy()
        second_run: Future[httpx.Response] = pool.submit(run_all, second)
        wait_for(lambda: len(messages_api.requests) >= 8, "the second instance's Claude calls")
        time.sleep(0.5)  # room for any call it should not make
        held.release()
        first_response, second_response = first_run.result(timeout=60), second_run.result(timeout=60)

        assert (first_response.status_code, second_response.status_code) == (200, 200), (
            first_response.text,
            second_response.text,
        )
        assert calls_per_feedback_text(messages_api) == Counter(feedback_ids.values())  # one call per feedback
        first_summary, second_summary = first_response.json(), second_response.json()
        assert first_summary["errors"] == [] and second_summary["errors"] == []
        assert first_summary["total"] == 8 and len(first_summary["rules_created"]) == 8
        assert second_summary["total"] == 2  # the six in flight were not pending for it
        assert set(second_summary["rules_created"]) <= set(first_summary["rules_created"])  # the same rules
        assert_one_rule_each(second, feedback_ids)

    assert rows_sync(database, "SELECT subject_id FROM audit_log WHERE action = 'feedback_requeued'") == []
    assert "requeued" not in second.log()
    for instance in (first, second):
        assert bad_lines(instance) == [], instance.name


# ---------------------------------------------------------------------- C: SIGKILL mid-generation


LEASE_SECONDS = 3.0  # renewed every second: a margin of two against a busy machine


def test_a_generation_killed_with_its_process_is_taken_over_once_its_lease_runs_out(
    tmp_path: Path, messages_api: FakeMessagesApi
) -> None:
    held = HeldAnswers(messages_api)  # the first instance's calls are not answered: it dies waiting for them
    env = shared_environment(
        tmp_path,
        AUTOTRAIN_GIT="false",
        AUTOTRAIN_CLUSTER_THRESHOLD="",
        ANTHROPIC_API_KEY="sk-ant-test-two-instances",
        ANTHROPIC_BASE_URL=messages_api.base_url,
    )
    database = env["AUTOTRAIN_DATABASE_URL"]
    payloads = [complaint(n) for n in range(6)]

    with ThreadPoolExecutor(2) as pool, fleet() as launch, held:
        first = launch("first", tmp_path / "first", env, lease_seconds=LEASE_SECONDS)
        second = launch("second", tmp_path / "second", env, lease_seconds=LEASE_SECONDS)
        first.wait_healthy()
        second.wait_healthy()
        feedback_ids = submit_all(first, payloads)
        texts = {text: feedback_id for feedback_id, text in feedback_ids.items()}

        # the first runs run-all (four at a time): four generations in flight, two feedbacks still pending
        first_run = pool.submit(run_all, first)
        wait_for(lambda: len(messages_api.requests) >= 4, "four Claude calls from the first instance")
        assert len(messages_api.requests) == 4
        killed = sorted(texts[text] for text in calls_per_feedback_text(messages_api))
        assert killed == sorted(processing(database))

        # the second is asked for one of them: it waits for the first's generation, well past one lease
        def generate_on_second() -> httpx.Response:
            with second.client(timeout=60) as http:
                return http.post(f"/autotrain/generate/{killed[0]}", headers=REPORTER)

        waiting = pool.submit(generate_on_second)
        time.sleep(LEASE_SECONDS + 1)
        assert not waiting.done(), waiting.result().text
        calls_before_the_kill = len(messages_api.requests)
        assert calls_before_the_kill == 4, "the second took over a generation the first was still running"

        first.sigkill()
        killed_at = time.monotonic()
        held.release()  # from here Claude answers (the dead instance's four answers go nowhere)
        with contextlib.suppress(httpx.HTTPError):
            first_run.result(timeout=10)  # its connection dropped with it

        taken_over = waiting.result(timeout=30)
        waited = time.monotonic() - killed_at
        assert taken_over.status_code == 200, taken_over.text
        assert taken_over.json()["feedback_id"] == killed[0]
        # once the lease ran out (last renewed at most a third of a lease before the kill), not before; plus
        # the waiting side's claim attempt once a second
        assert LEASE_SECONDS / 2 <= waited <= LEASE_SECONDS + 3, waited

        time.sleep(max(0.0, killed_at + LEASE_SECONDS + 0.3 - time.monotonic()))  # every killed lease is out
        response = run_all(second)
        assert response.status_code == 200, response.text
        summary = response.json()
        assert summary["errors"] == []
        assert summary["total"] == len(payloads) - 1  # the three other killed ones and the two never started
        assert_one_rule_each(second, feedback_ids)

        # one extra call for each killed generation, none for anything else
        expected = Counter({text: 2 if texts[text] in killed else 1 for text in texts})
        assert calls_per_feedback_text(messages_api) == expected

    assert bad_lines(second) == [], second.name
    requeued = rows_sync(database, "SELECT subject_id FROM audit_log WHERE action = 'feedback_requeued'")
    assert {row[0] for row in requeued} <= set(killed)  # a start-up may requeue only what was abandoned
