"""Feedback ingestion throughput: POST /autotrain/feedback next to /healthz on the same server, as a ratio.

Starts `autotrain serve` (default settings: offline generator, auto-generate on) in a temporary folder with a
copy of config/, then drives it from this process with httpx over loopback.

    .venv/bin/python bench/ingest.py [--requests 2000] [--concurrency 8]

Prints requests per second for both endpoints and feedback/healthz. Not a test: the figure depends on the
machine; the ratio is what to compare between runs. Extra server settings for a variant run go in BENCH_ENV,
e.g. BENCH_ENV="AUTOTRAIN_AUTO_GENERATE=false" measures ingestion without the background generation.
(The load comes from httpx in this process and shares the 2 cores with the server; past 8 concurrent
requests httpx itself becomes the bottleneck.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.serve_process import REPO_ROOT, serving, subprocess_environment


async def drive(client: httpx.AsyncClient, method: str, path: str, total: int, concurrency: int, body=None) -> float:
    """Send `total` requests, `concurrency` at a time; return requests per second. Every answer must succeed."""
    remaining = total
    failures = 0

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            response = await client.request(method, path, json=body)
            if response.status_code >= 300:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{failures} of {total} requests to {path} failed")
    return total / elapsed


async def measure(base_url: str, token: str, total: int, concurrency: int) -> tuple[float, float]:
    feedback = {
        "query": "tìm áo khoác cho trời 35 độ",
        "ai_response": "Mình gợi ý áo khoác nỉ này...",
        "feedback_text": "Trời nóng quá, AI còn tư vấn áo khoác",
        "feedback_type": "bug",
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as client:
        await drive(client, "GET", "/healthz", 200, concurrency)  # warm up
        healthz = await drive(client, "GET", "/healthz", total, concurrency)
        ingest = await drive(client, "POST", "/autotrain/feedback", total, concurrency, feedback)
    return healthz, ingest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="autotrain-bench-"))
    shutil.copytree(REPO_ROOT / "config", workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    env = subprocess_environment(
        # Ingestion is limited per user in production; the benchmark measures the pipeline, not the limiter
        # (a short window keeps the moving window small).
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="1000000/second",
        AUTOTRAIN_TOKEN_RATE_LIMIT="1000000/second",
        **dict(kv.split("=", 1) for kv in os.environ.get("BENCH_ENV", "").split() if "=" in kv),
    )
    try:
        with serving(workdir, env, log_level="warning") as (base_url, _):
            token = (
                subprocess.run(
                    [sys.executable, "-m", "bot.cli", "token", "--role", "reporter", "--sub", "bench"],
                    cwd=workdir,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            healthz, ingest = asyncio.run(measure(base_url, token, args.requests, args.concurrency))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"requests: {args.requests} per endpoint, concurrency {args.concurrency}, one uvicorn worker")
    print(f"GET  /healthz             {healthz:8.0f} req/s")
    generating = env.get("AUTOTRAIN_AUTO_GENERATE", "true").lower() not in ("false", "0", "no", "off")
    note = "rule generated in the background" if generating else "auto-generate off"
    print(f"POST /autotrain/feedback  {ingest:8.0f} req/s  (stored in SQLite, {note})")
    print(f"ratio feedback/healthz    {ingest / healthz:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
