"""Feedback ingestion: throughput next to /healthz on the same server, and the p99 submission latency on a
million-feedback database with and without a Prometheus scrape of /metrics once a second.

    .venv/bin/python bench/ingest.py                          # builds the 1M database in a temp folder (~1 min)
    .venv/bin/python bench/ingest.py --db /tmp/autotrain-1m.db   # reuse (or build there once) bench/scale.py's
    .venv/bin/python bench/ingest.py --skip-latency           # throughput only

1. Throughput, two server runs on an empty database (a temp folder with a copy of config/): auto-generate off,
   then on (each feedback's rule generated in the background by the offline generator). In each, as measured
   with wrk (one thread, 16 connections, 8 s each; --duration, --connections):

       wrk -t1 -c16 -d8s --latency --timeout 30s http://127.0.0.1:PORT/healthz
       wrk -t1 -c16 -d8s --latency --timeout 30s -s post_feedback.lua http://127.0.0.1:PORT/autotrain/feedback

   post_feedback.lua (written to a temp file) sets the method (POST), the JSON body (200 bodies from the
   templates of bench/scale.py: bug / suggestion / praise ≈ 60 / 25 / 15, 200 user ids, taken in turn), and the
   Authorization (a reporter token) and Content-Type headers. Prints req/s of both and the ratio
   feedback / healthz. Targets: ≥ 0.5× with auto-generate off, ≥ 0.3× with it on.
2. Latency, one server run on a copy of the 1M-feedback database of bench/scale.py (built with its builder, or
   --db), auto-generate off (the background generator's own CPU would blur what the scrape costs; the intake's
   complaint matching runs either way), 4 connections and 15 s per run (--latency-connections,
   --latency-duration; p99 of a few dozen answers when each takes a quarter of a second):

       wrk -t1 -c4 -d15s --latency --timeout 30s -s post_feedback.lua http://127.0.0.1:PORT/autotrain/feedback

   once alone, then again while a thread of this process scrapes GET /metrics (admin token) once a second.
   Prints wrk's 99 % latency of both and the ratio. Target: p99 with the scrape ≤ 2× p99 without.

Before the measured runs each server gets a 1 s wrk warm-up and one submission alone, so what it loads or
counts on first use stays out of the figures (the latency run prints that first submission's time). One
uvicorn worker; the scheduler off; rate limits raised so that nothing is refused: any non-2xx answer (wrk's
"Non-2xx or 3xx responses") or socket error fails the run loudly, and so does a throughput run whose
database then holds fewer feedbacks than were answered. Without wrk on the PATH the load comes from httpx in
this process (it says so): it shares the 2 cores with the server and saturates near 8 concurrent requests,
so its ratios are not comparable with wrk's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from autotrain.policy import Role
from bench.scale import FEEDBACK_TEMPLATES, QUERY_TEMPLATES, Built, copy_database, database, fill
from bot.auth import mint_token
from tests.serve_process import REPO_ROOT, serving, subprocess_environment

WRK = shutil.which("wrk")
FEEDBACK = "/autotrain/feedback"
BODIES = 200


@dataclass
class Load:
    rps: float
    p99_ms: float | None
    requests: int
    command: str
    stored: int = 0  # feedbacks in the database after the run (throughput runs)
    first_ms: float | None = None  # the first submission to the server, alone (latency runs)


def feedback_bodies(count: int = BODIES, seed: int = 15) -> list[str]:
    rng = random.Random(seed)
    bodies = []
    kinds = rng.choices(("bug", "suggestion", "praise"), weights=(60, 25, 15), k=count)
    for n, kind in enumerate(kinds):
        _, template = rng.choice(FEEDBACK_TEMPLATES[kind])
        body = {
            "query": fill(rng.choice(QUERY_TEMPLATES), rng),
            "ai_response": "Mình gợi ý mẫu này nhé, còn đủ size.",
            "feedback_text": fill(template, rng),
            "feedback_type": kind,
            "user_id": f"bench-user-{n:03d}",
        }
        bodies.append(json.dumps(body, ensure_ascii=False))
    return bodies


def lua_script(path: Path, token: str, bodies: list[str]) -> Path:
    """A wrk script: POST, the JSON bodies in turn, Authorization and Content-Type."""
    items = ",\n".join(f"  [==[{body}]==]" for body in bodies)
    path.write_text(
        f"""local bodies = {{
{items}
}}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
request = function()
  i = i + 1
  return wrk.format("POST", nil, nil, bodies[(i % #bodies) + 1])
end
""",
        encoding="utf-8",
    )
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(url: str, *, connections: int, seconds: int, script: Path | None = None) -> Load:
    command = [WRK or "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "30s"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    shown = " ".join(Path(part).name if part in (str(script), WRK) else part for part in command)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors = re.search(r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if non_2xx or (errors and any(int(n) for n in errors.groups())):
        raise SystemExit(f"FAILED: {shown}: not every answer was 2xx:\n{out}")
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    return Load(rps, _ms(p99.group(1)) if p99 else None, requests, shown)


async def _drive(
    url: str, *, method: str, connections: int, seconds: float, headers: dict[str, str], bodies: list[str]
) -> Load:
    """The fallback without wrk: `connections` workers in this process for `seconds`."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            nonlocal failures
            i = n
            while time.perf_counter() < deadline:
                i += connections
                started = time.perf_counter()
                if method == "POST":
                    body = bodies[i % len(bodies)].encode()
                    response = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                else:
                    response = await client.get(url)
                latencies.append((time.perf_counter() - started) * 1000)
                failures += response.status_code >= 300

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(connections)))
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"FAILED: {failures} of {len(latencies)} {method} {url} answers were not 2xx")
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else None
    return Load(len(latencies) / elapsed, p99, len(latencies), f"httpx {method} {url} x{connections} {seconds:.0f}s")


@dataclass
class Driver:
    """Load on one server: wrk when it is on the PATH, else httpx in this process."""

    base_url: str
    connections: int
    token: str  # the reporter token the Lua script carries too
    bodies: list[str]
    script: Path

    def healthz(self, seconds: int) -> Load:
        return self._run("/healthz", seconds, post=False)

    def feedback(self, seconds: int) -> Load:
        return self._run(FEEDBACK, seconds, post=True)

    def _run(self, path: str, seconds: int, *, post: bool) -> Load:
        url = self.base_url + path
        if WRK is not None:
            return run_wrk(url, connections=self.connections, seconds=seconds, script=self.script if post else None)
        headers, bodies = {"Authorization": f"Bearer {self.token}"}, self.bodies
        method = "POST" if post else "GET"
        return asyncio.run(
            _drive(url, method=method, connections=self.connections, seconds=seconds, headers=headers, bodies=bodies)
        )


def server_env(workdir: Path, secret: str, *, auto_generate: bool, database_url: str | None = None) -> dict[str, str]:
    extra = {"AUTOTRAIN_DATABASE_URL": database_url} if database_url else {}
    return subprocess_environment(
        AUTOTRAIN_RULES_DIR=str(workdir / "config"),
        AUTOTRAIN_AUTO_GENERATE="true" if auto_generate else "false",
        AUTOTRAIN_SCHEDULER="false",
        AUTOTRAIN_JWT_SECRET=secret,
        # ingestion is limited per user and per token in production; the benchmark measures the pipeline
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="1000000/second",
        AUTOTRAIN_TOKEN_RATE_LIMIT="1000000/second",
        **extra,
    )


def throughput(folder: Path, *, auto_generate: bool, connections: int, seconds: int) -> tuple[Load, Load]:
    workdir = folder / f"throughput-{'on' if auto_generate else 'off'}"
    workdir.mkdir()
    shutil.copytree(REPO_ROOT / "config", workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    secret = secrets.token_urlsafe(48)
    token = mint_token(secret, subject="bench-chatbot", role=Role.REPORTER)
    bodies = feedback_bodies()
    script = lua_script(workdir / "post_feedback.lua", token, bodies)
    with serving(workdir, server_env(workdir, secret, auto_generate=auto_generate), log_level="warning") as (url, _):
        driver = Driver(url, connections, token, bodies, script)
        driver.healthz(1)  # warm up
        first_submission(url, token, first_complaint(bodies))
        healthz = driver.healthz(seconds)
        feedback = driver.feedback(seconds)
        feedback.stored = stored_feedback(url, mint_token(secret, subject="bench-admin", role=Role.ADMIN))
    # every answered submission is stored (a request cut off when the run ended may be stored too)
    if feedback.stored < feedback.requests:
        raise SystemExit(f"FAILED: {feedback.requests:,} submissions answered but only {feedback.stored:,} stored")
    return healthz, feedback


def first_complaint(bodies: list[str]) -> str:
    """A bug report: praise is settled at once, only a complaint goes through the complaint matching."""
    return next(body for body in bodies if json.loads(body)["feedback_type"] == "bug")


def first_submission(url: str, token: str, body: str) -> float:
    """One submission before the measured runs, alone: what the server loads or counts on first use is not
    in the figures (it is printed). Its time in ms."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    response = httpx.post(url + FEEDBACK, content=body.encode(), headers=headers, timeout=300)
    if response.status_code != 201:
        raise SystemExit(f"FAILED: the first submission answered {response.status_code}: {response.text[:500]}")
    return (time.perf_counter() - started) * 1000


def stored_feedback(url: str, admin: str) -> int:
    status = httpx.get(url + "/autotrain/status", headers={"Authorization": f"Bearer {admin}"}, timeout=120)
    status.raise_for_status()
    return sum(status.json()["feedback_by_status"].values())


class Scraper(threading.Thread):
    """GET /metrics once a second until stopped; keeps each scrape's time."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.stop = threading.Event()
        self.times: list[float] = []
        self.failures = 0

    def run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=60) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                response = client.get(self.url + "/metrics")
                elapsed = time.perf_counter() - started
                self.times.append(elapsed * 1000)
                self.failures += response.status_code != 200
                self.stop.wait(max(0.0, 1.0 - elapsed))


def latency(built: Built, folder: Path, *, connections: int, seconds: int) -> tuple[Load, Load, Scraper]:
    workdir = folder / "latency"
    workdir.mkdir()
    shutil.copytree(REPO_ROOT / "config", workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    db = copy_database(built, workdir)
    secret = secrets.token_urlsafe(48)
    token = mint_token(secret, subject="bench-chatbot", role=Role.REPORTER)
    admin = mint_token(secret, subject="bench-prometheus", role=Role.ADMIN)
    bodies = feedback_bodies()
    script = lua_script(workdir / "post_feedback.lua", token, bodies)
    env = server_env(workdir, secret, auto_generate=False, database_url=f"sqlite:///{db}")
    with serving(workdir, env, log_level="warning", startup_seconds=180) as (url, _):
        httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=120)  # warm up
        first = first_submission(url, token, first_complaint(bodies))
        driver = Driver(url, connections, token, bodies, script)
        driver.feedback(2)  # warm up
        alone = driver.feedback(seconds)
        scraper = Scraper(url, admin)
        scraper.start()
        try:
            scraped = driver.feedback(seconds)
        finally:
            scraper.stop.set()
            scraper.join(timeout=120)
    if scraper.failures:
        raise SystemExit(f"FAILED: {scraper.failures} of {len(scraper.times)} scrapes of /metrics were not 200")
    alone.first_ms = first
    return alone, scraped, scraper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--connections", type=int, default=16, help="throughput runs (default 16)")
    parser.add_argument("--latency-connections", type=int, default=4, help="latency runs (default 4)")
    parser.add_argument("--latency-duration", type=int, default=15, help="seconds per latency run (default 15)")
    parser.add_argument("--db", help="bench/scale.py's large database: reused when it exists, else built there")
    parser.add_argument("--feedbacks", type=int, default=1_000_000, help="size of a database built here")
    parser.add_argument("--rules", type=int, default=200_000)
    parser.add_argument("--skip-latency", action="store_true", help="throughput only (no 1M database)")
    args = parser.parse_args()

    if WRK is None:
        print("wrk is not on the PATH: falling back to the httpx driver in this process (it shares the cores with")
        print("the server and saturates near 8 concurrent requests: its figures are not comparable with wrk's)")
    folder = Path(tempfile.mkdtemp(prefix="autotrain-ingest-"))
    try:
        runs = {}
        for auto_generate in (False, True):
            runs[auto_generate] = throughput(
                folder, auto_generate=auto_generate, connections=args.connections, seconds=args.duration
            )
        lat = None
        if not args.skip_latency:
            built = database(args.db, args.feedbacks, args.rules, folder)
            lat = latency(built, folder, connections=args.latency_connections, seconds=args.latency_duration)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    driver = "wrk" if WRK else "httpx (fallback)"
    print()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, one uvicorn worker, load from {driver}")
    print(f"throughput: {args.connections} connections, {args.duration} s per run, empty database at start")
    print(f"{'run':<34} | {'healthz req/s':>13} | {'feedback req/s':>14} | {'ratio':>6} | {'target':>7} |")
    for auto_generate, target in ((False, 0.5), (True, 0.3)):
        healthz, feedback = runs[auto_generate]
        ratio = feedback.rps / healthz.rps
        name = f"auto-generate {'on' if auto_generate else 'off'}"
        verdict = "ok" if ratio >= target else "UNDER"
        print(
            f"{name:<34} | {healthz.rps:13.0f} | {feedback.rps:14.0f} | {ratio:6.2f} | ≥ {target:<5} | {verdict}"
            f" ({feedback.requests:,} answered, {feedback.stored:,} stored)"
        )
    if lat is not None:
        alone, scraped, scraper = lat
        print()
        print(
            f"latency: POST /autotrain/feedback on a copy of {built.path.name} ({built.shape.feedbacks:,} feedbacks),"
            f" {args.latency_connections} connections, {args.latency_duration} s per run, auto-generate off"
        )
        print(f"(the first submission after start, alone, before the runs: {alone.first_ms:,.0f} ms)")
        print(f"{'run':<34} | {'req/s':>7} | {'p99 ms':>8} | {'ratio':>6} | {'target':>7} |")
        blank = ""
        answered = f"({alone.requests:,} answered)"
        print(f"{'alone':<34} | {alone.rps:7.1f} | {_p99(alone):>8} | {blank:>6} | {blank:>7} | {answered}")
        ratio = scraped.p99_ms / alone.p99_ms if scraped.p99_ms and alone.p99_ms else None
        verdict = "" if ratio is None else ("ok" if ratio <= 2 else "OVER")
        scrapes = ""
        if scraper.times:
            scrapes = f"{len(scraper.times)} scrapes, median {statistics.median(scraper.times):.0f} ms"
        print(
            f"{'with GET /metrics every second':<34} | {scraped.rps:7.1f} | {_p99(scraped):>8} | "
            f"{'n/a' if ratio is None else f'{ratio:6.2f}'} | {'≤ 2':>7} | {verdict} ({scraped.requests:,} answered;"
            f" {scrapes})"
        )
    print()
    print("commands:")
    for healthz, feedback in runs.values():
        print(f"  {healthz.command}")
        print(f"  {feedback.command}")
        break
    if lat is not None:
        print(f"  {lat[0].command}")
    return 0


def _p99(run: Load) -> str:
    return f"{run.p99_ms:8.1f}" if run.p99_ms is not None else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
