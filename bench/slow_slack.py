"""Admin actions over REST while Slack is slow: approve, deploy and rollback answer as fast as with a fast Slack.

One `autotrain serve` process (REST API and Slack in HTTP mode) with its Web API client pointed at the fake
Slack Web API server of the tests on loopback, measured twice in the same run: Slack answering at once
(the baseline), then Slack answering every chat.update and chat.postMessage after --delay seconds. Each
round submits a feedback, waits for its card, then times approve → deploy → rollback over HTTP.

    .venv/bin/python bench/slow_slack.py [--rounds 20] [--delay 2]

Prints p50 / max per action in milliseconds for both, and the ratio slow / fast.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from autotrain.policy import Role  # noqa: E402
from bot.auth import mint_token  # noqa: E402
from tests.fakes.slack_api import FakeSlackApi  # noqa: E402
from tests.serve_process import serving, subprocess_environment  # noqa: E402

SECRET = "bench-secret-for-autotrain-0123456789abcdef"
ACTIONS = ("approve", "deploy", "rollback")


def feedback(n: int) -> dict[str, str]:
    return {"query": f"câu hỏi {n}", "feedback_text": f"góp ý số {n}: tư vấn sai size", "feedback_type": "bug"}


def measure(http: httpx.Client, api: FakeSlackApi, rounds: int, offset: int) -> dict[str, list[float]]:
    admin = {"Authorization": f"Bearer {mint_token(SECRET, subject='UADMIN', role=Role.ADMIN)}"}
    reporter = {"Authorization": f"Bearer {mint_token(SECRET, subject='bench', role=Role.REPORTER)}"}
    timings: dict[str, list[float]] = {action: [] for action in ACTIONS}
    for n in range(rounds):
        created = http.post("/autotrain/feedback", json=feedback(offset + n), headers=reporter).json()
        rule = http.post(f"/autotrain/generate/{created['feedback_id']}", headers=admin).json()
        for action in ACTIONS:
            started = time.perf_counter()
            response = http.post(f"/autotrain/rules/{rule['rule_id']}/{action}", headers=admin)
            timings[action].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--delay", type=float, default=2.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="autotrain-bench-"))
    api = FakeSlackApi()
    api.start()
    try:
        shutil.copytree(REPO_ROOT / "config", workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
        env = subprocess_environment(
            AUTOTRAIN_JWT_SECRET=SECRET,
            AUTOTRAIN_GIT="false",
            AUTOTRAIN_AUTO_GENERATE="false",
            AUTOTRAIN_FEEDBACK_RATE_LIMIT="1000000/hour",
            AUTOTRAIN_TOKEN_RATE_LIMIT="1000000/hour",
            AUTOTRAIN_SLACK_POST_RATE_LIMIT="1000000/second",
            SLACK_BOT_TOKEN="xoxb-bench",
            SLACK_SIGNING_SECRET="bench-signing-secret",
            SLACK_API_URL=api.base_url,
            AUTOTRAIN_REVIEW_CHANNEL="CREVIEW",
            AUTOTRAIN_ADMINS="UADMIN",
        )
        with serving(workdir, env, log_level="warning") as (base_url, _):
            with httpx.Client(base_url=base_url, timeout=30) as http:
                fast = measure(http, api, args.rounds, 0)
                api.delay("chat.update", args.delay)
                api.delay("chat.postMessage", args.delay)
                slow = measure(http, api, args.rounds, args.rounds)
                api.delay("chat.update", 0)
                api.delay("chat.postMessage", 0)
                time.sleep(args.delay + 1)  # let the server finish the slow calls it has in flight before it stops
    finally:
        api.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.rounds} rounds; Slack fast, then answering after {args.delay:g} s")
    print(f"{'action':<10} {'fast p50':>9} {'fast max':>9} {'slow p50':>9} {'slow max':>9} {'ratio p50':>10}")
    for action in ACTIONS:
        f50, s50 = statistics.median(fast[action]), statistics.median(slow[action])
        print(
            f"{action:<10} {f50:>8.1f}ms {max(fast[action]):>7.1f}ms {s50:>8.1f}ms {max(slow[action]):>7.1f}ms"
            f" {s50 / f50:>10.2f}"
        )


if __name__ == "__main__":
    main()
