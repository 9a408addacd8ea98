"""Slack ack latency of each kind of interaction: Auto-Train's app against a bare Bolt app that only acks.

Both apps run in this process behind their ASGI handlers and receive the same signed requests (the way Slack
sends them); their Web API clients talk to the fake Slack Web API server of the tests on loopback. The time
measured is request → HTTP response, i.e. until Slack would see the ack. Work done after the ack (storing
feedback, generating rules, posting cards) keeps running in the background, as in production.

    .venv/bin/python bench/slack_ack.py [--requests 200]

Prints p50 / p99 in milliseconds per kind and the ratio to the bare app.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from autotrain.models import FeedbackIn  # noqa: E402
from autotrain.policy import Actor, Role  # noqa: E402
from autotrain.settings import Settings  # noqa: E402
from bot.api import create_app  # noqa: E402
from tests.fakes.slack_api import FakeSlackApi  # noqa: E402
from tests.slack_support import ADMIN_USER, BOT_TOKEN, REVIEW_CHANNEL, SIGNING_SECRET, SlackSimulator  # noqa: E402

KINDS = ("slash command", "message shortcut", "button click", "view submission", "event")


def bare_bolt_app(api: FakeSlackApi) -> Starlette:
    app = AsyncApp(signing_secret=SIGNING_SECRET, client=AsyncWebClient(token=BOT_TOKEN, base_url=api.base_url))

    async def only_ack(ack: Callable[[], Awaitable[None]]) -> None:
        await ack()

    async def no_ack() -> None:
        pass

    app.command("/autotrain")(only_ack)
    app.shortcut("autotrain_report")(only_ack)
    app.action("rule_approve")(only_ack)
    app.view("feedback_submit")(only_ack)
    app.event("app_home_opened")(no_ack)
    handler = AsyncSlackRequestHandler(app)

    async def endpoint(request: Request):
        return await handler.handle(request)

    return Starlette(routes=[Route("/slack/events", endpoint, methods=["POST"])])


async def measure(simulator: SlackSimulator, requests: int, rule_ids: list[str]) -> dict[str, list[float]]:
    """Send `requests` of each kind; return the ack times (seconds) per kind."""

    async def timed(kind: str, send: Callable[[], Awaitable[httpx.Response]]) -> None:
        simulator.ack_seconds.clear()
        for _ in range(requests):
            response = await send()
            if response.status_code != 200:
                raise SystemExit(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
        results[kind] = list(simulator.ack_seconds)

    results: dict[str, list[float]] = {}
    clicks = iter(rule_ids)
    n = 0

    async def shortcut() -> httpx.Response:
        nonlocal n
        n += 1
        return await simulator.shortcut("Mình gợi ý áo khoác nỉ này...", ts=f"1700000001.{n:06d}")

    await timed("slash command", lambda: simulator.command("status"))
    await timed("message shortcut", shortcut)
    await timed("button click", lambda: simulator.click("rule_approve", next(clicks)))
    await timed(
        "view submission",
        lambda: simulator.submit_feedback(query="tìm áo khoác", feedback_text="Trời nóng quá, AI còn tư vấn áo khoác"),
    )
    await timed("event", lambda: simulator.event({"type": "app_home_opened", "user": ADMIN_USER, "tab": "home"}))
    return results


async def run(requests: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    workdir = Path(tempfile.mkdtemp(prefix="autotrain-slack-bench-"))
    shutil.copytree(REPO_ROOT / "config", workdir / "rules", ignore=shutil.ignore_patterns(".autotrain"))
    api = FakeSlackApi()
    api.start()
    try:
        for name in list(os.environ):
            if name.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_")):
                del os.environ[name]
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{workdir / 'bench.db'}",
            rules_dir=workdir / "rules",
            jwt_secret="bench-secret-for-autotrain-0123456789abcdef",
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=api.base_url,
            review_channel=REVIEW_CHANNEL,
            admins=(ADMIN_USER,),
            # the benchmark measures acks, not the limiter or the per-channel posting pace
            feedback_rate_limit="1000000/hour",
            token_rate_limit="1000000/hour",
            slack_post_rate_limit="1000000/second",
            scheduler_enabled=False,
            git_history=False,
        )
        ours = create_app(settings)
        async with ours.router.lifespan_context(ours):
            service = ours.state.runtime.service
            rule_ids = []
            for i in range(requests):
                feedback = await service.submit(
                    FeedbackIn(query=f"câu hỏi {i}", feedback_text=f"góp ý số {i} về size", feedback_type="bug"),
                    Actor("bench", Role.REPORTER),
                )
                rule_ids.append((await service.generate(feedback.feedback_id, Actor("bench", Role.ADMIN))).rule_id)
            await service.drain()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ours), base_url="http://ours") as http:
                ours_times = await measure(
                    SlackSimulator(http=http, api=api, runtime=ours.state.runtime), requests, rule_ids
                )
            await service.drain()
            await asyncio.sleep(1)  # let the last cards and App Home updates finish before the baseline
            bare = bare_bolt_app(api)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://bare") as http:
                bare_times = await measure(
                    SlackSimulator(http=http, api=api, runtime=ours.state.runtime), requests, rule_ids
                )
    finally:
        api.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return ours_times, bare_times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    ours, bare = asyncio.run(run(args.requests))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.requests} requests per kind")
    print(f"{'kind':<18} {'ours p50':>9} {'ours p99':>9} {'bare p50':>9} {'bare p99':>9} {'p50 x':>6} {'p99 x':>6}")
    for kind in KINDS:
        o50, o99 = percentile(ours[kind], 50) * 1000, percentile(ours[kind], 99) * 1000
        b50, b99 = percentile(bare[kind], 50) * 1000, percentile(bare[kind], 99) * 1000
        print(f"{kind:<18} {o50:8.1f}ms {o99:8.1f}ms {b50:8.1f}ms {b99:8.1f}ms {o50 / b50:6.2f} {o99 / b99:6.2f}")
    worst = max(max(times) for times in ours.values())
    print(
        f"slowest ack of ours: {worst * 1000:.1f} ms (Slack's limit: 3000 ms); median of all: "
        f"{statistics.median([t for times in ours.values() for t in times]) * 1000:.1f} ms"
    )
    print(f"took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
