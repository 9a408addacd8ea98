"""Secrets: never in logs (ours or the libraries'), errors or the audit log; the generated JWT secret file is
0600; RS256 tokens with a public key."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from autotrain.policy import Role
from autotrain.settings import Settings
from bot.api import create_app
from bot.auth import mint_token, resolve_secret, secret_file_for
from bot.redaction import REDACTED, install_redaction
from tests.conftest import REPO_ROOT, SHIPPED_RULES, WEATHER_FEEDBACK, free_port, make_settings
from tests.serve_process import serving

SLACK_TOKEN = "xoxb-111-222-supersecretslacktoken"
SIGNING = "signing-secret-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-api03-verysecretkeyvalue0123456789"
JWT_SECRET_VALUE = "jwt-secret-value-that-must-not-leak-42"
ALL_SECRETS = (SLACK_TOKEN, SIGNING, ANTHROPIC_KEY, JWT_SECRET_VALUE)


def test_redaction_filter_hides_secrets_in_messages_and_tracebacks() -> None:
    settings = Settings(
        _env_file=None,
        slack_bot_token=SLACK_TOKEN,
        slack_signing_secret=SIGNING,
        anthropic_api_key=ANTHROPIC_KEY,
        jwt_secret=JWT_SECRET_VALUE,
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_redaction(settings)
        log = logging.getLogger("slack_sdk.web")
        log.warning("calling with token %s and key %s", SLACK_TOKEN, ANTHROPIC_KEY)
        try:
            raise RuntimeError(f"upstream said: bad key {ANTHROPIC_KEY}")
        except RuntimeError:
            logging.getLogger("anthropic").exception("request failed (jwt %s)", JWT_SECRET_VALUE)
    finally:
        root.removeHandler(handler)
    output = stream.getvalue()
    assert REDACTED in output and "upstream said" in output
    for secret in ALL_SECRETS:
        assert secret not in output


def test_generated_jwt_secret_file_is_0600(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir, jwt_secret=None)
    secret = resolve_secret(settings)
    path = secret_file_for(settings)
    assert path.read_text().strip() == secret and len(secret) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_secret(settings) == secret  # generated once, then kept


def test_served_process_logs_no_secret(tmp_path: Path) -> None:
    """`autotrain serve` with every secret set, Slack on (its API unreachable), Claude on (unreachable):
    start-up, requests, failed generations and Slack errors are logged, and no secret is."""
    workdir = tmp_path / "served"
    workdir.mkdir()
    (workdir / "config").mkdir()
    for name in ("fashion_rules.json", "prompt_v2.txt", "stylist_guidelines.md"):
        (workdir / "config" / name).write_bytes((SHIPPED_RULES / name).read_bytes())
    closed = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        SLACK_BOT_TOKEN=SLACK_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING,
        SLACK_API_URL=f"http://127.0.0.1:{closed}/api/",
        AUTOTRAIN_REVIEW_CHANNEL="CREVIEW",
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{closed}",
        AUTOTRAIN_CLAUDE_MAX_RETRIES="0",
        AUTOTRAIN_JWT_SECRET=JWT_SECRET_VALUE,
        AUTOTRAIN_CARD_RETRY_SECONDS="0.5",
    )
    log_path = workdir / "serve.log"
    with serving(workdir, env, log_level="debug") as (base, _):
        token = mint_token(JWT_SECRET_VALUE, subject="U_ADMIN", role=Role.ADMIN, ttl=timedelta(minutes=5))
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            assert http.post("/autotrain/feedback", json=WEATHER_FEEDBACK).status_code == 201
            failed = http.post("/autotrain/generate/FB-1001")
            assert failed.status_code == 502
            forged = {"Authorization": "Bearer " + token[:-4] + "AAAA"}
            assert http.get("/autotrain/status", headers=forged).status_code == 401
            bodies = failed.text
        time.sleep(1.5)  # let the card retry loop log its Slack failure
    output = log_path.read_text(errors="replace")
    assert "Slack: on" in output and "rule generator: Claude" in output
    assert "could not reach the Claude API" in output or "generation" in output
    for secret in ALL_SECRETS:
        assert secret not in output, f"{secret[:8]}… leaked into the log"
        assert secret not in bodies
    with sqlite3.connect(workdir / "autotrain.db") as db:
        audit = " ".join(str(row) for row in db.execute("SELECT * FROM audit_log"))
    assert "generation_failed" in audit
    for secret in ALL_SECRETS:
        assert secret not in audit


@pytest.fixture
def rsa_keys(tmp_path: Path) -> tuple[str, Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_path = tmp_path / "jwt-public.pem"
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return private_pem, public_path, other_pem


async def test_rs256_tokens_with_a_public_key(tmp_path: Path, rules_dir: Path, rsa_keys) -> None:
    private_pem, public_path, other_pem = rsa_keys
    settings = make_settings(tmp_path, rules_dir, jwt_algorithm="RS256", jwt_public_key=str(public_path))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:

            async def status_with(token: str) -> int:
                response = await http.get("/autotrain/status", headers={"Authorization": f"Bearer {token}"})
                return response.status_code

            good = mint_token(private_pem, subject="ops", role=Role.ADMIN, algorithm="RS256")
            assert await status_with(good) == 200
            assert await status_with(mint_token(other_pem, subject="ops", role=Role.ADMIN, algorithm="RS256")) == 401
            # an HS256 token made with the *public key* as secret (algorithm confusion) is refused
            confused = jwt.encode(
                {"sub": "x", "role": "admin", "iss": "autotrain", "exp": int(time.time()) + 60},
                "not-the-key-but-long-enough-for-hmac-0123",
                algorithm="HS256",
            )
            assert await status_with(confused) == 401


def test_cli_token_with_rs256_needs_the_private_key(tmp_path: Path, rsa_keys) -> None:
    private_pem, public_path, _ = rsa_keys
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), AUTOTRAIN_JWT_ALGORITHM="RS256", AUTOTRAIN_JWT_PUBLIC_KEY=str(public_path))
    missing = subprocess.run(
        [sys.executable, "-m", "bot.cli", "token"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "AUTOTRAIN_JWT_PRIVATE_KEY" in missing.stderr
    env["AUTOTRAIN_JWT_PRIVATE_KEY"] = private_pem
    made = subprocess.run(
        [sys.executable, "-m", "bot.cli", "token", "--sub", "ops"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    claims = jwt.decode(token, public_path.read_text(), algorithms=["RS256"], issuer="autotrain")
    assert claims["sub"] == "ops" and claims["role"] == "admin"
