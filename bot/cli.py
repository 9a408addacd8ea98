"""The `autotrain` command: serve, token, run-all, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import timedelta

from pydantic import ValidationError

from autotrain.policy import Actor, Role
from autotrain.settings import Settings
from bot.auth import mint_token, signing_key
from bot.runtime import open_runtime

log = logging.getLogger("autotrain")

_TTL = re.compile(r"^(\d+)([smhd])$")


def parse_ttl(text: str) -> timedelta:
    match = _TTL.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError("use a number and a unit: 90s, 30m, 12h, 30d")
    amount, unit = int(match.group(1)), match.group(2)
    unit_name = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]
    return timedelta(**{unit_name: amount})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autotrain", description="Auto-Train: feedback → reviewed prompt rules.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the REST API (and Slack and the scheduler when configured)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    token = commands.add_parser("token", help="print a bearer token for the REST API")
    token.add_argument("--role", choices=[Role.ADMIN.value, Role.REPORTER.value], default=Role.ADMIN.value)
    token.add_argument("--sub", default=None, help="the token's subject (recorded as the actor); default: cli-<role>")
    token.add_argument("--ttl", type=parse_ttl, default=timedelta(days=30), help="lifetime, e.g. 12h or 30d")

    run_all = commands.add_parser("run-all", help="generate rules for every pending feedback")
    run_all.add_argument("--as", dest="actor", default="cli", help="actor recorded in the audit log")

    commands.add_parser("status", help="print the pipeline's status as JSON")

    history = commands.add_parser("history", help="the git history of a rule file (deploys, promotes, rollbacks)")
    history.add_argument("module_name", help="e.g. fashion_rules.json")
    history.add_argument("--diff", metavar="COMMIT", help="show what that commit changed in the file")
    history.add_argument("--limit", type=int, default=20)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"autotrain: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings, args.host, args.port, args.log_level)
    if args.command == "token":
        try:
            key = signing_key(settings)
        except (ValueError, OSError) as exc:
            print(f"autotrain: {exc}", file=sys.stderr)
            return 2
        subject = args.sub or f"cli-{args.role}"
        print(f"# bearer token for {subject} ({args.role}), valid {args.ttl}", file=sys.stderr)
        print(mint_token(key, subject=subject, role=Role(args.role), ttl=args.ttl, algorithm=settings.jwt_algorithm))
        return 0
    if args.command == "run-all":
        return asyncio.run(_run_all(settings, args.actor))
    if args.command == "status":
        return asyncio.run(_status(settings))
    if args.command == "history":
        return _history(settings, args.module_name, args.diff, args.limit)
    return 2


def _history(settings: Settings, module_name: str, commit: str | None, limit: int) -> int:
    from bot.git_history import GitHistoryError, GitRuleHistory

    if module_name not in settings.allowed_modules:
        print(
            f"autotrain: {module_name} is not an allowed rule file ({', '.join(settings.allowed_modules)})",
            file=sys.stderr,
        )
        return 2
    history = GitRuleHistory(settings.rules_dir)
    try:
        if commit:
            print(history.diff(commit, module_name), end="")
            return 0
        commits = history.history(module_name, limit=limit)
    except (GitHistoryError, ValueError) as exc:
        print(f"autotrain: {exc}", file=sys.stderr)
        return 1
    if not commits:
        print(f"no history for {module_name} yet (is {settings.rules_dir} a git repository?)", file=sys.stderr)
        return 0
    for entry in commits:
        subject = entry.message.splitlines()[0] if entry.message else ""
        print(f"{entry.short}  {entry.at:%Y-%m-%d %H:%M}  {entry.author_name:<16}  {subject}")
    return 0


def serve(settings: Settings, host: str, port: int, log_level: str) -> int:
    import uvicorn

    from bot.api import create_app
    from bot.http_limits import BACKLOG, fit_open_file_limit, limited_protocol
    from bot.log_limits import limit_repeated_logs

    max_connections = fit_open_file_limit(settings.max_connections)
    log.info("Auto-Train serving on http://%s:%d (API under /autotrain, docs at /docs)", host, port)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        http=limited_protocol(settings.read_timeout_seconds, max_connections),
        backlog=BACKLOG,  # also asyncio's accept batch: small, so a burst cannot overrun the open-file limit
    )
    limit_repeated_logs()  # after Config, which sets up uvicorn's loggers; before the server logs anything
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3  # uvicorn's STARTUP_FAILURE


async def _run_all(settings: Settings, actor_id: str) -> int:
    runtime = await open_runtime(settings)
    try:

        async def progress(done: int, total: int, errors: list[dict[str, str]]) -> None:
            print(f"  {done}/{total} processed, {len(errors)} errors", file=sys.stderr)

        summary = await runtime.service.run_all(Actor(actor_id, Role.ADMIN), on_progress=progress)
    finally:
        await runtime.close()
    print(summary.model_dump_json(indent=2))
    return 1 if summary.errors else 0


async def _status(settings: Settings) -> int:
    runtime = await open_runtime(settings)
    try:
        report = await runtime.service.status()
    finally:
        await runtime.close()
    print(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
