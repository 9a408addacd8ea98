"""A fake Anthropic Messages API on 127.0.0.1, for the real `anthropic` SDK (ANTHROPIC_BASE_URL / base_url).

It answers POST /v1/messages like the real API: a message object with text (or tool_use) blocks, usage and
stop_reason; or an error object with the real status codes (429 with retry-after, 500, 529). Answers are
scripted with `then(...)` (first in, first out); when the script is empty, `default` answers. It records
every request and checks what the current API demands (a key as a bearer token or x-api-key, an
anthropic-version header, model / max_tokens / messages; no temperature or top_p), and tracks how many
requests are in flight at once, per conversation too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class FakeReply:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def answer_json(
    answer: dict[str, Any],
    *,
    stop_reason: str = "end_turn",
    input_tokens: int = 900,
    output_tokens: int = 120,
    delay: float = 0.0,
) -> FakeReply:
    """A structured-output answer: one text block holding the JSON."""
    return answer_text(
        json.dumps(answer, ensure_ascii=False),
        stop_reason=stop_reason,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        delay=delay,
    )


def answer_text(
    text: str, *, stop_reason: str = "end_turn", input_tokens: int = 900, output_tokens: int = 120, delay: float = 0.0
) -> FakeReply:
    return FakeReply(
        200, _message([{"type": "text", "text": text}], stop_reason, input_tokens, output_tokens), delay=delay
    )


def answer_tool_use(tool_input: Any, *, delay: float = 0.0) -> FakeReply:
    block = {"type": "tool_use", "id": "toolu_01", "name": "propose_rule", "input": tool_input}
    return FakeReply(200, _message([block], "tool_use", 900, 80), delay=delay)


def error(status: int, kind: str, message: str, *, retry_after: float | None = None, delay: float = 0.0) -> FakeReply:
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    return FakeReply(status, {"type": "error", "error": {"type": kind, "message": message}}, headers, delay)


def rate_limited(retry_after: float = 1) -> FakeReply:
    return error(
        429, "rate_limit_error", "Number of request tokens has exceeded your rate limit.", retry_after=retry_after
    )


def server_error() -> FakeReply:
    return error(500, "api_error", "Internal server error")


def overloaded() -> FakeReply:
    return error(529, "overloaded_error", "Overloaded")


_ids = itertools.count(1)


def _message(content: list[dict[str, Any]], stop_reason: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "id": f"msg_fake{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": "",  # filled with the requested model
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


_FEEDBACK_TEXT = re.compile(r"<feedback_text>(.*?)</feedback_text>", re.S)


def generic_answer(body: dict[str, Any]) -> FakeReply:
    """A valid rule, different for each feedback text (so run-all over many feedbacks makes distinct rules)."""
    text = _user_text(body)
    match = _FEEDBACK_TEXT.search(text)
    key = hashlib.sha1((match.group(1) if match else text).encode()).hexdigest()[:8]
    return answer_json(
        {
            "decline_reason": None,
            "module_name": "fashion_rules.json",
            "rule_type": "prompt_update",
            "old_rule": None,
            "new_rule": f"- Kiểm tra lại tình huống {key} trước khi gợi ý sản phẩm",
            "reasoning": "The answer did not fit the customer's situation.",
            "confidence": 0.8,
        }
    )


def _user_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(block.get("text", "") for block in content if isinstance(block, dict))
    return "\n".join(parts)


@dataclass
class MessagesRequest:
    headers: dict[str, str]
    body: dict[str, Any]
    at: float

    @property
    def user_text(self) -> str:
        return _user_text(self.body)


class FakeMessagesApi:
    def __init__(self) -> None:
        self.requests: list[MessagesRequest] = []
        self.violations: list[str] = []
        self.default: Callable[[dict[str, Any]], FakeReply] = generic_answer
        self.latency = 0.0  # added to every answer
        self.max_in_flight = 0
        self.max_in_flight_per_conversation = 0
        self._script: list[FakeReply] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._conversations: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def do_POST(self) -> None:
                fake._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------------ scripting

    def then(self, *replies: FakeReply) -> FakeMessagesApi:
        with self._lock:
            self._script.extend(replies)
        return self

    # ------------------------------------------------------------------ serving

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        problems = self._check(handler.path, headers, body)
        conversation = hashlib.sha1(_user_text(body).encode()).hexdigest()
        with self._lock:
            self.requests.append(MessagesRequest(headers, body, time.monotonic()))
            self.violations.extend(problems)
            self._in_flight += 1
            self._conversations[conversation] += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self.max_in_flight_per_conversation = max(
                self.max_in_flight_per_conversation, self._conversations[conversation]
            )
            reply = self._script.pop(0) if self._script else None
        try:
            if problems:
                reply = error(400, "invalid_request_error", "; ".join(problems))
            elif reply is None:
                reply = self.default(body)
            time.sleep(self.latency + reply.delay)
            payload = dict(reply.body)
            if reply.status == 200:
                payload["model"] = body.get("model", "")
            data = json.dumps(payload, ensure_ascii=False).encode()
            try:
                handler.send_response(reply.status)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(data)))
                handler.send_header("request-id", f"req_fake{len(self.requests):06d}")
                for name, value in reply.headers.items():
                    handler.send_header(name, value)
                handler.end_headers()
                handler.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): like the real API, nothing to do
        finally:
            with self._lock:
                self._in_flight -= 1
                self._conversations[conversation] -= 1

    @staticmethod
    def _check(path: str, headers: dict[str, str], body: dict[str, Any]) -> list[str]:
        problems = []
        if path.split("?")[0] != "/v1/messages":
            problems.append(f"unknown path {path}")
        authorization = headers.get("authorization", "")
        if not (authorization.startswith("Bearer ") and len(authorization) > 7) and not headers.get("x-api-key"):
            problems.append("no API key (Authorization: Bearer … or x-api-key)")
        if not headers.get("anthropic-version"):
            problems.append("no anthropic-version header")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                problems.append(f"{name}: field required")
        for name in ("temperature", "top_p"):
            if name in body:
                problems.append(f"{name} is not supported by this API version")
        fmt = (body.get("output_config") or {}).get("format")
        if fmt is not None and (fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict)):
            problems.append("output_config.format must be a json_schema with a schema")
        return problems


@pytest.fixture
def messages_api() -> Iterator[FakeMessagesApi]:
    """The fake Messages API, started; fails the test at teardown on any request the real API would refuse."""
    fake = FakeMessagesApi()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    if fake.violations:
        pytest.fail("requests the real Messages API would refuse:\n" + "\n".join(fake.violations))
