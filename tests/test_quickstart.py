"""The README's quick start, verbatim in spirit, against `autotrain serve` started as a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import httpx
import pytest

from tests.conftest import (
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    REPO_ROOT,
    WEATHER_FEEDBACK,
    ServedApp,
    read_rule_lines,
)


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

    lines = read_rule_lines(served.workdir / "config")
    assert NEW_WEATHER_RULE in lines
    assert OLD_WEATHER_RULE not in lines
    log = served.log()
    assert "rule generator: offline heuristic" in log
    assert "Slack: off" in log

    status_run = served.cli("status")
    assert status_run.returncode == 0, status_run.stderr
    assert json.loads(status_run.stdout)["rules_by_status"]["deployed"] == 1


def readme_quick_start() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    return section.split("```bash", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's quick start uses curl")
def test_readme_quick_start_runs_verbatim(served: ServedApp) -> None:
    """The README's quick start block, run by bash against the served process (only host and binary swapped)."""
    script = readme_quick_start()
    assert "http://localhost:8000" in script and ".venv/bin/autotrain" in script
    script = script.replace("http://localhost:8000", served.base_url).replace(
        ".venv/bin/autotrain", f"{sys.executable} -m bot.cli"
    )
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=served.workdir,
        env=served.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert '"feedback_id":"FB-1001"' in run.stdout
    assert '"rule_id":"RUL-1001"' in run.stdout
    assert '"status":"deployed"' in run.stdout
    assert '"deployments_total":1' in run.stdout
    lines = read_rule_lines(served.workdir / "config")
    assert NEW_WEATHER_RULE in lines and OLD_WEATHER_RULE not in lines
