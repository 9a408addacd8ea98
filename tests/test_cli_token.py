"""`autotrain token` finds the secret `autotrain serve` uses, exactly as `serve` finds it (AUTOTRAIN_JWT_SECRET, or
the file beside the database of AUTOTRAIN_DATABASE_URL, relative to the working folder, also from ./.env), and
never makes one: run where no server has run, it refuses, says what it looked for, and leaves the folder empty.
It says the token's lifetime in words."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import SHIPPED_RULES
from tests.serve_process import serving, subprocess_environment

SECRET_FILE = "autotrain.db.jwt-secret"


@dataclass
class Server:
    base_url: str
    workdir: Path
    env: dict[str, str]

    def accepts(self, token: str) -> bool:
        answer = httpx.get(
            f"{self.base_url}/autotrain/status", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert answer.status_code in (200, 401), answer.text
        return answer.status_code == 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("served")
    shutil.copytree(SHIPPED_RULES, workdir / "rules", ignore=shutil.ignore_patterns(".autotrain"))
    env = subprocess_environment(AUTOTRAIN_RULES_DIR=str(workdir / "rules"), AUTOTRAIN_SCHEDULER="false")
    with serving(workdir, env) as (base_url, _):
        yield Server(base_url, workdir, env)


def token(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "token", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def minted(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_serve_made_the_secret_file(server: Server) -> None:
    path = server.workdir / SECRET_FILE
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_from_the_servers_folder_the_server_accepts_it(server: Server) -> None:
    secret_before = (server.workdir / SECRET_FILE).read_bytes()
    admin = minted(token(server.workdir, server.env, "--sub", "ops"))
    assert server.accepts(admin)
    assert server.accepts(minted(token(server.workdir, server.env, "--role", "reporter")))
    assert not server.accepts(admin[:-2] + ("AA" if not admin.endswith("AA") else "BB"))  # the check can fail
    assert (server.workdir / SECRET_FILE).read_bytes() == secret_before


def test_from_another_folder_it_refuses_and_creates_nothing(server: Server, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret_before = (server.workdir / SECRET_FILE).read_bytes()
    done = token(elsewhere, server.env)
    assert done.returncode != 0
    assert done.stdout == ""  # no token printed
    assert "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    for part in (
        str(elsewhere / SECRET_FILE),  # what it looked for
        "sqlite:///autotrain.db",  # where that path came from
        "AUTOTRAIN_DATABASE_URL",
        "AUTOTRAIN_JWT_SECRET",
        "where `autotrain serve` runs",
        "has not run in this folder",
    ):
        assert part in message, message
    assert list(elsewhere.iterdir()) == []
    assert (server.workdir / SECRET_FILE).read_bytes() == secret_before


def test_from_another_folder_with_the_servers_database_url(server: Server, tmp_path: Path) -> None:
    """The database's path is read as `serve` reads it: from the environment or ./.env, relative to the folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    absolute = f"sqlite:///{server.workdir / 'autotrain.db'}"
    assert server.accepts(minted(token(elsewhere, server.env | {"AUTOTRAIN_DATABASE_URL": absolute})))

    relative = Path(os.path.relpath(server.workdir, elsewhere)) / "autotrain.db"
    assert server.accepts(minted(token(elsewhere, server.env | {"AUTOTRAIN_DATABASE_URL": f"sqlite:///{relative}"})))

    (elsewhere / ".env").write_text(f"AUTOTRAIN_DATABASE_URL={absolute}\n", encoding="utf-8")
    assert server.accepts(minted(token(elsewhere, server.env)))
    assert sorted(p.name for p in elsewhere.iterdir()) == [".env"]


def test_a_database_without_its_secret_file_points_at_the_secret_setting(tmp_path: Path) -> None:
    (tmp_path / "autotrain.db").write_bytes(b"")
    done = token(tmp_path, subprocess_environment())
    assert done.returncode != 0 and done.stdout == ""
    assert "probably has AUTOTRAIN_JWT_SECRET set" in done.stderr
    assert not (tmp_path / SECRET_FILE).exists()


def test_with_the_secret_setting_it_needs_no_file(tmp_path: Path) -> None:
    secret = "a-secret-the-server-has-too-0123456789abcdef"
    made = minted(token(tmp_path, subprocess_environment(AUTOTRAIN_JWT_SECRET=secret)))
    claims = jwt.decode(made, secret, algorithms=["HS256"], issuer="autotrain")
    assert claims["sub"] == "cli-admin" and claims["role"] == "admin"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("ttl", "said", "seconds"),
    [
        (None, "valid 30 days", 30 * 86400),
        ("12h", "valid 12 hours", 12 * 3600),
        ("1d", "valid 1 day", 86400),
        ("120m", "valid 2 hours", 7200),
        ("90s", "valid 90 seconds", 90),
    ],
)
def test_the_lifetime_in_words(server: Server, ttl: str | None, said: str, seconds: int) -> None:
    done = token(server.workdir, server.env, "--role", "reporter", *(["--ttl", ttl] if ttl else []))
    assert done.stderr.strip() == f"# bearer token for cli-reporter (reporter), {said}"
    claims = jwt.decode(minted(done), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == seconds


def test_a_zero_lifetime_is_a_usage_error(server: Server) -> None:
    done = token(server.workdir, server.env, "--ttl", "0s")
    assert done.returncode == 2 and done.stdout == ""
    assert "above 0" in done.stderr


@pytest.mark.parametrize("command", ["status", "run-all"])
def test_status_and_run_all_refuse_where_no_server_ran_instead_of_making_a_database_and_a_secret(
    tmp_path: Path, command: str
) -> None:
    """They open the server's database themselves: run in another folder, they must not create a second one
    (and with it a second JWT secret, which `autotrain token` there would then use)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", command],
        cwd=elsewhere,
        env=subprocess_environment(AUTOTRAIN_SCHEDULER="false"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"no Auto-Train database at {(elsewhere / 'autotrain.db').resolve()}" in done.stderr
    assert "where `autotrain serve` runs" in done.stderr
    assert list(elsewhere.iterdir()) == []
