"""The README's quick start against `autotrain serve` started as a subprocess: in a folder of its own, and in a
fresh clone of this repository, where it must leave every tracked file as it was (issue 16: the quick start
used to deploy into the tracked config/fashion_rules.json, and the README's test command failed after it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    REPO_ROOT,
    SHIPPED_RULES,
    WEATHER_FEEDBACK,
    ServedApp,
    read_rule_lines,
)
from tests.serve_process import serving
from tests.serving_logs import problems_in

needs_git = pytest.mark.skipif(
    shutil.which("git") is None or not (REPO_ROOT / ".git").exists(), reason="needs git and a git checkout"
)
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="the README's quick start uses curl")


def test_quick_start_against_served_process(served: ServedApp) -> None:
    token_run = served.cli("token", "--role", "admin")
    assert token_run.returncode == 0, token_run.stderr
    token = token_run.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=served.base_url, headers=headers, timeout=30) as http:
        created = http.post("/autotrain/feedback", json=WEATHER_FEEDBACK)
        assert created.status_code == 201
        assert created.json()["feedback_id"] == "FB-1001"

        rule = http.post("/autotrain/generate/FB-1001")
        assert rule.status_code == 200
        assert rule.json()["rule_id"] == "RUL-1001"
        assert rule.json()["new_rule"] == NEW_WEATHER_RULE
        assert rule.json()["old_rule"] == OLD_WEATHER_RULE

        assert http.post("/autotrain/rules/RUL-1001/approve").json()["status"] == "approved"
        deployed = http.post("/autotrain/rules/RUL-1001/deploy")
        assert deployed.status_code == 200
        assert deployed.json()["status"] == "deployed"

        status = http.get("/autotrain/status").json()
        assert status["rules_by_status"]["deployed"] == 1
        assert status["deployments_total"] == 1

    # the deploy went to the service's own rules/ (copied from the seed at start), not to a config/ beside it
    lines = read_rule_lines(served.workdir / "rules")
    assert NEW_WEATHER_RULE in lines
    assert OLD_WEATHER_RULE not in lines
    assert (served.workdir / "config" / "fashion_rules.json").read_bytes() == (
        SHIPPED_RULES / "fashion_rules.json"
    ).read_bytes()
    log = served.log()
    assert "rule generator: offline heuristic" in log
    assert "Slack: off" in log

    status_run = served.cli("status")
    assert status_run.returncode == 0, status_run.stderr
    assert json.loads(status_run.stdout)["rules_by_status"]["deployed"] == 1


def readme() -> str:
    return (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def readme_quick_start(text: str) -> str:
    section = text.split("## Quick start", 1)[1]
    return section.split("```bash", 1)[1].split("```", 1)[0]


def readme_test_command(text: str) -> str:
    """The README's second command at the top (what CI runs)."""
    return text.split("Run the tests", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip()


def test_every_curl_in_the_readme_is_silent() -> None:
    """No progress meter in the JSON a reader copies (`curl -s`), wherever the README shows curl."""
    commands = re.findall(r"\bcurl\b[^\n`]*", readme())
    assert len(commands) >= 7
    loud = [command for command in commands if not re.match(r"curl -s\b|curl -sS\b", command)]
    assert loud == []


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def changes(clone: Path) -> list[str]:
    """Every changed, added or deleted file of the clone (tracked or not; ignored files aside)."""
    return git(clone, "status", "--porcelain=v1", "--untracked-files=all").splitlines()


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    """A fresh `git clone` of this repository (its HEAD: commit before relying on this test)."""
    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(target)], check=True)
    yield target


def clone_environment(clone: Path) -> dict[str, str]:
    """No settings at all, the clone's code first (the venv's packages are this checkout's, installed
    editable: the clone is not installed again, which would take minutes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(clone), str(clone / "client")])
    return env


@needs_git
@needs_curl
def test_the_readme_quick_start_in_a_fresh_clone_leaves_it_clean(clone: Path, tmp_path: Path) -> None:
    """Serve from the clone as the README's first command does, run the quick start block with bash (host and
    binary swapped for the served port and this venv's python), then: no tracked file changed and nothing new
    outside .gitignore, the deploy in the clone's rules/, and the README's test command still passes in it."""
    text = (clone / "README.md").read_text(encoding="utf-8")
    script = readme_quick_start(text)
    assert "http://localhost:8000" in script and ".venv/bin/autotrain" in script
    env = clone_environment(clone)
    with serving(clone, env) as (base_url, _process):
        command = f"{sys.executable} -m bot.cli"
        run = subprocess.run(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                script.replace("http://localhost:8000", base_url).replace(".venv/bin/autotrain", command),
            ],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "% Total" not in run.stderr  # curl -s: no progress meter
        assert '"feedback_id":"FB-1001"' in run.stdout
        assert '"rule_id":"RUL-1001"' in run.stdout
        assert '"status":"deployed"' in run.stdout
        assert '"deployments_total":1' in run.stdout
    # serving() logs into the folder it serves from; moved out, it is the one file the test itself adds
    log = (clone / "serve.log").read_text(errors="replace")
    (clone / "serve.log").rename(tmp_path / "serve.log")

    assert problems_in(log) == []
    assert "rules folder" in log and "created on first start" in log
    lines = read_rule_lines(clone / "rules")
    assert NEW_WEATHER_RULE in lines and OLD_WEATHER_RULE not in lines
    assert OLD_WEATHER_RULE in read_rule_lines(clone / "config")  # the seed as shipped
    history = git(clone / "rules", "log", "--format=%s")  # the rules folder's own history
    assert history.splitlines()[0].startswith("Deploy RUL-1001 (FB-1001)")
    assert changes(clone) == []

    # The README's test command, on one file: the whole suite again, inside a test, would take minutes.
    # tests/test_client.py is the one that failed after the old quick start (it reads the shipped config/).
    assert readme_test_command(text).endswith(".venv/bin/pytest")
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_client.py"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert changes(clone) == []
