"""The reference chatbot's HTTP service (standard library `http.server`; `autotrain_client` for the rules).

    POST /chat      {"user_id", "query"}                          → {"answer", "rules_version", ...}
    POST /feedback  {"user_id", "query", "answer", "feedback_text", "feedback_type"}
                    → Auto-Train's answer to POST /autotrain/feedback ({"feedback_id", ...})
    POST /reload    Auto-Train's signed reload call               → the rules fetched now
    POST /replay    {"query", "rules": {"<module>": ["- …"]}, "user_id"} → {"answer", ...}, with exactly those rules
    GET  /healthz   the rule versions in use and the reloads received

Settings come from the environment (see `Config.from_environment`); `python -m examples.chatbot --help`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from autotrain_client import RuleBook

from .stylist import Answer, answer

log = logging.getLogger("reference_chatbot")

MODULES = ("prompt_v2.txt", "stylist_guidelines.md", "fashion_rules.json")  # the rule files this bot reads
PRODUCT_RULES = "fashion_rules.json"  # whose version an answer's `rules_version` is
MAX_BODY_BYTES = 64 * 1024
SIGNATURE_TOLERANCE_SECONDS = 300  # a signed reload older (or newer) than this is refused
DEFAULT_MODEL = "claude-sonnet-5-5"


class Rules(Protocol):
    """What the chatbot needs of a RuleBook (a test may hand it another)."""

    def rules_for(self, module_name: str, user_id: str) -> list[str]: ...
    def version(self, module_name: str) -> str | None: ...
    def refresh_now(self) -> bool: ...


# ---------------------------------------------------------------------- settings


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autotrain-reference-chatbot"


@dataclass(frozen=True)
class Config:
    autotrain_url: str
    token: str
    reload_secret: str | None
    cache_dir: Path
    host: str
    port: int
    refresh_seconds: float
    anthropic_api_key: str | None
    model: str

    @classmethod
    def from_environment(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        parser = argparse.ArgumentParser(
            prog="python -m examples.chatbot",
            description="Auto-Train's reference chatbot: a stylist reading its rules from Auto-Train.",
            epilog=(
                "Environment: AUTOTRAIN_URL, AUTOTRAIN_TOKEN (a reporter token, required), CHATBOT_RELOAD_SECRET "
                "(= Auto-Train's AUTOTRAIN_RELOAD_SECRET; unset: reload calls are refused), CHATBOT_HOST, "
                "CHATBOT_PORT, CHATBOT_CACHE_DIR, CHATBOT_REFRESH_SECONDS, ANTHROPIC_API_KEY (optional: "
                "answers by Claude), CHATBOT_MODEL."
            ),
        )
        parser.add_argument("--autotrain-url", default=env.get("AUTOTRAIN_URL") or "http://127.0.0.1:8000")
        parser.add_argument("--host", default=env.get("CHATBOT_HOST") or "127.0.0.1")
        parser.add_argument("--port", type=int, default=int(env.get("CHATBOT_PORT") or 8081))
        args = parser.parse_args(argv)
        token = env.get("AUTOTRAIN_TOKEN", "").strip()
        if not token:
            parser.error("AUTOTRAIN_TOKEN is not set (mint one with: autotrain token --role reporter --sub chatbot)")
        return cls(
            autotrain_url=args.autotrain_url.rstrip("/"),
            token=token,
            reload_secret=env.get("CHATBOT_RELOAD_SECRET") or None,
            cache_dir=Path(env.get("CHATBOT_CACHE_DIR") or _default_cache_dir()),
            host=args.host,
            port=args.port,
            refresh_seconds=float(env.get("CHATBOT_REFRESH_SECONDS") or 30),
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            model=env.get("CHATBOT_MODEL") or DEFAULT_MODEL,
        )


# ---------------------------------------------------------------------- the reload call's signature


def verify_signature(
    secret: str | None, timestamp: str | None, signature: str | None, body: bytes, now: float
) -> str | None:
    """None when `signature` is Auto-Train's: "sha256=<hex HMAC-SHA256 of '<timestamp>.<body>'>" with `secret`,
    and `timestamp` (Unix seconds) is within 5 minutes of `now`; otherwise why not."""
    if not secret:
        return "no CHATBOT_RELOAD_SECRET is set, so no reload call can be verified"
    if not timestamp or not signature:
        return "the call is not signed (X-Autotrain-Timestamp, X-Autotrain-Signature)"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "X-Autotrain-Timestamp is not a Unix time"
    if abs(now - sent_at) > SIGNATURE_TOLERANCE_SECONDS:
        return f"X-Autotrain-Timestamp is more than {SIGNATURE_TOLERANCE_SECONDS} s away from now"
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace")):
        return "the signature does not match"
    return None


# ---------------------------------------------------------------------- the chatbot


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _text(data: Mapping[str, Any], name: str, max_length: int, *, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(422, "invalid_input", f"{name}: a non-empty string is required")
    if len(value) > max_length:
        raise BadRequest(422, "invalid_input", f"{name}: at most {max_length} characters")
    return value


class Chatbot:
    """The answers, the feedback, the reloads: everything but HTTP (so the tests can also call it directly)."""

    def __init__(
        self,
        book: Rules,
        *,
        autotrain_url: str,
        token: str,
        reload_secret: str | None,
        claude: Any | None = None,
        model: str = DEFAULT_MODEL,
        modules: Sequence[str] = MODULES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.autotrain_url = autotrain_url.rstrip("/")
        self._token = token
        self._reload_secret = reload_secret
        self.claude = claude
        self.model = model
        self.modules = tuple(modules)
        self.clock = clock
        self._lock = threading.Lock()
        self.reloads = {"verified": 0, "refused": 0, "last": None}

    # .................................................................. answering

    def _answer(self, query: str, rules: Mapping[str, Sequence[str]]) -> Answer:
        try:
            return answer(query, rules, claude=self.claude, model=self.model)
        except Exception as exc:  # Claude down or refusing: the customer still gets the offline answer
            if self.claude is None:
                raise
            log.warning("Claude did not answer (%s: %s); answering offline", type(exc).__name__, exc)
            return answer(query, rules)

    def chat(self, data: Mapping[str, Any]) -> dict[str, Any]:
        user_id = _text(data, "user_id", 128)
        query = _text(data, "query", 2000)
        versions = {module: self.book.version(module) for module in self.modules}
        rules = {module: self.book.rules_for(module, user_id) for module in self.modules}  # canaries: per user
        reply = self._answer(query, rules)
        return {**reply.as_json(), "rules_version": versions.get(PRODUCT_RULES), "rules_versions": versions}

    def replay(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The answer with exactly the rules given (not the RuleBook's): for Auto-Train's replay gate."""
        query = _text(data, "query", 2000)
        rules = data.get("rules")
        if not isinstance(rules, dict) or not all(
            isinstance(module, str) and isinstance(lines, list) and all(isinstance(line, str) for line in lines)
            for module, lines in rules.items()
        ):
            raise BadRequest(422, "invalid_input", 'rules: {"<module>": ["- …", …]} is required')
        if data.get("user_id") is not None:
            _text(data, "user_id", 128)
        return self._answer(query, rules).as_json()

    # .................................................................. feedback

    def feedback(self, data: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Forward the end user's report to Auto-Train, with this bot's token and the END USER's id."""
        body = {
            "user_id": _text(data, "user_id", 128),
            "query": _text(data, "query", 2000),
            "ai_response": _text(data, "answer", 8000),
            "feedback_text": _text(data, "feedback_text", 4000),
            "feedback_type": _text(data, "feedback_type", 32, default="bug"),
        }
        request = urllib.request.Request(
            self.autotrain_url + "/autotrain/feedback",
            data=json.dumps(body, ensure_ascii=False).encode(),
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                answered = json.loads(exc.read() or b"{}")
            except ValueError:
                answered = _error("autotrain_error", f"HTTP {exc.code}")
            if exc.code in (401, 403):  # our token, not the user's fault
                log.error("Auto-Train refused the chatbot's token: %s", answered)
                return 502, _error("autotrain_refused_token", "Auto-Train refused this chatbot's AUTOTRAIN_TOKEN")
            return exc.code, answered
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return 502, _error("autotrain_unreachable", f"cannot reach Auto-Train at {self.autotrain_url}: {reason}")

    # .................................................................. reload

    def reload(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Auto-Train's signed reload call: verify it, then fetch the rules at once."""
        problem = verify_signature(
            self._reload_secret,
            headers.get("X-Autotrain-Timestamp"),
            headers.get("X-Autotrain-Signature"),
            body,
            self.clock(),
        )
        if problem is not None:
            with self._lock:
                self.reloads["refused"] += 1
            log.warning("reload call refused: %s", problem)
            return 401, _error("unauthorized", problem)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return 400, _error("invalid_json", "the body is not a JSON object")
        if payload.get("event") != "rules_changed":
            return 200, {"ignored": f"event {payload.get('event')!r}"}
        refreshed = self.book.refresh_now()
        module_name = payload.get("module_name")
        version = self.book.version(module_name) if module_name in self.modules else None
        last = {
            "at": self.clock(),
            "verified": True,
            "refreshed": refreshed,
            "module_name": module_name,
            "rule_id": payload.get("rule_id"),
            "announced_version": payload.get("version"),
            "version": version,
        }
        with self._lock:
            self.reloads["verified"] += 1
            self.reloads["last"] = last
        if not refreshed:
            log.warning("reload of %s: the fetch failed, keeping the last copy", module_name)
            return 503, _error("refresh_failed", "cannot fetch the rules from Auto-Train now; try again later")
        log.info("reload of %s (rule %s): now at version %s", module_name, payload.get("rule_id"), version)
        return 200, {"reloaded": True, "module_name": module_name, "version": version}

    def health(self) -> dict[str, Any]:
        with self._lock:
            reloads = dict(self.reloads)
        return {
            "status": "ok",
            "engine": "claude" if self.claude is not None else "offline",
            "rules_versions": {module: self.book.version(module) for module in self.modules},
            "reloads": reloads,
        }


# ---------------------------------------------------------------------- HTTP


def make_server(chatbot: Chatbot, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """The chatbot's HTTP server (not started: call `serve_forever()`); port 0 picks a free one."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "reference-chatbot/0.1"
        timeout = 15  # a client that stops sending gets its thread back
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/healthz":
                self._send(200, chatbot.health())
            else:
                self._send(404, _error("not_found", "no such path"))

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            handlers: dict[str, Callable[[Mapping[str, Any]], Any]] = {
                "/chat": chatbot.chat,
                "/replay": chatbot.replay,
                "/feedback": chatbot.feedback,
            }
            if path not in handlers and path != "/reload":
                self.close_connection = True
                return self._send(404, _error("not_found", "no such path"))
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True
                return self._send(413, _error("payload_too_large", f"a body of at most {MAX_BODY_BYTES} bytes"))
            body = self.rfile.read(length)
            try:
                if path == "/reload":
                    status, data = chatbot.reload(self.headers, body)  # the signature is over these exact bytes
                    return self._send(status, data)
                try:
                    request = json.loads(body)
                except ValueError:
                    request = None
                if not isinstance(request, dict):
                    raise BadRequest(400, "invalid_json", "the body is not a JSON object")
                result = handlers[path](request)
                status, data = result if isinstance(result, tuple) else (200, result)
                self._send(status, data)
            except BadRequest as exc:
                self._send(exc.status, _error(exc.code, exc.message))
            except Exception:
                log.exception("POST %s failed", path)
                self._send(500, _error("internal", "the chatbot failed; see its log"))

        def _send(self, status: int, data: Mapping[str, Any]) -> None:
            payload = json.dumps(data, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> int:
    config = Config.from_environment(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    book = RuleBook.from_url(
        config.autotrain_url,
        config.token,
        cache_dir=config.cache_dir,
        refresh_seconds=config.refresh_seconds,
        modules=MODULES,
    )
    claude = None
    if config.anthropic_api_key:
        import anthropic  # optional: only a chatbot answering with Claude needs it

        claude = anthropic.Anthropic(api_key=config.anthropic_api_key)
    chatbot = Chatbot(
        book,
        autotrain_url=config.autotrain_url,
        token=config.token,
        reload_secret=config.reload_secret,
        claude=claude,
        model=config.model,
    )
    server = make_server(chatbot, config.host, config.port)
    host, port = server.server_address[:2]
    versions = ", ".join(f"{module} {book.version(module) or '(none yet)'}" for module in MODULES)
    log.info("rules from %s: %s", config.autotrain_url, versions)
    log.info("answers: %s", f"Claude ({config.model})" if claude is not None else "offline, from the catalogue")
    if not config.reload_secret:
        log.warning(
            "CHATBOT_RELOAD_SECRET is not set: reload calls are refused, rules refresh every %g s",
            config.refresh_seconds,
        )
    log.info("reference chatbot on http://%s:%s (POST /chat, /feedback, /reload, /replay)", host, port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        book.close()
    return 0
