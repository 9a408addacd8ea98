"""Issue 17's acceptance over HTTP: two `autotrain serve` processes, each with a rules folder of its own (copies of
the shipped `config/`), one fresh PostgreSQL database, one Redis, one JWT secret.

- 50 concurrent approve / deploy / canary / promote / rollback requests over 20 rules of one file, spread over
  both instances, conflicting ones included (one rule deployed through both at once): every rule line at most
  once, exactly the deployments the 2xx answers announced (a refusal is a 409 that changed nothing), both
  folders byte-identical within a second of the last change and equal to what the rule sets endpoint of both
  serves (one ETag), one git commit per change, made once by the instance that made the change: both folders
  and the git remote both push to hold the same linear history (the same shas), each commit by its author;
- one instance SIGKILLed while a deploy through it is in flight: the other carries on, its folder equals the
  newest stored version, the interrupted rule is applied or not (its line and its status agree), and the
  killed one, restarted on its folder as it was and on an empty folder, converges to the same bytes.

A deployment the killed instance began and never completed (its `pending` row, the rule already moved to
`deployed`) is settled by the survivor's scheduler within a few seconds (`settle_pending`, whose file lock the
killed instance's connection no longer holds), before any other change of that file: the rule's status then
agrees with the stored file.

Skipped (failed in CI) without PostgreSQL and Redis: tests/services.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from autotrain.policy import Role
from autotrain.rulefiles import content_version
from tests.conftest import JWT_SECRET, SHIPPED_RULES, bearer, read_rule_lines
from tests.postgres_support import fresh_database_sync
from tests.serve_process import serving, subprocess_environment
from tests.services import redis_url, service_url  # noqa: F401  (redis_url: the fixture)
from tests.test_concurrency import size_complaint
from tests.test_rule_files_in_database import folder_copy, stored_content

MODULE = "fashion_rules.json"
RULESET = f"/autotrain/rulesets/{MODULE}"
CONVERGE_SECONDS = 1.0
CHANGES = ("Deploy", "Roll back", "Canary", "Promote")  # the commit messages of a change (usecases/commits.py)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    server = service_url("PostgreSQL", "AUTOTRAIN_TEST_POSTGRES_URL", request)
    with fresh_database_sync(server) as url:
        yield url


@dataclass
class Setup:
    database: str
    redis: str
    tmp_path: Path
    tag: str  # this test's own token subject, end user and rule lines (Redis counters outlive a test)
    git: bool

    def folder(self, name: str) -> Path:
        return self.tmp_path / f"rules-{name}"

    @property
    def remote(self) -> Path:
        """The bare repository both instances push to (with git on)."""
        return self.tmp_path / "remote.git"

    def workdir(self, name: str) -> Path:
        workdir = self.tmp_path / name
        workdir.mkdir(exist_ok=True)
        return workdir

    def environment(self, name: str) -> dict[str, str]:
        return subprocess_environment(
            AUTOTRAIN_DATABASE_URL=self.database,
            AUTOTRAIN_RULES_DIR=str(self.folder(name)),
            AUTOTRAIN_JWT_SECRET=JWT_SECRET,
            AUTOTRAIN_RATE_LIMIT_STORAGE=self.redis,
            AUTOTRAIN_FEEDBACK_RATE_LIMIT="100000/minute",
            AUTOTRAIN_TOKEN_RATE_LIMIT="100000/minute",
            AUTOTRAIN_AUTO_GENERATE="false",
            AUTOTRAIN_SCHEDULER="true",  # (its settle_pending job: the SIGKILL test)
            AUTOTRAIN_CLUSTER_THRESHOLD="",
            AUTOTRAIN_GIT="true" if self.git else "false",
            **({"AUTOTRAIN_GIT_REMOTE": str(self.remote)} if self.git else {}),
        )

    def serve(self, name: str) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
        return serving(self.workdir(name), self.environment(name))

    def reporter(self) -> dict[str, str]:
        return bearer(Role.REPORTER, f"chatbot-{self.tag}")

    def line(self, n: int) -> str:
        return f"- Kiểm tra size còn hàng của mẫu số {n} trước khi gợi ý ({self.tag})"


def make_setup(tmp_path: Path, database: str, redis: str, *, git: bool) -> Setup:
    setup = Setup(database, redis, tmp_path, uuid.uuid4().hex[:8], git)
    if git:
        subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(setup.remote)], check=True)
    for name in ("a", "b"):
        folder_copy(tmp_path, f"rules-{name}")
    return setup


def approved_rules(setup: Setup, urls: list[str], count: int) -> list[dict[str, Any]]:
    """`count` approved rules of fashion_rules.json, each appending a distinct new line; made alternately
    through the instances."""
    rules = []
    for n in range(count):
        with httpx.Client(base_url=urls[n % len(urls)], timeout=30, headers=bearer()) as http:
            payload = {**size_complaint(n), "user_id": f"shopper-{setup.tag}"}
            feedback = http.post("/autotrain/feedback", json=payload, headers=setup.reporter())
            assert feedback.status_code == 201, feedback.text
            generated = http.post(f"/autotrain/generate/{feedback.json()['feedback_id']}", headers=setup.reporter())
            assert generated.status_code in (200, 201), generated.text
            rule_id = generated.json()["rule_id"]
            edited = http.patch(
                f"/autotrain/rules/{rule_id}", json={"new_rule": setup.line(n), "module_name": MODULE, "old_rule": None}
            )
            assert edited.status_code == 200, edited.text
            approved = http.post(f"/autotrain/rules/{rule_id}/approve")
            assert approved.status_code == 200, approved.text
            rule = approved.json()
            assert rule["new_rule"] == setup.line(n) and not rule["old_rule"] and rule["module_name"] == MODULE
            rules.append(rule)
    return rules


def stored(database: str) -> bytes:
    return asyncio.run(stored_content(database))


def converge(folders: list[Path], expected: bytes, *, within: float) -> float:
    """Seconds until every folder's file holds exactly `expected` (fails after `within`)."""
    start = time.monotonic()
    while True:
        contents = [(folder / MODULE).read_bytes() if (folder / MODULE).exists() else b"" for folder in folders]
        if all(content == expected for content in contents):
            return time.monotonic() - start
        if time.monotonic() - start > within:
            pytest.fail(
                f"not converged within {within} s: {[content_version(c) for c in contents]}"
                f" != {content_version(expected)}"
            )
        time.sleep(0.005)


def served(base_url: str) -> tuple[bytes, str]:
    """What the rule sets endpoint serves: the file's content and its ETag."""
    response = httpx.get(f"{base_url}{RULESET}", headers=bearer(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["content"].encode(), response.headers["etag"]


def rule_status(base_url: str, rule_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/autotrain/rules/{rule_id}", headers=bearer(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def all_deployments(base_url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base_url}/autotrain/deployments", params={"limit": 200}, headers=bearer(), timeout=10)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == len(page["items"])
    return page["items"]


def rule_commits(folder: Path) -> list[str]:
    """The subjects of the folder's git commits of a change of a rule."""
    log = subprocess.run(
        ["git", "-C", str(folder), "log", "--format=%s"], capture_output=True, text=True, check=True
    ).stdout
    return [subject for subject in log.splitlines() if subject.startswith(CHANGES) and re.search(r" \w+ \(", subject)]


def git_log(repository: Path) -> list[str]:
    """The shas of the branch's commits, newest first (one parent each: --first-parent would hide a merge)."""
    out = subprocess.run(
        ["git", "-C", str(repository), "log", "--format=%H %P", "main"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    assert all(len(row) <= 2 for row in rows), "a merge commit"  # linear
    return [row[0] for row in rows]


def same_git_history(folders: list[Path], *, within: float) -> list[str]:
    """The one history every folder's branch has (polled; fails after `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        logs = [git_log(folder) for folder in folders]
        if all(log == logs[0] for log in logs) or time.monotonic() > deadline:
            assert all(log == logs[0] for log in logs), [log[:3] for log in logs]
            return logs[0]
        time.sleep(0.02)


def git_authors(folder: Path, shas: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["git", "-C", str(folder), "show", "-s", "--format=%H %an", *shas], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def assert_clean_logs(setup: Setup, *names: str) -> None:
    for name in names:
        log = (setup.workdir(name) / "serve.log").read_text(errors="replace")
        assert "Traceback" not in log and "edited by hand" not in log, log


# ---------------------------------------------------------------------- 50 concurrent requests over two instances


@dataclass
class Request:
    action: str  # deploy | canary | promote | rollback | approve
    rule: int  # index of the rule
    instance: int  # 0: a, 1: b
    delay: float = 0.0  # after the start signal (a promote or rollback waits a little for deploys to land)


def the_fifty() -> list[Request]:
    """50 requests, alternately through a and b; rules 0-4 deployed through both at once (one full through one,
    a canary through the other for 3 and 4), 15-19 as canaries, then promoted (15 and 16 through both), 5-10 rolled
    back (10 through both), and approves again (refused: every rule is approved or further)."""
    wanted: list[tuple[str, int, float]] = []
    for n in range(20):
        wanted.append(("canary" if n >= 15 else "deploy", n, 0.0))
        if n < 5:  # the conflicting one, next (the other instance)
            wanted.append(("canary" if n >= 3 else "deploy", n, 0.0))
    randomly = random.Random()
    for n in (15, 15, 16, 16, 17, 18, 19):
        wanted.append(("promote", n, randomly.uniform(0.3, 3.0)))
    for n in (5, 6, 7, 8, 9, 10, 10):
        wanted.append(("rollback", n, randomly.uniform(0.3, 3.0)))
    n = 0
    while len(wanted) < 50:
        wanted.append(("approve", n % 20, randomly.uniform(0, 0.5)))
        n += 1
    return [Request(action, rule, i % 2, delay) for i, (action, rule, delay) in enumerate(wanted)]


def fire(urls: list[str], rules: list[dict[str, Any]], requests: list[Request]) -> list[httpx.Response]:
    """Every request at once (a thread and an HTTP client each), released together."""
    start = threading.Barrier(len(requests))

    def one(request: Request) -> httpx.Response:
        rule_id = rules[request.rule]["rule_id"]
        with httpx.Client(base_url=urls[request.instance], timeout=60, headers=bearer()) as http:
            http.get("/healthz")  # connected before the start
            start.wait()
            time.sleep(request.delay)
            if request.action == "canary":
                return http.post(f"/autotrain/rules/{rule_id}/deploy", json={"rollout_percent": 10})
            return http.post(f"/autotrain/rules/{rule_id}/{request.action}")

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def test_fifty_concurrent_requests_over_two_instances(tmp_path: Path, postgres_url: str, redis_url: str) -> None:  # noqa: F811
    setup = make_setup(tmp_path, postgres_url, redis_url, git=True)
    folders = [setup.folder("a"), setup.folder("b")]
    with setup.serve("a") as (a_url, _), setup.serve("b") as (b_url, _):
        urls = [a_url, b_url]
        rules = approved_rules(setup, urls, 20)
        assert all_deployments(a_url) == []
        requests = the_fifty()
        assert len(requests) == 50

        answers = fire(urls, rules, requests)
        finished = time.monotonic()

        # every answer is a success or a 409 refusal
        assert {answer.status_code for answer in answers} <= {200, 409}, [
            (r, a.status_code, a.text)
            for r, a in zip(requests, answers, strict=True)
            if a.status_code not in (200, 409)
        ]
        ok = [(request, answer.json()) for request, answer in zip(requests, answers, strict=True) if answer.is_success]
        for answer in answers:
            if answer.status_code == 409:
                assert answer.json()["error"]["code"], answer.text
        assert not [r for r, _ in ok if r.action == "approve"]  # each rule was approved already

        # the expected final state, from the 2xx answers
        deployed = {r.rule: body for r, body in ok if r.action in ("deploy", "canary")}
        assert len(deployed) == len([r for r, _ in ok if r.action in ("deploy", "canary")])  # each rule once at most
        assert set(range(5)) <= set(deployed)  # a conflicting pair: exactly one of them succeeded
        promoted = [r.rule for r, _ in ok if r.action == "promote"]
        rolled_back = [r.rule for r, _ in ok if r.action == "rollback"]
        assert len(promoted) == len(set(promoted)) and len(rolled_back) == len(set(rolled_back))
        for n in promoted:
            assert deployed[n]["rollout_percent"] == 10  # only a canary is promoted
        assert set(rolled_back) <= set(deployed)
        made_by = {body["deployment"]["deployment_id"]: r.instance for r, body in ok if r.action != "approve"}
        assert len(made_by) == len(ok)  # one deployment each
        expected: dict[int, tuple[str, int | None]] = {}  # rule: its status, and its share of users if deployed
        for n in range(20):
            if n in rolled_back:
                expected[n] = ("rolled_back", None)
            elif n in deployed:
                expected[n] = ("deployed", 100 if n in promoted else deployed[n]["rollout_percent"] or 100)
            else:
                expected[n] = ("approved", None)

        # both folders byte-identical within a second, equal to the newest stored version and to what both serve
        newest = stored(postgres_url)
        took = converge(folders, newest, within=CONVERGE_SECONDS)
        print(f"\nconverged {took * 1000:.1f} ms after the check; {time.monotonic() - finished:.2f} s after the last")
        contents, etags = zip(*(served(url) for url in urls), strict=True)
        assert list(contents) == [newest, newest]
        assert list(etags) == [f'"{content_version(newest)}"'] * 2

        # every rule line at most once; exactly the deployed (not rolled back) rules' lines, with the shipped ones
        lines = read_rule_lines(folders[0])
        assert len(lines) == len(set(lines))
        shipped = read_rule_lines(SHIPPED_RULES)
        assert [line for line in lines if line in shipped] == shipped
        live = {setup.line(n) for n in deployed if n not in rolled_back}
        assert set(lines) - set(shipped) == live
        for n, (status, share) in expected.items():
            rule = rule_status(urls[n % 2], rules[n]["rule_id"])
            assert rule["status"] == status, (n, rule)
            if status == "deployed":
                assert (rule["rollout_percent"] or 100) == share, (n, rule)

        # exactly the deployments the answers announced, each applied
        deployments = all_deployments(b_url)
        assert {d["deployment_id"] for d in deployments} == set(made_by)
        assert all(d["state"] == "applied" for d in deployments), deployments
        counts = {
            "deploys": len([d for d in deployments if d["rollback_of"] is None and d["outcome"] != "promoted"]),
            "promotes": len([d for d in deployments if d["outcome"] == "promoted"]),
            "rollbacks": len([d for d in deployments if d["rollback_of"] is not None]),
        }
        assert counts == {"deploys": len(deployed), "promotes": len(promoted), "rollbacks": len(rolled_back)}
        print(f"2xx: {counts}, 409: {50 - len(ok)}")

        # one git commit per change, made by the instance that made the change, and one history: both folders'
        # branches the same commits (the same shas) within a second, linear, and the remote's branch is it too
        history = same_git_history(folders, within=CONVERGE_SECONDS)
        assert history == git_log(setup.remote)
        assert len(rule_commits(folders[0])) == len(made_by)
        shas = [d["commit_sha"] for d in deployments]
        assert None not in shas and len(set(shas)) == len(shas)
        assert set(shas) <= set(history)
        authors = {d["commit_sha"]: d["deployed_by"] for d in deployments}
        for folder in folders:
            assert git_authors(folder, shas) == authors  # each commit's author is who made the change
        for d in all_deployments(a_url):
            assert d["pushed_at"] is not None and d["push_error"] is None, d
        status = subprocess.run(
            ["git", "-C", str(folders[1]), "status", "--porcelain"], capture_output=True, text=True, check=True
        )
        assert status.stdout == ""  # the folder's files are the branch's: nothing uncommitted, nothing untracked
    assert_clean_logs(setup, "a", "b")


# ---------------------------------------------------------------------- SIGKILL of one instance mid-deploy


def deployment_states(database: str, rule_id: str) -> list[str]:
    async def query() -> list[str]:
        db = await asyncpg.connect(database)
        try:
            rows = await db.fetch("SELECT state FROM deployments WHERE rule_id = $1 ORDER BY id", rule_id)
            return [row["state"] for row in rows]
        finally:
            await db.close()

    return asyncio.run(query())


def wait_for_pending(database: str, rule_id: str, *, within: float = 5.0) -> bool:
    """Whether a pending deployment of the rule appeared (polled every millisecond) within `within` seconds."""

    async def poll() -> bool:
        db = await asyncpg.connect(database)
        try:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                query = "SELECT state FROM deployments WHERE rule_id = $1"
                if await db.fetchval(query, rule_id) is not None:
                    return True
                await asyncio.sleep(0.001)
            return False
        finally:
            await db.close()

    return asyncio.run(poll())


SETTLE_SECONDS = 15.0  # bot/scheduler.py settles every 5 s; a slow machine's first tick may come later


def wait_until_settled(database: str, rule_id: str, *, within: float) -> list[str]:
    """The rule's deployment states once none is pending (polled), failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        states = deployment_states(database, rule_id)
        if "pending" not in states or time.monotonic() > deadline:
            assert "pending" not in states, f"still pending after {within} s: {states}"
            return states
        time.sleep(0.1)


def deploy(base_url: str, rule_id: str) -> httpx.Response:
    return httpx.post(f"{base_url}/autotrain/rules/{rule_id}/deploy", headers=bearer(), timeout=30)


def in_background(call: Callable[[], httpx.Response]) -> concurrent.futures.Future[httpx.Response]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def test_one_instance_killed_mid_deploy_the_other_carries_on_and_it_converges(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,  # noqa: F811
) -> None:
    setup = make_setup(tmp_path, postgres_url, redis_url, git=True)
    folders = [setup.folder("a"), setup.folder("b")]
    attempts = 4
    with setup.serve("b") as (b_url, _):
        rules = iter(approved_rules(setup, [b_url], 3 * attempts + 1))
        interrupted = 0
        killed_at: list[int] = []  # ms after the deploy through a was sent
        outcomes: list[str] = []  # of the deploy the kill interrupted: applied or not
        for attempt in range(attempts):
            with setup.serve("a") as (a_url, a_process):
                served(a_url)  # warmed up
                if attempt:  # restarted on its folder as it was
                    converge(folders, stored(postgres_url), within=3)
                through_a, through_b = next(rules), next(rules)
                a_answer = in_background(lambda: deploy(a_url, through_a["rule_id"]))  # noqa: B023
                b_answer = in_background(lambda: deploy(b_url, through_b["rule_id"]))  # noqa: B023
                sent = time.monotonic()
                if attempt % 2 == 0:  # once its deployment is begun (the file's lock held), and a little more
                    assert wait_for_pending(postgres_url, through_a["rule_id"]), a_answer.result().text
                    time.sleep(random.uniform(0.0, 0.004))
                else:  # anywhere in the request
                    time.sleep(random.uniform(0.0, 0.1))
                delay = time.monotonic() - sent
                in_flight = not a_answer.done()
                a_process.send_signal(signal.SIGKILL)
                a_process.wait(timeout=10)
                with contextlib.suppress(httpx.HTTPError):
                    a_answer.result(timeout=30)
                interrupted += in_flight
                left = deployment_states(postgres_url, through_a["rule_id"])  # before b's next change settles it
                killed_at.append(round(delay * 1000))
                # b carries on: its own deploy, started meanwhile, and one after the kill
                answer = b_answer.result(timeout=30)
                assert answer.status_code == 200, answer.text
                # what a left pending is settled by b's scheduler, before any other change of the file: the rule's
                # status agrees with the stored file
                settled_states = wait_until_settled(postgres_url, through_a["rule_id"], within=SETTLE_SECONDS)
                in_stored = through_a["new_rule"].encode() in stored(postgres_url)
                settled_status = rule_status(b_url, through_a["rule_id"])["status"]
                assert (settled_status == "deployed") == in_stored == (settled_states == ["applied"]), (
                    settled_status,
                    settled_states,
                    left,
                )
                after = next(rules)
                answer = deploy(b_url, after["rule_id"])
                assert answer.status_code == 200, answer.text
                # the database and b's folder agree
                newest = stored(postgres_url)
                converge([folders[1]], newest, within=CONVERGE_SECONDS)
                assert served(b_url) == (newest, f'"{content_version(newest)}"')
                lines = read_rule_lines(folders[1])
                assert len(lines) == len(set(lines))
                assert through_b["new_rule"] in lines and after["new_rule"] in lines
                # the interrupted deploy: applied (its line in the file, the rule deployed, its deployment applied)
                # or not (none of them)
                status = rule_status(b_url, through_a["rule_id"])["status"]
                states = deployment_states(postgres_url, through_a["rule_id"])
                assert "pending" not in states and status in ("deployed", "approved"), (status, states)
                applied = through_a["new_rule"] in lines
                assert applied == (status == "deployed") == (states == ["applied"]), (status, states, lines)
                outcomes.append(f"{'in flight' if in_flight else 'answered'}, rows {left}: {status}")
        assert interrupted, "no kill landed while a deploy was in flight"

        # b carries on after the last kill too; every rule's line, status and deployment agree
        last = next(rules)
        assert deploy(b_url, last["rule_id"]).status_code == 200
        lines = read_rule_lines(folders[1])
        deployments = all_deployments(b_url)
        assert all(d["state"] == "applied" for d in deployments), deployments
        applied = {d["rule_id"] for d in deployments if d["state"] == "applied" and d["rollback_of"] is None}
        listed = httpx.get(f"{b_url}/autotrain/rules", params={"limit": 100}, headers=bearer(), timeout=10)
        every_rule = listed.json()["items"]
        for n in range(3 * attempts + 1):
            line = setup.line(n)
            rule = next(r for r in every_rule if r["new_rule"] == line)
            assert (line in lines) == (rule["status"] == "deployed") == (rule["rule_id"] in applied), rule

        # a restarted on its folder as it was, then on an emptied folder: the same bytes within a few seconds
        newest = stored(postgres_url)
        with setup.serve("a") as (a_url, _):
            converge(folders, newest, within=3)
            assert served(a_url) == served(b_url)
        shutil.rmtree(folders[0])
        folders[0].mkdir()
        with setup.serve("a") as (a_url, _):
            converge(folders, newest, within=3)
            assert served(a_url) == served(b_url) == (newest, f'"{content_version(newest)}"')
            for name in ("prompt_v2.txt", "stylist_guidelines.md"):
                assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes()
            # one git history in both folders and the remote, every applied change in it exactly once (a change
            # the killed instance stored but never committed was committed by the other one)
            history = same_git_history(folders, within=3)
            deployments = all_deployments(a_url)
            shas = [d["commit_sha"] for d in deployments if d["version_after"] != d["version_before"]]
            assert None not in shas and len(set(shas)) == len(shas), deployments
            assert set(shas) <= set(history)
            assert len(rule_commits(folders[0])) == len(shas)
            assert git_log(setup.remote) == history  # (each commit is pushed at once, by whoever made it)
        print(f"\n{interrupted} of {attempts} kills in flight, at {killed_at} ms: {outcomes}")
    assert_clean_logs(setup, "b")
