"""Settings parse as the README documents them (issue 11): an optional setting given empty (`VAR=`) is unset,
and AUTOTRAIN_JWT_SECRET is either unset / empty (a generated secret) or at least 32 bytes, refused at start
with a clear message otherwise."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from autotrain.settings import Settings
from tests.conftest import SHIPPED_RULES
from tests.serve_process import serving, subprocess_environment

# every optional setting the README's table documents as "unset" (or "empty: off"), by its variable
OPTIONAL = {
    "SLACK_BOT_TOKEN": "slack_bot_token",
    "SLACK_SIGNING_SECRET": "slack_signing_secret",
    "SLACK_APP_TOKEN": "slack_app_token",
    "SLACK_API_URL": "slack_api_url",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "ANTHROPIC_BASE_URL": "anthropic_base_url",
    "AUTOTRAIN_RELOAD_URL": "reload_url",
    "AUTOTRAIN_ADMIN_USERGROUP": "admin_usergroup",
    "AUTOTRAIN_REVIEW_CHANNEL": "review_channel",
    "AUTOTRAIN_ALERT_CHANNEL": "alert_channel",
    "AUTOTRAIN_DIGEST_CHANNEL": "digest_channel",
    "AUTOTRAIN_JWT_SECRET": "jwt_secret",
    "AUTOTRAIN_JWT_PUBLIC_KEY": "jwt_public_key",
    "AUTOTRAIN_JWT_PRIVATE_KEY": "jwt_private_key",
    "AUTOTRAIN_WEBHOOK_SECRET": "webhook_secret",
    "AUTOTRAIN_AUTO_APPROVE_CONFIDENCE": "auto_approve_confidence",
    "AUTOTRAIN_CLUSTER_THRESHOLD": "cluster_threshold",
}
SHORT_SECRET = "only-31-bytes-long-secret-value"


@pytest.mark.parametrize("variable", sorted(OPTIONAL))
@pytest.mark.parametrize("empty", ["", "  "], ids=["empty", "blank"])
def test_an_empty_optional_setting_is_unset(monkeypatch: pytest.MonkeyPatch, variable: str, empty: str) -> None:
    monkeypatch.setenv(variable, empty)
    settings = Settings(_env_file=None)
    assert getattr(settings, OPTIONAL[variable]) is None


def test_empty_settings_in_a_dotenv_file_turn_features_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lines = [f"{variable}=" for variable in OPTIONAL]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = Settings()
    assert settings.cluster_threshold is None  # run-all grouping off, as the README says
    assert settings.auto_approve_confidence is None
    assert not settings.slack_enabled and not settings.claude_enabled
    assert settings.jwt_secret is None and settings.webhook_secret is None and settings.reload_url is None


def test_a_short_jwt_secret_is_refused_with_its_name() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, jwt_secret=SHORT_SECRET)
    message = str(refused.value)
    assert "AUTOTRAIN_JWT_SECRET" in message and "32 bytes" in message
    assert SHORT_SECRET not in message  # a refused secret is still a secret
    assert Settings(_env_file=None, jwt_secret=SHORT_SECRET + "x").jwt_secret is not None


def _workdir(tmp_path: Path) -> Path:
    workdir = tmp_path / "served"
    shutil.copytree(SHIPPED_RULES, workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    return workdir


def _cli(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_empty_jwt_secret_uses_the_generated_one(tmp_path: Path) -> None:
    """`autotrain serve` generates the secret file, `autotrain token` mints with it, and the server accepts it."""
    workdir = _workdir(tmp_path)
    env = subprocess_environment(AUTOTRAIN_JWT_SECRET="")
    with serving(workdir, env) as (base_url, _):
        assert (workdir / "autotrain.db.jwt-secret").exists()
        minted = _cli(workdir, env, "token", "--role", "reporter")
        assert minted.returncode == 0, minted.stderr
        assert "Traceback" not in minted.stderr
        token = minted.stdout.strip()
        answer = httpx.get(f"{base_url}/autotrain/feedback", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["token"]], ids=["serve", "token"])
def test_a_short_jwt_secret_stops_the_command(tmp_path: Path, command: list[str]) -> None:
    workdir = _workdir(tmp_path)
    done = _cli(workdir, subprocess_environment(AUTOTRAIN_JWT_SECRET=SHORT_SECRET), *command)
    assert done.returncode != 0
    assert "AUTOTRAIN_JWT_SECRET" in done.stderr and "32 bytes" in done.stderr
    assert "Traceback" not in done.stderr
    assert SHORT_SECRET not in done.stderr + done.stdout
    assert done.stdout == ""  # no token printed
