"""A fake Anthropic Messages API on 127.0.0.1, for the real `anthropic` SDK (ANTHROPIC_BASE_URL / base_url).

It answers POST /v1/messages like the real API: a message object with text (or tool_use) blocks, usage and
stop_reason; or an error object with the real status codes (429 with retry-after, 500, 529). Answers are
scripted with `then(...)` (first in, first out); when the script is empty, the responders added with
`respond(...)` are asked in turn (each sees the request and answers it, or passes with None), and then
`default` answers. `simulated_chatbot`, `simulated_judge` and `simulated_reviser(...)` are responders that
answer replay-before-deploy requests by their content (`evaluation_responders()` gives all three). It records
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
_CASE_KIND = re.compile(r'<case kind="(\w+)">')


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


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(block.get("text", "") for block in system if isinstance(block, dict))
    return ""


@dataclass
class MessagesRequest:
    headers: dict[str, str]
    body: dict[str, Any]
    at: float

    @property
    def user_text(self) -> str:
        return _user_text(self.body)

    @property
    def system_text(self) -> str:
        return _system_text(self.body)

    @property
    def schema(self) -> dict[str, Any] | None:
        """The structured-output schema asked for (`output_config.format.schema`), None for a text answer."""
        fmt = (self.body.get("output_config") or {}).get("format") or {}
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else None

    @property
    def answer_fields(self) -> frozenset[str]:
        """The properties of the asked schema: {"holds", "reason"} is a judgment, and so on."""
        return frozenset((self.schema or {}).get("properties", {}))

    def tag(self, name: str) -> str | None:
        """The unfenced text of the first <name>…</name> of the user turn (None when there is none)."""
        match = re.search(rf"<{name}>(.*?)</{name}>", self.user_text, re.S)
        return _unfence(match.group(1)) if match else None


Responder = Callable[[MessagesRequest], "FakeReply | None"]


class FakeMessagesApi:
    def __init__(self) -> None:
        self.requests: list[MessagesRequest] = []
        self.violations: list[str] = []
        self.default: Callable[[dict[str, Any]], FakeReply] = generic_answer
        self.latency = 0.0  # added to every answer
        self.max_in_flight = 0
        self.max_in_flight_per_conversation = 0
        self.responders: list[Responder] = []
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

    def respond(self, *responders: Responder) -> FakeMessagesApi:
        """Answer by content: after the script, each responder in turn may answer a request (None: the next)."""
        with self._lock:
            self.responders.extend(responders)
        return self

    def _respond(self, request: MessagesRequest) -> FakeReply:
        for responder in list(self.responders):
            try:
                reply = responder(request)
            except Exception as exc:  # a broken responder fails the test, loudly
                with self._lock:
                    self.violations.append(f"responder {responder!r} raised {type(exc).__name__}: {exc}")
                return error(500, "api_error", f"fake responder failed: {exc}")
            if reply is not None:
                return reply
        return self.default(request.body)

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
        request = MessagesRequest(headers, body, time.monotonic())
        with self._lock:
            self.requests.append(request)
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
                reply = self._respond(request)
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


# ---------------------------------------------------------------------- answering replay before deploy by content

REPLAY_TOKENS = (400, 60)  # (input, output) of a simulated chatbot answer
JUDGE_TOKENS = (700, 40)
REVISE_TOKENS = (800, 50)
# what a complaint may be about: a judgment holds unless the new answer still recommends what was complained of
COMPLAINT_PHRASES = ("áo khoác", "đầm maxi", "áo len", "hết hàng")


def _unfence(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _fold(text: str) -> str:
    from autotrain.text import fold

    return fold(text)


def _recommended(answer: str) -> str:
    """What an answer recommends: its product lines ("• …") when it has any, else all of it."""
    lines = [line for line in answer.splitlines() if line.lstrip().startswith("•")]
    return "\n".join(lines) if lines else answer


def simulated_chatbot(request: MessagesRequest) -> FakeReply | None:
    """A text request (no output schema) with a system prompt: the chatbot. It answers the query (the user
    turn's <customer_query>, else the whole turn) as the reference chatbot's offline stylist would with the
    "- " lines of the system prompt as its rules: "- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày" there
    takes the jacket out of the answer to "Tìm áo cho trời 35 độ"."""
    if request.schema is not None or not request.system_text:
        return None
    from examples.chatbot.stylist import offline_answer

    query = request.tag("customer_query") or request.user_text
    lines = [line.strip() for line in request.system_text.splitlines() if line.strip().startswith("- ")]
    answer = offline_answer(query, {"system": lines})
    return answer_text(answer.text, input_tokens=REPLAY_TOKENS[0], output_tokens=REPLAY_TOKENS[1])


def judge_by(phrases: tuple[str, ...] = COMPLAINT_PHRASES) -> Responder:
    """A judge (schema {"holds", "reason"}) reading the fenced case: a complaint or regression holds unless the
    new answer still recommends one of `phrases` that the feedback text names; praise holds when the new
    answer still has every product of the praised one."""

    def judge(request: MessagesRequest) -> FakeReply | None:
        if request.answer_fields != {"holds", "reason"}:
            return None
        kind = _CASE_KIND.search(request.user_text)
        new_answer = request.tag("new_answer") or ""
        if kind is not None and kind.group(1) == "praise":
            praised = request.tag("praised_answer") or ""
            names = [line.split("•", 1)[1].split(":", 1)[0].strip() for line in praised.splitlines() if "•" in line]
            missing = [name for name in names if _fold(name) not in _fold(_recommended(new_answer))]
            holds = not missing if names else bool(new_answer.strip())
            reason = "keeps every praised product" if holds else f"no longer recommends {', '.join(missing)}"
        else:
            complained = [p for p in phrases if _fold(p) in _fold(request.tag("feedback_text") or "")]
            still = [p for p in complained if _fold(p) in _fold(_recommended(new_answer))]
            holds = not still
            reason = f"the new answer still recommends {', '.join(still)}" if still else "the problem is gone"
        return answer_json(
            {"holds": holds, "reason": reason}, input_tokens=JUDGE_TOKENS[0], output_tokens=JUDGE_TOKENS[1]
        )

    return judge


simulated_judge = judge_by()


def simulated_reviser(rule: str | None) -> Responder:
    """A reviser (schema {"new_rule", "reasoning"}) that always proposes `rule` (None: no better idea)."""

    def revise(request: MessagesRequest) -> FakeReply | None:
        if request.answer_fields != {"new_rule", "reasoning"}:
            return None
        reasoning = "a clearer condition" if rule else "no better rule"
        return answer_json(
            {"new_rule": rule, "reasoning": reasoning}, input_tokens=REVISE_TOKENS[0], output_tokens=REVISE_TOKENS[1]
        )

    return revise


def evaluation_responders(revised_rule: str | None = None) -> tuple[Responder, ...]:
    """The simulated chatbot, judge and reviser: `messages_api.respond(*evaluation_responders())`."""
    return simulated_chatbot, simulated_judge, simulated_reviser(revised_rule)


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
