"""`autotrain serve` as a subprocess on a free port, in a folder of its own: for the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_environment(**extra: str) -> dict[str, str]:
    """This process's environment without Slack / Anthropic / Auto-Train settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    # as in tests/conftest.py's make_settings: replays run only in the tests about them (they write in the
    # background, and a test of something else should not race them)
    env["AUTOTRAIN_EVALUATE"] = "off"
    from tests.services import current_postgres

    if current_postgres[0]:  # a `both_backends` test on PostgreSQL: the server uses that test's database
        env["AUTOTRAIN_DATABASE_URL"] = current_postgres[0]
    env.update(extra)
    return env


@contextlib.contextmanager
def serving(
    workdir: Path,
    env: dict[str, str],
    *,
    log_level: str = "info",
    startup_seconds: float = 30,
    open_files: int | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start `autotrain serve` in `workdir` (its log in workdir/serve.log), wait for /healthz, stop it after.
    `open_files`: the server's open-file limit (soft and hard RLIMIT_NOFILE)."""
    port = free_port()

    def limit_open_files() -> None:
        if open_files is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with open(workdir / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--port", str(port), "--log-level", log_level],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_open_files if open_files is not None else None,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_seconds
            while True:
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "autotrain serve did not start:\n" + (workdir / "serve.log").read_text(errors="replace")
                    )
                time.sleep(0.1)
            yield base_url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
