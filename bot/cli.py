"""The `autotrain` command: serve, token, run-all, status, history, and the review flow (feedback, rules,
approve, edit, reject, deploy, promote, rollback) as a client of a running server's REST API."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from autotrain.models import FLAG_WARNINGS, FeedbackStatus, RuleStatus
from autotrain.policy import Actor, Role
from autotrain.settings import DEFAULT_CANARY_PERCENT, Settings
from bot.auth import POSTGRES_NEEDS_SECRET, SecretNotFound, mint_token, signing_key

log = logging.getLogger("autotrain")

_TTL = re.compile(r"^(\d+)([smhd])$")


def parse_ttl(text: str) -> timedelta:
    match = _TTL.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError("use a number above 0 and a unit: 90s, 30m, 12h, 30d")
    amount, unit = int(match.group(1)), match.group(2)
    unit_name = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]
    return timedelta(**{unit_name: amount})


def describe_ttl(ttl: timedelta) -> str:
    """A lifetime in the largest unit that divides it: "30 days", "12 hours", "90 seconds"."""
    seconds = int(ttl.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


DEFAULT_URL = "http://127.0.0.1:8000"
LOCAL_ADMIN = "cli-admin"
# Minted afresh for each command, so it only has to outlive one request (a deploy may wait for a file lock).
LOCAL_ADMIN_TTL = timedelta(minutes=10)
CANARY_DEFAULT = object()  # `--canary` without a percent (not a str: argparse would convert it with type=int)
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0


class Exit(IntEnum):
    """The review commands' exit codes (see EXIT_CODES)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    REFUSED = 4
    DENIED = 5
    INVALID = 6
    UNREACHABLE = 7


EXIT_CODES = """\
exit codes (feedback, rules, approve, edit, reject, deploy, promote, rollback):
  0  done
  1  unexpected error (a server error, no answer in time, an answer that is not Auto-Train's)
  2  usage: an unknown command or option, a bad value, invalid local settings
  3  not found (404): no such feedback or rule
  4  refused (409): its state does not allow it (already approved, not deployed, flags not acknowledged…)
  5  permission denied (401/403): no, bad or expired token, a reporter token on an admin command,
     or no token given and no server secret here to act as the local admin
  6  invalid input (422): a value the server refuses (limit out of range, unknown rule file, text too long)
  7  server unreachable: start `autotrain serve`, or point --url / AUTOTRAIN_URL at it"""

IDENTITY = f"""\
server and identity:
  --url / AUTOTRAIN_URL      the running server (default {DEFAULT_URL})
  --token / AUTOTRAIN_TOKEN  a bearer token (`autotrain token`); its role and subject apply, as over REST
  neither                    you act as the local admin `{LOCAL_ADMIN}`: a short-lived admin token is signed
                             with the server's secret, found as `autotrain serve` finds it (AUTOTRAIN_JWT_SECRET,
                             or the secret file beside the database of AUTOTRAIN_DATABASE_URL, here or in ./.env)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotrain",
        description="Auto-Train: feedback → reviewed prompt rules.",
        epilog=f"{IDENTITY}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the REST API (and Slack and the scheduler when configured)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    token = commands.add_parser(
        "token",
        help="print a bearer token for the REST API",
        description="Sign a token with the secret `autotrain serve` uses (found as it finds it; never created here).",
    )
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

    _add_review_commands(commands)
    return parser


def _add_review_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--url", default=None, help=f"the server (default: AUTOTRAIN_URL, else {DEFAULT_URL})")
    client.add_argument("--token", default=None, help="bearer token (default: AUTOTRAIN_TOKEN, else local admin)")
    client.add_argument("--json", action="store_true", help="print the API's JSON answer as it is")
    shared = {
        "parents": [client],
        "epilog": f"{IDENTITY}\n\n{EXIT_CODES}",
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }

    def add(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
    ) -> argparse.ArgumentParser:
        return group.add_parser(name, help=help, description=help, **shared)

    def paging(command: argparse.ArgumentParser, statuses: list[str]) -> None:
        command.add_argument("--status", choices=statuses)
        command.add_argument("--limit", type=int, default=None, help="page size, 1–200 (server default 50)")
        command.add_argument("--cursor", default=None, help="the next page: the cursor the previous page printed")

    for noun, statuses in (("feedback", [s.value for s in FeedbackStatus]), ("rules", [s.value for s in RuleStatus])):
        group = commands.add_parser(noun, help=f"list or show {noun} (over the REST API)")
        actions = group.add_subparsers(dest="action", required=True)
        paging(add(actions, "list", f"list {noun}, newest first"), statuses)
        what = "FB-1001" if noun == "feedback" else "RUL-1001"
        add(actions, "show", f"show one of the {noun}").add_argument("id", metavar=what)

    approve = add(commands, "approve", "approve a pending rule (admin)")
    approve.add_argument("id", metavar="RUL-1001")
    approve.add_argument(
        "--acknowledge-flags", action="store_true", help="approve a flagged rule (injection, link, code, secret…)"
    )

    edit = add(commands, "edit", "change a pending rule's line (and its file, or the line it replaces) (admin)")
    edit.add_argument("id", metavar="RUL-1001")
    edit.add_argument("--new-rule", required=True, metavar="TEXT", help="the line to write")
    edit.add_argument("--module", metavar="NAME", help="the rule file, e.g. fashion_rules.json")
    edit.add_argument(
        "--old-rule", metavar="TEXT", help="the line it replaces, as in the file; '' replaces none (adds a line)"
    )

    reject = add(commands, "reject", "reject a pending or approved rule (admin)")
    reject.add_argument("id", metavar="RUL-1001")
    reject.add_argument("--reason", metavar="TEXT")

    deploy = add(commands, "deploy", "write an approved rule into its file (admin)")
    deploy.add_argument("id", metavar="RUL-1001")
    deploy.add_argument(
        "--canary",
        nargs="?",
        type=int,
        const=CANARY_DEFAULT,  # no percent given: AUTOTRAIN_CANARY_PERCENT applies
        default=None,
        metavar="PERCENT",
        help=f"deploy to a share of users first (default: AUTOTRAIN_CANARY_PERCENT, else {DEFAULT_CANARY_PERCENT})",
    )
    deploy.add_argument(
        "--override-evaluation", action="store_true", help="deploy although its replay has not passed (audited)"
    )

    add(commands, "promote", "take a canary to every user (admin)").add_argument("id", metavar="RUL-1001")
    add(commands, "rollback", "undo a deployed rule (admin)").add_argument("id", metavar="RUL-1001")


REVIEW_COMMANDS = frozenset({"feedback", "rules", "approve", "edit", "reject", "deploy", "promote", "rollback"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in REVIEW_COMMANDS:
        logging.basicConfig(level=logging.WARNING)  # httpx logs every request at INFO: not for a terminal
        return review(args)  # reads local settings only when it needs them (local admin, canary share)
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
            key = signing_key(settings)  # never creates a secret: one the server does not have is no use
        except (SecretNotFound, ValueError, OSError) as exc:
            print(f"autotrain: {exc}", file=sys.stderr)
            return 2
        subject = args.sub or f"cli-{args.role}"
        print(f"# bearer token for {subject} ({args.role}), valid {describe_ttl(args.ttl)}", file=sys.stderr)
        print(mint_token(key, subject=subject, role=Role(args.role), ttl=args.ttl, algorithm=settings.jwt_algorithm))
        return 0
    if args.command in ("run-all", "status") and not settings.uses_postgres and not settings.database_path.exists():
        # they open the server's database themselves: never a new, empty one (and a second JWT secret) here
        print(
            f"autotrain: no Auto-Train database at {settings.database_path.resolve()}: run `autotrain"
            f" {args.command}` where `autotrain serve` runs, or set AUTOTRAIN_DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    if args.command == "run-all":
        return asyncio.run(_run_all(settings, args.actor))
    if args.command == "status":
        return asyncio.run(_status(settings))
    if args.command == "history":
        return _history(settings, args.module_name, args.diff, args.limit)
    return 2


# ---------------------------------------------------------------------- the review flow, over the REST API


class CliError(Exception):
    def __init__(self, code: Exit, message: str, body: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.body = body  # the server's JSON error, printed as it is with --json


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _local_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise CliError(Exit.USAGE, f"invalid settings: {_one_line(str(exc))}") from exc


def _local_admin_token() -> str:
    """An admin token signed with the server's own secret: whoever can read it is that server's admin anyway."""
    settings = _local_settings()
    try:
        key = signing_key(settings)
    except (SecretNotFound, ValueError, OSError) as exc:
        raise CliError(
            Exit.DENIED, f"no token given (--token / AUTOTRAIN_TOKEN), and cannot act as the local admin: {exc}"
        ) from exc
    return mint_token(key, subject=LOCAL_ADMIN, role=Role.ADMIN, ttl=LOCAL_ADMIN_TTL, algorithm=settings.jwt_algorithm)


class ReviewClient:
    """The REST API of one server, as one identity; every failure becomes a CliError with its exit code."""

    def __init__(self, url: str, token: str, *, local_admin: bool) -> None:
        self.url = url.rstrip("/")
        self.local_admin = local_admin
        try:
            self.http = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            )
        except httpx.InvalidURL as exc:
            raise CliError(Exit.USAGE, f"not a usable server URL: {self.url} ({exc})") from exc

    def close(self) -> None:
        self.http.close()

    def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        unreachable = "start `autotrain serve`, or point --url / AUTOTRAIN_URL at the server"
        try:
            response = self.http.request(method, f"/autotrain{path}", params=params, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise CliError(Exit.UNREACHABLE, f"cannot reach Auto-Train at {self.url} ({exc}): {unreachable}") from exc
        except httpx.TimeoutException as exc:
            raise CliError(Exit.ERROR, f"{self.url} did not answer within {READ_TIMEOUT:g} s") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise CliError(Exit.USAGE, f"not a usable server URL: {self.url} ({exc})") from exc
        except httpx.HTTPError as exc:
            raise CliError(Exit.UNREACHABLE, f"no answer from {self.url} ({exc}): {unreachable}") from exc
        if response.is_success:
            return response
        raise self._refusal(response)

    def _refusal(self, response: httpx.Response) -> CliError:
        code, message, body = "", response.text[:200] or response.reason_phrase, None
        try:
            error = response.json()["error"]
            code, message = str(error.get("code", "")), str(error.get("message", message))
            body = response.text
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # not Auto-Train's error body (a proxy, another service): its text as it is
        status = response.status_code
        exit_code = {404: Exit.NOT_FOUND, 409: Exit.REFUSED, 401: Exit.DENIED, 403: Exit.DENIED}.get(status)
        if exit_code is None:
            exit_code = Exit.INVALID if status in (400, 413, 422) else Exit.ERROR
        hint = ""
        if code == "flags_not_acknowledged":
            hint = " (pass --acknowledge-flags to approve it anyway)"
        elif status == 401 and self.local_admin:
            hint = (
                f" (the local admin's token was signed with the secret found here: is {self.url} the server "
                "that uses it? Run this where it runs, or pass --token)"
            )
        elif status == 405:
            hint = f" (the server at {self.url} does not offer this: an older Auto-Train?)"
        label = f"{code}, HTTP {status}" if code else f"HTTP {status}"
        return CliError(exit_code, f"{_one_line(message)} [{label}]{hint}", body)

    def json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(Exit.ERROR, f"the answer from {self.url} is not JSON: is it an Auto-Train server?") from exc


def review(args: argparse.Namespace) -> int:
    """Run one review command; print the answer (or one line on stderr) and return its exit code."""
    client: ReviewClient | None = None
    try:
        url = args.url or os.environ.get("AUTOTRAIN_URL") or DEFAULT_URL  # empty means unset, as in settings
        token = args.token or os.environ.get("AUTOTRAIN_TOKEN") or None
        client = ReviewClient(url, token or _local_admin_token(), local_admin=token is None)
        _REVIEW[args.command](client, args)
        return Exit.OK
    except CliError as exc:
        print(f"autotrain: {exc.message}", file=sys.stderr)
        if args.json and exc.body:
            print(exc.body)
        return exc.code
    except Exception as exc:  # a bug of ours or a surprise from the network: one line, never a stack trace
        print(f"autotrain: unexpected error: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return Exit.ERROR
    finally:
        if client is not None:
            client.close()


def _rule_path(rule_id: str, action: str = "") -> str:
    return f"/rules/{quote(rule_id, safe='')}{action}"  # quoted: an id is never a path ("../status")


def _show(
    client: ReviewClient, args: argparse.Namespace, response: httpx.Response, render: Callable[[Any], str]
) -> None:
    if args.json:
        print(response.text)
    else:
        print(render(client.json(response)))


def _list(client: ReviewClient, args: argparse.Namespace) -> None:
    noun = args.command
    params = {
        k: v for k, v in (("status", args.status), ("limit", args.limit), ("cursor", args.cursor)) if v is not None
    }
    response = client.call("GET", f"/{noun}", params=params)
    line = _feedback_line if noun == "feedback" else _rule_line
    _show(client, args, response, lambda page: _render_page(page, noun, args, line))


def _cmd_feedback(client: ReviewClient, args: argparse.Namespace) -> None:
    if args.action == "list":
        _list(client, args)
    else:
        _show(client, args, client.call("GET", f"/feedback/{quote(args.id, safe='')}"), _render_feedback)


def _cmd_rules(client: ReviewClient, args: argparse.Namespace) -> None:
    if args.action == "list":
        _list(client, args)
    else:
        _show(client, args, client.call("GET", _rule_path(args.id)), _render_rule)


def _cmd_approve(client: ReviewClient, args: argparse.Namespace) -> None:
    body = {"acknowledge_flags": True} if args.acknowledge_flags else None
    response = client.call("POST", _rule_path(args.id, "/approve"), body=body)
    _show(client, args, response, lambda rule: _done(rule, f"approved by {rule.get('approved_by')}"))


def _cmd_edit(client: ReviewClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"new_rule": args.new_rule}
    if args.module is not None:
        body["module_name"] = args.module
    if args.old_rule is not None:
        body["old_rule"] = args.old_rule
    response = client.call("PATCH", _rule_path(args.id), body=body)
    _show(client, args, response, lambda rule: _done(rule, f"edited by {rule.get('edited_by')}"))


def _cmd_reject(client: ReviewClient, args: argparse.Namespace) -> None:
    body = {"reason": args.reason} if args.reason is not None else None
    response = client.call("POST", _rule_path(args.id, "/reject"), body=body)
    _show(client, args, response, lambda rule: _done(rule, f"rejected by {rule.get('rejected_by')}"))


def _cmd_deploy(client: ReviewClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {}
    if args.canary is not None:
        # the share the card's Canary button uses, from the settings here (the server's, run in its folder)
        percent = _local_settings().canary_percent if args.canary is CANARY_DEFAULT else args.canary
        body["rollout_percent"] = percent
    if args.override_evaluation:
        body["override_evaluation"] = True
    response = client.call("POST", _rule_path(args.id, "/deploy"), body=body or None)
    _show(client, args, response, lambda rule: _done(rule, _deployed(rule, "deployed")))


def _cmd_promote(client: ReviewClient, args: argparse.Namespace) -> None:
    response = client.call("POST", _rule_path(args.id, "/promote"))
    _show(client, args, response, lambda rule: _done(rule, _deployed(rule, "promoted to every user")))


def _cmd_rollback(client: ReviewClient, args: argparse.Namespace) -> None:
    response = client.call("POST", _rule_path(args.id, "/rollback"))
    _show(client, args, response, lambda rule: _done(rule, _deployed(rule, "rolled back")))


_REVIEW: dict[str, Callable[[ReviewClient, argparse.Namespace], None]] = {
    "feedback": _cmd_feedback,
    "rules": _cmd_rules,
    "approve": _cmd_approve,
    "edit": _cmd_edit,
    "reject": _cmd_reject,
    "deploy": _cmd_deploy,
    "promote": _cmd_promote,
    "rollback": _cmd_rollback,
}


# ---------------------------------------------------------------------- human-readable output


def _when(value: Any) -> str:
    if not value:
        return "?"
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(value)


def _short(text: Any, width: int = 70) -> str:
    flat = _one_line(text or "")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _indented(prefix: str, text: str) -> str:
    """`prefix` before the first line of `text`, its width of spaces before the others."""
    lines = str(text).splitlines() or [""]
    pad = " " * len(prefix)
    return "\n".join([prefix + lines[0], *(pad + line for line in lines[1:])])


def _flags(rule: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(flags, other warnings): a flag is a warning that marks the rule suspicious (FLAG_WARNINGS)."""
    warnings = [str(w) for w in rule.get("warnings") or []]
    flagged = {str(w) for w in FLAG_WARNINGS}
    return [w for w in warnings if w in flagged], [w for w in warnings if w not in flagged]


def _share(rule: dict[str, Any]) -> str:
    percent = rule.get("rollout_percent")
    if rule.get("status") == RuleStatus.DEPLOYED and percent is not None and percent < 100:
        return f" (canary, {percent} % of users)"
    return ""


def _render_rule(rule: dict[str, Any]) -> str:
    lines = [f"{rule['rule_id']}  {rule['status']}{_share(rule)}  {rule['module_name']}"]
    if rule.get("old_rule"):
        lines.append(_indented("  − ", rule["old_rule"]))
        lines.append(_indented("  + ", rule["new_rule"]))
    else:
        lines.append(_indented("  + ", rule["new_rule"]) + "   (added: replaces no line)")
    model = f" ({rule['model']})" if rule.get("model") else ""
    cluster = rule.get("cluster_size") or 1
    source = f"{rule['feedback_id']}" + (
        f" and {cluster - 1} more feedback with the same complaint" if cluster > 1 else ""
    )
    lines.append(
        f"  confidence {float(rule.get('confidence', 0)):.2f} · {rule.get('generator')}{model} · from {source}"
    )
    flags, warnings = _flags(rule)
    details = rule.get("warning_details") or {}

    def named(names: list[str]) -> str:
        return "; ".join(f"{name} ({_one_line(details[name])})" if details.get(name) else name for name in names)

    if flags:
        pending = rule.get("status") == RuleStatus.PENDING
        lines.append(f"  flags: {named(flags)}" + (" (approve needs --acknowledge-flags)" if pending else ""))
    if warnings:
        lines.append(f"  warnings: {named(warnings)}")
    if rule.get("reasoning"):
        lines.append(_indented("  reasoning: ", _one_line(rule["reasoning"])))
    lines.append(f"  created {_when(rule.get('created_at'))}")
    for verb, who, at in (
        ("edited", "edited_by", "edited_at"),
        ("approved", "approved_by", "approved_at"),
        ("rejected", "rejected_by", "rejected_at"),
        ("deployed", "deployed_by", "deployed_at"),
        ("rolled back", "rolled_back_by", "rolled_back_at"),
    ):
        if rule.get(who):
            reason = f": {_one_line(rule['reject_reason'])}" if verb == "rejected" and rule.get("reject_reason") else ""
            lines.append(f"  {verb} by {rule[who]}, {_when(rule.get(at))}{reason}")
    if rule.get("recurrences"):
        lines.append(f"  the complaint came back {rule['recurrences']} times since it was deployed")
    evaluation = rule.get("evaluation")
    if isinstance(evaluation, dict):
        lines.append(f"  replay: {evaluation.get('status')}: {_one_line(evaluation.get('summary', ''))}")
    effect = rule.get("effect")
    if isinstance(effect, dict):
        before, since = effect.get("before") or {}, effect.get("since") or {}
        lines.append(
            f"  effect: {effect.get('verdict')}: {before.get('complaints')} of {before.get('feedback')} feedbacks "
            f"before, {since.get('complaints')} of {since.get('feedback')} since"
        )
    return "\n".join(lines)


def _done(rule: dict[str, Any], what: str) -> str:
    return f"{rule['rule_id']} {what}.\n\n{_render_rule(rule)}"


def _deployed(rule: dict[str, Any], what: str) -> str:
    """What a deploy, promote or rollback did to the file, from the deployment the API recorded."""
    deployment = rule.get("deployment") or {}
    actor = deployment.get("deployed_by") or rule.get("deployed_by") or rule.get("rolled_back_by")
    parts = [f"{what}{_share(rule)} by {actor}: {deployment.get('module_name', rule.get('module_name'))}"]
    if deployment.get("outcome"):
        parts.append(str(deployment["outcome"]))
    if deployment.get("version_before") or deployment.get("version_after"):
        parts.append(f"version {deployment.get('version_before')} → {deployment.get('version_after')}")
    if deployment.get("reload_status"):
        parts.append(f"chatbot reload {deployment['reload_status']}")
    if deployment.get("commit_sha"):
        parts.append(f"commit {str(deployment['commit_sha'])[:10]}")
    elif deployment.get("commit_error"):
        parts.append(f"not in git history yet: {_one_line(deployment['commit_error'])}")
    return ", ".join(parts)


def _render_feedback(feedback: dict[str, Any]) -> str:
    lines = [
        f"{feedback['feedback_id']}  {feedback['status']}  {feedback['feedback_type']}  "
        f"from {feedback.get('user_id')} via {feedback.get('source')}, {_when(feedback.get('created_at'))}",
        _indented("  question:     ", feedback.get("query", "")),
        _indented("  bot answered: ", feedback.get("ai_response") or "(not given)"),
        _indented("  feedback:     ", feedback.get("feedback_text", "")),
    ]
    if feedback.get("rule_id"):
        lines.append(f"  rule: {feedback['rule_id']}  (autotrain rules show {feedback['rule_id']})")
    if feedback.get("recurrence_of"):
        lines.append(f"  the complaint of deployed rule {feedback['recurrence_of']} again")
    if feedback.get("flags"):
        lines.append(f"  flags: {', '.join(feedback['flags'])}")
    if feedback.get("error_count"):
        lines.append(f"  generation failed {feedback['error_count']} times: {_one_line(feedback.get('last_error'))}")
    return "\n".join(lines)


def _feedback_line(feedback: dict[str, Any]) -> str:
    rule = feedback.get("rule_id") or "-"
    return (
        f"{feedback['feedback_id']:<9} {feedback['status']:<10} {feedback['feedback_type']:<10} {rule:<9} "
        f"{_short(feedback.get('feedback_text'), 60)}"
    )


def _rule_line(rule: dict[str, Any]) -> str:
    flags, warnings = _flags(rule)
    notes = (f"  [flags: {', '.join(flags)}]" if flags else "") + (
        f"  [warnings: {', '.join(warnings)}]" if warnings else ""
    )
    status = f"{rule['status']}{' canary' if _share(rule) else ''}"
    return (
        f"{rule['rule_id']:<9} {status:<15} {rule['module_name']:<24} {float(rule.get('confidence', 0)):.2f}  "
        f"{_short(rule.get('new_rule'), 60)}{notes}"
    )


def _render_page(page: dict[str, Any], noun: str, args: argparse.Namespace, line: Callable[[Any], str]) -> str:
    items = page.get("items") or []
    which = f" with status {args.status}" if args.status else ""
    if not items:
        return f"no {noun}{which}" + (" on this page" if args.cursor else "")
    lines = [line(item) for item in items]
    total = page.get("total")
    summary = f"{len(items)} shown, {total} {noun if noun == 'feedback' or total != 1 else 'rule'}{which} in all"
    cursor = page.get("next_cursor")
    if cursor:
        again = [f"autotrain {noun} list", f"--cursor {cursor}"]
        if args.status:
            again.append(f"--status {args.status}")
        if args.limit is not None:
            again.append(f"--limit {args.limit}")
        lines += ["", f"{summary}; next page: {' '.join(again)}"]
    else:
        lines += ["", f"{summary}; last page"]
    return "\n".join(lines)


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

    if settings.uses_postgres and settings.jwt_algorithm == "HS256" and settings.jwt_secret is None:
        print(f"autotrain: {POSTGRES_NEEDS_SECRET}", file=sys.stderr)
        return 2
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
    from bot.runtime import open_runtime  # heavy: not needed by the client commands

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
    from bot.runtime import open_runtime

    runtime = await open_runtime(settings)
    try:
        report = await runtime.service.status()
    finally:
        await runtime.close()
    print(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
