"""run-all throughput with Claude: 500 pending feedbacks against the tests' fake Messages API, whose every
answer takes a fixed 200 ms. Reports the wall time against the ideal, 500 × 0.2 s / concurrency.

    .venv/bin/python bench/claude_run_all.py [--feedbacks 500] [--latency 0.2] [--concurrency 8]

The real SDK talks HTTP to the fake, which runs in a process of its own, on loopback; the rules, the
generations log and the audit go to a real SQLite file; the rule files are read from a temp copy of
config/. Not a test: the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from autotrain.models import FeedbackIn  # noqa: E402
from autotrain.policy import Actor, Role  # noqa: E402
from autotrain.settings import Settings  # noqa: E402
from bot.runtime import open_runtime  # noqa: E402

FAKE_SERVER = """
import json, sys
from tests.fakes.anthropic_api import FakeMessagesApi, evaluation_responders
api = FakeMessagesApi()
api.latency = float(sys.argv[1])
if sys.argv[2:] == ["--evaluation"]:  # the simulated chatbot, judge and reviser (bench/evaluation.py)
    api.respond(*evaluation_responders())
api.start()
print(api.base_url, flush=True)
sys.stdin.read()  # serve until the benchmark closes our stdin
print(json.dumps({"requests": len(api.requests), "max_in_flight": api.max_in_flight,
                  "per_feedback": api.max_in_flight_per_conversation, "violations": api.violations}), flush=True)
"""


class FakeServerProcess:
    """The fake Messages API in its own process, so that its threads do not share our interpreter's lock."""

    def __init__(self, latency: float, *, evaluation: bool = False) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", FAKE_SERVER, str(latency), *(["--evaluation"] if evaluation else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()

    def finish(self) -> dict:
        out, _ = self.process.communicate("", timeout=30)
        return json.loads(out.strip().splitlines()[-1])


async def run(feedbacks: int, latency: float, concurrency: int) -> tuple[float, dict, dict]:
    workdir = Path(tempfile.mkdtemp(prefix="autotrain-claude-bench-"))
    shutil.copytree(REPO_ROOT / "config", workdir / "rules", ignore=shutil.ignore_patterns(".autotrain"))
    api = FakeServerProcess(latency)
    for name in list(os.environ):
        if name.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_")):
            del os.environ[name]
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{workdir / 'bench.db'}",
        rules_dir=workdir / "rules",
        jwt_secret="bench-secret-for-autotrain-0123456789abcdef",
        anthropic_api_key="sk-ant-bench",
        anthropic_base_url=api.base_url,
        auto_generate=False,
        run_all_concurrency=concurrency,
        cluster_threshold=None,  # the 500 feedbacks are alike on purpose: measure 500 generations, not 1
        feedback_rate_limit="1000000/hour",
        token_rate_limit="1000000/hour",
        claude_rate_limit="1000000/minute",
        git_history=False,
    )
    runtime = await open_runtime(settings)
    try:
        reporter = Actor("bench", Role.REPORTER)
        for i in range(feedbacks):
            await runtime.service.submit(
                FeedbackIn(
                    query=f"gợi ý trang phục số {i}",
                    ai_response="Bạn thử mẫu này nhé",
                    feedback_text=f"Phản hồi số {i}: gợi ý chưa hợp",
                    feedback_type="bug",
                ),
                reporter,
            )
        started = time.perf_counter()
        summary = await runtime.service.run_all(Actor("bench", Role.ADMIN))
        elapsed = time.perf_counter() - started
        totals = (await runtime.service.status()).generation
    finally:
        await runtime.close()
        stats = api.finish()
        shutil.rmtree(workdir, ignore_errors=True)
    if len(summary.rules_created) != feedbacks:
        raise SystemExit(f"only {len(summary.rules_created)} of {feedbacks} rules were created: {summary.errors[:3]}")
    return elapsed, totals.model_dump(), stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feedbacks", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    elapsed, totals, api = asyncio.run(run(args.feedbacks, args.latency, args.concurrency))
    if api["violations"]:
        raise SystemExit(f"the fake refused requests: {api['violations'][:3]}")
    ideal = args.feedbacks * args.latency / args.concurrency
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(
        f"{args.feedbacks} pending feedbacks, {args.latency * 1000:.0f} ms per Claude answer, "
        f"concurrency {args.concurrency}"
    )
    print(f"run-all wall time   {elapsed:7.2f} s")
    print(f"ideal               {ideal:7.2f} s  (feedbacks × latency / concurrency)")
    print(f"ratio wall / ideal  {elapsed / ideal:7.2f}")
    print(
        f"requests to the API {api['requests']}, at most {api['max_in_flight']} at once, "
        f"{api['per_feedback']} per feedback"
    )
    print(
        f"generations: {totals['succeeded']} succeeded, {totals['failed']} failed; "
        f"tokens in/out {totals['input_tokens']}/{totals['output_tokens']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
