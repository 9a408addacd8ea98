"""Replay before deploy: the wall time of one rule's evaluation with 20 regression cases (20 earlier rules of
the file, deployed) plus its complaint, against the tests' fake Messages API whose every answer takes a fixed
200 ms. Each case is a replay (Claude playing the chatbot) then a judgment, so it takes two answers in a row;
the ideal is ceil(cases / concurrency) × 2 × latency.

    .venv/bin/python bench/evaluation.py [--regressions 20] [--latency 0.2] [--concurrency 4]

The real SDK talks HTTP to the fake, in a process of its own; the rules and evaluations go to a real SQLite
file. Not a test: the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from claude_run_all import FakeServerProcess  # noqa: E402

from autotrain.generators.heuristic import HeuristicRuleGenerator  # noqa: E402
from autotrain.models import FeedbackIn  # noqa: E402
from autotrain.policy import Actor, Role  # noqa: E402
from autotrain.settings import Settings  # noqa: E402
from bot.runtime import open_runtime  # noqa: E402

HOT = {"query": "Tìm áo cho trời 35 độ", "ai_response": "Mình gợi ý áo khoác nỉ này...", "feedback_type": "bug"}


async def run(regressions: int, latency: float, concurrency: int) -> tuple[float, int, int]:
    workdir = Path(tempfile.mkdtemp(prefix="autotrain-eval-bench-"))
    shutil.copytree(REPO_ROOT / "config", workdir / "rules", ignore=shutil.ignore_patterns(".autotrain"))
    api = FakeServerProcess(latency, evaluation=True)
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
        cluster_threshold=None,
        evaluate="auto",  # the bench never delivers rule events, so nothing is replayed in the background
        eval_regressions=regressions,
        eval_praise=0,
        eval_complaints=0,
        eval_revisions=0,
        eval_concurrency=concurrency,
        eval_token_budget=10_000_000,
        feedback_rate_limit="1000000/hour",
        token_rate_limit="1000000/hour",
        claude_rate_limit="1000000/minute",
        git_history=False,
    )
    runtime = await open_runtime(settings, generator=HeuristicRuleGenerator(settings.allowed_modules))
    admin, reporter = Actor("bench", Role.ADMIN), Actor("bench", Role.REPORTER)
    try:
        for n in range(regressions):
            feedback = await runtime.service.submit(FeedbackIn(**HOT, feedback_text=f"Góp ý {n}: áo khoác"), reporter)
            rule = await runtime.service.generate(feedback.feedback_id, reporter)
            await runtime.service.edit(
                rule.rule_id, admin, new_rule=f"- Quy tắc số {n}", old_rule="", module_name="fashion_rules.json"
            )
            await runtime.service.approve(rule.rule_id, admin)
            await runtime.service.deploy(rule.rule_id, admin)
        feedback = await runtime.service.submit(
            FeedbackIn(**HOT, feedback_text="Trời nóng mà gợi ý áo khoác"), reporter
        )
        rule = await runtime.service.generate(feedback.feedback_id, reporter)
        started = time.perf_counter()
        evaluation = await runtime.service.evaluate(rule.rule_id, admin)
        elapsed = time.perf_counter() - started
    finally:
        await runtime.close()
        api.finish()
        shutil.rmtree(workdir, ignore_errors=True)
    if evaluation.cases != regressions + 1:
        raise SystemExit(f"{evaluation.cases} cases evaluated, expected {regressions + 1}: {evaluation.summary}")
    return elapsed, evaluation.cases, evaluation.tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regressions", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    elapsed, cases, tokens = asyncio.run(run(args.regressions, args.latency, args.concurrency))
    ideal = math.ceil(cases / args.concurrency) * 2 * args.latency
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{cases} cases (1 complaint, {args.regressions} earlier fixes), {args.latency * 1000:.0f} ms per answer")
    print(f"evaluation wall time {elapsed:7.2f} s, {tokens} tokens")
    print(f"ideal                {ideal:7.2f} s  (ceil(cases / {args.concurrency}) × 2 answers × latency)")
    print(f"ratio wall / ideal   {elapsed / ideal:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
