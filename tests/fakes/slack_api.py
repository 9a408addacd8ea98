"""A fake Slack Web API on 127.0.0.1 for tests: records every call, answers like Slack, and checks
Slack's documented limits so that a call the real Slack would reject fails loudly (and is listed in
`violations`). Point `AsyncWebClient(base_url=fake.base_url)` at it and use `fake.response_url(...)`
in interaction payloads."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import pytest

TRIGGER_TTL = 3.0  # seconds a trigger_id stays usable (Slack's rule)
FIRST_TS = 1_700_000_000
FORM_JSON_KEYS = frozenset({"blocks", "attachments", "view", "metadata"})
AUTH_TEST = {
    "url": "https://fake.slack.com/",
    "team": "Fake",
    "user": "autotrain",
    "team_id": "T0001",
    "user_id": "UBOT",
    "bot_id": "BBOT",
}

BLOCK_TYPES = frozenset(
    "actions call context context_actions divider file header image input markdown rich_text section "
    "table video".split()
)
ELEMENT_TYPES = frozenset(
    "button channels_select checkboxes conversations_select datepicker datetimepicker email_text_input "
    "external_select feedback_buttons file_input icon_button image multi_channels_select "
    "multi_conversations_select multi_external_select multi_static_select multi_users_select number_input "
    "overflow plain_text_input radio_buttons rich_text_input static_select timepicker url_text_input "
    "users_select workflow_button".split()
)
# element type -> (max options, option text must be plain_text)
OPTION_LIMITS: dict[str, tuple[int, bool]] = {
    "static_select": (100, True),
    "multi_static_select": (100, True),
    "overflow": (5, True),
    "checkboxes": (10, False),
    "radio_buttons": (10, False),
}

Problem = tuple[str, str]  # (Slack error code, human-readable violation)


@dataclass
class SlackCall:
    """One request the fake received."""

    method: str  # e.g. "chat.postMessage", or "response_url:default"
    params: dict[str, Any]  # query + body params, `token` removed, JSON form values decoded
    token: str | None  # from "Authorization: Bearer ..." or a `token` param
    at: float  # time.monotonic() when received
    status: int = field(default=0, compare=False)  # HTTP status the fake answered
    response: Any = field(default=None, compare=False)  # the JSON (or text) body the fake answered


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    error: str | None
    remaining: int


@dataclass
class _Reply:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


class _SurfaceChecker:
    """Walks the blocks of one message or view and collects Slack-limit problems."""

    def __init__(self, where: str, error: str, action_id_scope: Literal["block", "surface"]) -> None:
        self.where = where
        self.error = error
        self.problems: list[Problem] = []
        self._per_block = action_id_scope == "block"
        self._block_ids: set[str] = set()
        self._action_ids: set[str] = set()

    def fail(self, path: str, detail: str, error: str | None = None) -> None:
        self.problems.append((error or self.error, f"{self.where}: {path} {detail}"))

    def max_len(self, path: str, value: Any, limit: int) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {type(value).__name__}")
        elif len(value) > limit:
            self.fail(path, f"is {len(value)} chars (Slack's max is {limit})")

    def max_items(self, path: str, value: Any, limit: int) -> bool:
        """False when `value` is not a list (already reported)."""
        if not isinstance(value, list):
            self.fail(path, f"must be a list, got {type(value).__name__}")
            return False
        if len(value) > limit:
            self.fail(path, f"has {len(value)} items (Slack's max is {limit})")
        return True

    def text_object(
        self, path: str, obj: Any, limit: int | None, *, plain_only: bool = False, required: bool = True
    ) -> None:
        if obj is None:
            if required:
                self.fail(path, "is required")
            return
        if not isinstance(obj, dict):
            self.fail(path, f"must be a text object, got {type(obj).__name__}")
            return
        kind = obj.get("type")
        if kind not in ("plain_text", "mrkdwn"):
            self.fail(f"{path}.type", f"is {kind!r}; a text object must be 'plain_text' or 'mrkdwn'")
        elif plain_only and kind != "plain_text":
            self.fail(f"{path}.type", "must be 'plain_text' here")
        text = obj.get("text")
        if not isinstance(text, str):
            self.fail(f"{path}.text", f"must be a string, got {type(text).__name__}")
        elif not text:
            self.fail(f"{path}.text", "must not be empty")
        elif limit is not None:
            self.max_len(f"{path}.text", text, limit)

    def blocks(self, path: str, blocks: Any, limit: int) -> None:
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                self.fail(path, "is a string that is not JSON")
                return
        if self.max_items(path, blocks, limit):
            for index, block in enumerate(blocks):
                self.block(f"{path}[{index}]", block)

    def block(self, path: str, block: Any) -> None:
        if not isinstance(block, dict):
            self.fail(path, f"must be an object, got {type(block).__name__}")
            return
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            self.fail(f"{path}.type", f"is an unknown block type {kind!r}")
            return
        block_id = block.get("block_id")
        if block_id is not None:
            self.max_len(f"{path}.block_id", block_id, 255)
            if isinstance(block_id, str):
                if block_id in self._block_ids:
                    self.fail(f"{path}.block_id", f"{block_id!r} is not unique within the {self._surface()}")
                self._block_ids.add(block_id)
        if self._per_block:
            self._action_ids = set()
        check: Callable[[str, dict[str, Any]], None] | None = getattr(self, f"_block_{kind}", None)
        if check is not None:
            check(path, block)

    def _surface(self) -> str:
        return "view" if self.where.startswith("views.") else "message"

    def _block_section(self, path: str, block: dict[str, Any]) -> None:
        if block.get("text") is None and block.get("fields") is None:
            self.fail(path, "needs `text` or `fields`")
        self.text_object(f"{path}.text", block.get("text"), 3000, required=False)
        fields = block.get("fields")
        if fields is not None and self.max_items(f"{path}.fields", fields, 10):
            for index, item in enumerate(fields):
                self.text_object(f"{path}.fields[{index}]", item, 2000)
        if block.get("accessory") is not None:
            self.element(f"{path}.accessory", block["accessory"])

    def _block_header(self, path: str, block: dict[str, Any]) -> None:
        self.text_object(f"{path}.text", block.get("text"), 150, plain_only=True)

    def _block_context(self, path: str, block: dict[str, Any]) -> None:
        elements = block.get("elements")
        if self.max_items(f"{path}.elements", elements, 10):
            for index, item in enumerate(elements):
                item_path = f"{path}.elements[{index}]"
                if isinstance(item, dict) and item.get("type") == "image":
                    self.element(item_path, item)
                else:
                    self.text_object(item_path, item, None)

    def _block_actions(self, path: str, block: dict[str, Any]) -> None:
        elements = block.get("elements")
        if self.max_items(f"{path}.elements", elements, 25):
            for index, item in enumerate(elements):
                self.element(f"{path}.elements[{index}]", item)

    def _block_input(self, path: str, block: dict[str, Any]) -> None:
        self.text_object(f"{path}.label", block.get("label"), 2000, plain_only=True)
        self.text_object(f"{path}.hint", block.get("hint"), 2000, plain_only=True, required=False)
        if block.get("element") is None:
            self.fail(f"{path}.element", "is required")
        else:
            self.element(f"{path}.element", block["element"])

    def _block_image(self, path: str, block: dict[str, Any]) -> None:
        self._image(path, block)
        self.text_object(f"{path}.title", block.get("title"), 2000, plain_only=True, required=False)

    def _block_markdown(self, path: str, block: dict[str, Any]) -> None:
        self.max_len(f"{path}.text", block.get("text"), 12000)

    def _image(self, path: str, obj: dict[str, Any]) -> None:
        if obj.get("image_url") is None and obj.get("slack_file") is None:
            self.fail(path, "needs `image_url` or `slack_file`")
        self.max_len(f"{path}.image_url", obj.get("image_url"), 3000)
        if obj.get("alt_text") is None:
            self.fail(f"{path}.alt_text", "is required")
        self.max_len(f"{path}.alt_text", obj.get("alt_text"), 2000)

    def element(self, path: str, element: Any) -> None:
        if not isinstance(element, dict):
            self.fail(path, f"must be an object, got {type(element).__name__}")
            return
        kind = element.get("type")
        if kind not in ELEMENT_TYPES:
            self.fail(f"{path}.type", f"is an unknown element type {kind!r}")
            return
        action_id = element.get("action_id")
        if action_id is not None:
            self.max_len(f"{path}.action_id", action_id, 255)
            if isinstance(action_id, str):
                if action_id in self._action_ids:
                    scope = "block" if self._per_block else self._surface()
                    self.fail(f"{path}.action_id", f"{action_id!r} is not unique within the {scope}")
                self._action_ids.add(action_id)
        if element.get("confirm") is not None:
            self.confirm(f"{path}.confirm", element["confirm"])
        if element.get("placeholder") is not None:
            self.text_object(f"{path}.placeholder", element["placeholder"], 150, plain_only=True)
        if kind == "button":
            self.text_object(f"{path}.text", element.get("text"), 75, plain_only=True)
            self.max_len(f"{path}.value", element.get("value"), 2000)
            self.max_len(f"{path}.url", element.get("url"), 3000)
            style = element.get("style")
            if style is not None and style not in ("primary", "danger"):
                self.fail(f"{path}.style", f"is {style!r}; Slack accepts 'primary' or 'danger'")
        elif kind == "image":
            self._image(path, element)
        elif kind == "plain_text_input":
            self._plain_text_input(path, element)
        if kind in OPTION_LIMITS or kind in ("external_select", "multi_external_select"):
            self._options(path, element, kind)

    def _plain_text_input(self, path: str, element: dict[str, Any]) -> None:
        max_length = element.get("max_length")
        for key in ("max_length", "min_length"):
            value = element.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                self.fail(f"{path}.{key}", f"must be an integer, got {type(value).__name__}")
            elif value > 3000:
                self.fail(f"{path}.{key}", f"is {value} (Slack's max is 3000)")
        limit = max_length if isinstance(max_length, int) and not isinstance(max_length, bool) else 3000
        initial = element.get("initial_value")
        if isinstance(initial, str) and len(initial) > min(limit, 3000):
            self.fail(f"{path}.initial_value", f"is {len(initial)} chars (max_length is {min(limit, 3000)})")
        elif initial is not None and not isinstance(initial, str):
            self.fail(f"{path}.initial_value", f"must be a string, got {type(initial).__name__}")

    def _options(self, path: str, element: dict[str, Any], kind: str) -> None:
        limit, plain_only = OPTION_LIMITS.get(kind, (100, True))
        options = element.get("options")
        if options is not None and self.max_items(f"{path}.options", options, limit):
            for index, option in enumerate(options):
                self.option(f"{path}.options[{index}]", option, plain_only)
        groups = element.get("option_groups")
        if groups is not None and self.max_items(f"{path}.option_groups", groups, 100):
            for index, group in enumerate(groups):
                group_path = f"{path}.option_groups[{index}]"
                if not isinstance(group, dict):
                    self.fail(group_path, "must be an object")
                    continue
                self.text_object(f"{group_path}.label", group.get("label"), 75, plain_only=True)
                if self.max_items(f"{group_path}.options", group.get("options"), 100):
                    for inner, option in enumerate(group["options"]):
                        self.option(f"{group_path}.options[{inner}]", option, plain_only)
        if element.get("initial_option") is not None:
            self.option(f"{path}.initial_option", element["initial_option"], plain_only)
        initial_options = element.get("initial_options")
        if initial_options is not None and self.max_items(f"{path}.initial_options", initial_options, limit):
            for index, option in enumerate(initial_options):
                self.option(f"{path}.initial_options[{index}]", option, plain_only)

    def option(self, path: str, option: Any, plain_only: bool) -> None:
        if not isinstance(option, dict):
            self.fail(path, f"must be an option object, got {type(option).__name__}")
            return
        self.text_object(f"{path}.text", option.get("text"), 75, plain_only=plain_only)
        if option.get("value") is None:
            self.fail(f"{path}.value", "is required")
        self.max_len(f"{path}.value", option.get("value"), 150)
        self.text_object(f"{path}.description", option.get("description"), 75, plain_only=True, required=False)
        self.max_len(f"{path}.url", option.get("url"), 3000)

    def confirm(self, path: str, confirm: Any) -> None:
        if not isinstance(confirm, dict):
            self.fail(path, f"must be a confirmation dialog object, got {type(confirm).__name__}")
            return
        self.text_object(f"{path}.title", confirm.get("title"), 100, plain_only=True)
        self.text_object(f"{path}.text", confirm.get("text"), 300)
        self.text_object(f"{path}.confirm", confirm.get("confirm"), 30, plain_only=True)
        self.text_object(f"{path}.deny", confirm.get("deny"), 30, plain_only=True)
        style = confirm.get("style")
        if style is not None and style not in ("primary", "danger"):
            self.fail(f"{path}.style", f"is {style!r}; Slack accepts 'primary' or 'danger'")


class FakeSlackApi:
    """A Slack Web API double on 127.0.0.1. Not started until `start()` (or `with FakeSlackApi() as fake:`)."""

    def __init__(self) -> None:
        self.calls: list[SlackCall] = []
        self.violations: list[str] = []
        # Slack documents action_id as unique "among all other action_ids in the containing block";
        # set to "surface" to demand uniqueness across the whole message / view.
        self.action_id_scope: Literal["block", "surface"] = "block"
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._messages: dict[str, str] = {}  # ts -> channel, for chat.update
        self._triggers: dict[str, float] = {}  # trigger_id -> monotonic time issued
        self._used_triggers: set[str] = set()
        self._views_by_external_id: dict[str, str] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._replies: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._delays: dict[str, float] = {}
        self.socket_mode_url: str | None = None  # what apps.connections.open answers

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Listen on 127.0.0.1 on a free port, serving from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeSlackApi is already started")
        fake = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body

            def do_POST(self) -> None:
                fake._serve(self)

            def do_GET(self) -> None:
                fake._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-slack-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeSlackApi:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        if self._server is None:
            raise RuntimeError("FakeSlackApi is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """What `AsyncWebClient(base_url=...)` takes."""
        return f"{self.url}/api/"

    # ------------------------------------------------------------------ test controls

    def calls_to(self, method: str) -> list[SlackCall]:
        """The recorded calls of `method`, in order."""
        with self._lock:
            return [call for call in self.calls if call.method == method]

    def response_url(self, name: str = "default") -> str:
        """A response_url whose POSTs are recorded as method `response_url:<name>`."""
        return f"{self.url}/response/{name}"

    def new_trigger_id(self) -> str:
        """A trigger_id views.open / views.push accept once, for 3 seconds from now."""
        with self._lock:
            trigger_id = f"{next(self._id_counter)}.{FIRST_TS}.{secrets.token_hex(8)}"
            self._triggers[trigger_id] = time.monotonic()
            return trigger_id

    def expire_triggers(self) -> None:
        """Make every trigger_id issued so far expired."""
        with self._lock:
            for trigger_id in self._triggers:
                self._triggers[trigger_id] = float("-inf")

    def fail_next(
        self, method: str, *, status: int = 429, retry_after: int | None = 1, error: str | None = None, times: int = 1
    ) -> None:
        """Answer the next `times` calls of `method` with HTTP `status` (429 sends Retry-After when given),
        or with {"ok": false, "error": error} when status is 200. These are not violations."""
        if status == 200 and not error:
            raise ValueError("fail_next with status 200 needs an `error`")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(status, retry_after, error, times))

    def delay(self, method: str, seconds: float) -> None:
        """Answer every later call of `method` only after `seconds` (0 to stop): a slow Slack."""
        with self._lock:
            self._delays[method] = seconds

    def set_replies(self, channel: str, ts: str, messages: list[dict[str, Any]]) -> None:
        """What conversations.replies returns for that thread."""
        with self._lock:
            self._replies[(channel, ts)] = list(messages)

    def set_usergroup_members(self, usergroup: str, users: list[str]) -> None:
        """What usergroups.users.list returns for that user group."""
        with self._lock:
            self._usergroups[usergroup] = list(users)

    def set_user(
        self, user_id: str, *, real_name: str = "", email: str | None = None, locale: str | None = None
    ) -> None:
        """What users.info answers for that user (`locale` only with include_locale, `email` as with the
        users:read.email scope); a user never set is `user_not_found`."""
        with self._lock:
            self._users[user_id] = {"real_name": real_name, "email": email, "locale": locale}

    def register_message(self, channel: str, ts: str | None = None) -> str:
        """Pretend the bot posted a message (so chat.update may target it); returns its ts."""
        with self._lock:
            ts = ts or self._next_ts()
            self._messages[ts] = channel
            return ts

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[SlackCall]:
        """Wait until `method` was called at least `count` times; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls_to(method)
            if len(calls) >= count:
                return calls
            if time.monotonic() >= deadline:
                with self._lock:
                    seen = [f"  {call.method} {_short(call.params)}" for call in self.calls]
                listing = "\n".join(seen) or "  (none)"
                raise AssertionError(
                    f"expected {count} call(s) of {method} within {timeout}s, got {len(calls)}; calls seen:\n{listing}"
                )
            await asyncio.sleep(0.02)

    def reset(self) -> None:
        """Forget recorded calls and violations."""
        with self._lock:
            self.calls.clear()
            self.violations.clear()

    # ------------------------------------------------------------------ HTTP plumbing

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        received = time.monotonic()
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if parts.path.startswith("/api/") and len(parts.path) > len("/api/"):
            method = parts.path[len("/api/") :]
        elif parts.path.startswith("/response/") and len(parts.path) > len("/response/"):
            method = f"response_url:{parts.path[len('/response/') :]}"
        else:
            self._send(handler, _Reply(404, "not found"))
            return
        with self._lock:
            delay = self._delays.get(method, 0.0)
        if delay:
            time.sleep(delay)  # this request's own thread: other calls are answered meanwhile
        with self._lock:
            params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
            problem: Problem | None = None
            try:
                params.update(_parse_body(body, handler.headers.get("Content-Type", "")))
            except ValueError as exc:
                error = "invalid_json" if "json" in handler.headers.get("Content-Type", "") else "invalid_form_data"
                problem = (error, f"{method}: unreadable request body ({exc})")
            token = _bearer(handler.headers.get("Authorization")) or params.get("token")
            params.pop("token", None)
            call = SlackCall(method=method, params=params, token=token, at=received)
            try:
                reply = self._answer(call, problem)
            except Exception as exc:  # a bug in the fake must not pass silently either
                self.violations.append(f"{method}: the fake crashed: {exc!r}")
                reply = _Reply(500, {"ok": False, "error": "fake_crashed"})
            call.status = reply.status
            call.response = reply.body
            self.calls.append(call)
        self._send(handler, reply)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: _Reply) -> None:
        if isinstance(reply.body, str):
            payload, content_type = reply.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(reply.body).encode(), "application/json; charset=utf-8"
        handler.send_response(reply.status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, call: SlackCall, problem: Problem | None) -> _Reply:
        is_response_url = call.method.startswith("response_url:")
        if problem is None and not is_response_url and not call.token:
            problem = ("not_authed", f"{call.method}: no token (Authorization: Bearer ... header or `token` param)")
        if problem is not None:
            return self._reject(call, [problem])
        failure = self._take_failure(call.method)
        if failure is not None:
            return failure
        if is_response_url:
            problems = self._check_message(call.method, call.params, require_text=False)
            return self._reject(call, problems) if problems else _Reply(200, "ok")
        handler = getattr(self, "_api_" + call.method.replace(".", "_"), None)
        if handler is None:
            return _Reply(200, {"ok": False, "error": "unknown_method"})
        result: dict[str, Any] | list[Problem] = handler(call.params)
        if isinstance(result, list):
            return self._reject(call, result)
        return _Reply(200, {"ok": True, **result})

    def _reject(self, call: SlackCall, problems: list[Problem]) -> _Reply:
        self.violations.extend(message for _, message in problems)
        error = problems[0][0]
        if call.method.startswith("response_url:"):
            return _Reply(400, error)
        return _Reply(200, {"ok": False, "error": error, "response_metadata": {"messages": [m for _, m in problems]}})

    def _take_failure(self, method: str) -> _Reply | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            queue.pop(0)
        if method.startswith("response_url:"):
            return _Reply(failure.status, failure.error or "fake_failure")
        headers: dict[str, str] = {}
        default_error = "internal_error"
        if failure.status == 429:
            default_error = "ratelimited"
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
        return _Reply(failure.status, {"ok": False, "error": failure.error or default_error}, headers)

    def _next_ts(self) -> str:
        n = next(self._ts_counter)
        return f"{FIRST_TS + n // 10000}.{(n % 10000) * 100:06d}"

    def _new_view_id(self) -> str:
        return f"V{next(self._id_counter):010d}"

    # ------------------------------------------------------------------ checks

    def _checker(self, where: str, error: str) -> _SurfaceChecker:
        return _SurfaceChecker(where, error, self.action_id_scope)

    def _check_message(self, method: str, params: dict[str, Any], *, require_text: bool = True) -> list[Problem]:
        checker = self._checker(method, "invalid_blocks")
        text = params.get("text")
        if text is not None:
            if not isinstance(text, str):
                checker.fail("text", f"must be a string, got {type(text).__name__}", "invalid_arguments")
            elif len(text) > 40_000:
                checker.fail("text", f"is {len(text)} chars (Slack's max is 40000)", "msg_too_long")
        if params.get("blocks") is not None:
            checker.blocks("blocks", params["blocks"], 50)
        attachments = params.get("attachments")
        if isinstance(attachments, list):
            for index, attachment in enumerate(attachments):
                if isinstance(attachment, dict) and attachment.get("blocks") is not None:
                    checker.blocks(f"attachments[{index}].blocks", attachment["blocks"], 50)
        if require_text and not (text or params.get("blocks") or attachments or params.get("markdown_text")):
            checker.fail("text", "is missing: a message needs text, blocks or attachments", "no_text")
        return checker.problems

    def _check_view(self, method: str, params: dict[str, Any], kinds: tuple[str, ...]) -> list[Problem]:
        checker = self._checker(method, "invalid_arguments")
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                checker.fail("view", "is a string that is not JSON")
                return checker.problems
        if not isinstance(view, dict):
            checker.fail("view", "is required (an object)")
            return checker.problems
        kind = view.get("type")
        if kind not in kinds:
            checker.fail("view.type", f"is {kind!r}; {method} takes {' or '.join(map(repr, kinds))}")
        if view.get("blocks") is None:
            checker.fail("view.blocks", "is required")
        else:
            checker.blocks("view.blocks", view["blocks"], 100)
        if kind == "modal":
            checker.text_object("view.title", view.get("title"), 24, plain_only=True)
            checker.text_object("view.submit", view.get("submit"), 24, plain_only=True, required=False)
            checker.text_object("view.close", view.get("close"), 24, plain_only=True, required=False)
            blocks = view.get("blocks")
            blocks = blocks if isinstance(blocks, list) else []
            has_input = any(isinstance(block, dict) and block.get("type") == "input" for block in blocks)
            if has_input and view.get("submit") is None:
                checker.fail("view.submit", "is required when the modal has input blocks")
        checker.max_len("view.private_metadata", view.get("private_metadata"), 3000)
        checker.max_len("view.callback_id", view.get("callback_id"), 255)
        checker.max_len("view.external_id", view.get("external_id"), 255)
        return checker.problems

    def _check_trigger(self, method: str, params: dict[str, Any]) -> list[Problem]:
        trigger_id = params.get("trigger_id") or params.get("interactivity_pointer")
        if not trigger_id:
            return [("invalid_arguments", f"{method}: trigger_id is required")]
        issued = self._triggers.get(trigger_id)
        if issued is None:
            return [("expired_trigger_id", f"{method}: trigger_id {trigger_id!r} was never issued by this server")]
        age = time.monotonic() - issued
        if age > TRIGGER_TTL:
            return [
                ("expired_trigger_id", f"{method}: trigger_id {trigger_id!r} is expired (older than {TRIGGER_TTL:g} s)")
            ]
        if trigger_id in self._used_triggers:
            return [("exchanged_trigger_id", f"{method}: trigger_id {trigger_id!r} was already used")]
        return []

    @staticmethod
    def _require(method: str, params: dict[str, Any], *names: str) -> list[Problem]:
        return [("invalid_arguments", f"{method}: `{name}` is required") for name in names if not params.get(name)]

    # ------------------------------------------------------------------ Web API methods

    def _api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        # Socket Mode: the WebSocket URL to connect to (a test serves it; see test_slack_socket_mode.py)
        if not self.socket_mode_url:
            return [("invalid_auth", "apps.connections.open: no socket_mode_url set on the fake")]
        return {"url": self.socket_mode_url}

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(AUTH_TEST)

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._require("chat.postMessage", params, "channel") + self._check_message(
            "chat.postMessage", params
        )
        if problems:
            return problems
        ts = self._next_ts()
        channel = params["channel"]
        self._messages[ts] = channel
        message: dict[str, Any] = {"type": "message", "user": "UBOT", "bot_id": "BBOT", "ts": ts}
        message["text"] = params.get("text", "")
        for key in ("blocks", "attachments", "thread_ts", "metadata"):
            if params.get(key) is not None:
                message[key] = _as_object(params[key]) if key in FORM_JSON_KEYS else params[key]
        return {"channel": channel, "ts": ts, "message": message}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._require("chat.update", params, "channel", "ts") + self._check_message("chat.update", params)
        if problems:
            return problems
        channel, ts = params["channel"], params["ts"]
        if self._messages.get(ts) != channel:
            where = f"in {self._messages[ts]}" if ts in self._messages else "never posted through this server"
            return [("message_not_found", f"chat.update: message {channel}/{ts} not found ({ts} is {where})")]
        return {"channel": channel, "ts": ts, "text": params.get("text", "")}

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._require("chat.postEphemeral", params, "channel", "user") + self._check_message(
            "chat.postEphemeral", params
        )
        if problems:
            return problems
        return {"message_ts": self._next_ts()}

    def _api_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._require("chat.getPermalink", params, "channel", "message_ts")
        if problems:
            return problems
        channel, ts = params["channel"], str(params["message_ts"])
        return {"channel": channel, "permalink": f"https://fake.slack.com/archives/{channel}/p{ts.replace('.', '')}"}

    def _open_view(self, method: str, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._check_trigger(method, params) + self._check_view(method, params, ("modal",))
        if problems:
            return problems
        self._used_triggers.add(params.get("trigger_id") or params["interactivity_pointer"])
        view = _as_object(params["view"])
        view_id = self._new_view_id()
        if view.get("external_id"):
            self._views_by_external_id[view["external_id"]] = view_id
        return {"view": self._view_answer(view, view_id)}

    def _view_answer(self, view: dict[str, Any], view_id: str) -> dict[str, Any]:
        return {**view, "id": view_id, "team_id": "T0001", "bot_id": "BBOT", "hash": f"h{secrets.token_hex(6)}"}

    def _api_views_open(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        return self._open_view("views.open", params)

    def _api_views_push(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        return self._open_view("views.push", params)

    def _api_views_update(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._check_view("views.update", params, ("modal", "home"))
        if not params.get("view_id") and not params.get("external_id"):
            problems.insert(0, ("invalid_arguments", "views.update: `view_id` or `external_id` is required"))
        if problems:
            return problems
        view_id = params.get("view_id") or self._views_by_external_id.setdefault(
            params["external_id"], self._new_view_id()
        )
        return {"view": self._view_answer(_as_object(params["view"]), view_id)}

    def _api_views_publish(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._require("views.publish", params, "user_id") + self._check_view(
            "views.publish", params, ("home",)
        )
        if problems:
            return problems
        return {"view": self._view_answer(_as_object(params["view"]), self._new_view_id())}

    def _api_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._require("conversations.replies", params, "channel", "ts")
        if problems:
            return problems
        messages = self._replies.get((params["channel"], str(params["ts"])), [])
        return {"messages": [dict(message) for message in messages], "has_more": False}

    def _api_conversations_open(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        users = params.get("users")
        if isinstance(users, list):
            users = ",".join(users)
        if not users and params.get("channel"):
            return {"channel": {"id": params["channel"]}}
        if not isinstance(users, str) or not users:
            return [("invalid_arguments", "conversations.open: `users` (comma-separated ids) or `channel` is required")]
        return {"channel": {"id": "D" + users.split(",")[0].strip()}}

    def _api_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._require("usergroups.users.list", params, "usergroup")
        if problems:
            return problems
        return {"users": list(self._usergroups.get(params["usergroup"], []))}

    def _api_users_info(self, params: dict[str, Any]) -> dict[str, Any] | list[Problem]:
        problems = self._require("users.info", params, "user")
        if problems:
            return problems
        known = self._users.get(params["user"])
        if known is None:  # what Slack answers; not a mistake of the caller (no violation)
            return {"ok": False, "error": "user_not_found"}
        profile: dict[str, Any] = {"real_name": known["real_name"], "display_name": ""}
        if known["email"]:
            profile["email"] = known["email"]
        user: dict[str, Any] = {"id": params["user"], "name": known["real_name"].lower(), "profile": profile}
        user["real_name"] = known["real_name"]
        if str(params.get("include_locale", "")).lower() in ("true", "1") and known["locale"]:
            user["locale"] = known["locale"]
        return {"user": user}


def _as_object(value: Any) -> Any:
    """A JSON-string parameter decoded (callers validated it first)."""
    return json.loads(value) if isinstance(value, str) else value


def _short(params: dict[str, Any]) -> str:
    text = json.dumps(params, ensure_ascii=False, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip()
    return None


def _parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """JSON as-is; form (urlencoded or multipart) values as strings, JSON-valued ones decoded."""
    if not body:
        return {}
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("a JSON body must be an object")
        return data
    if kind == "multipart/form-data":
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        form = {
            part.get_param("name", header="content-disposition"): (part.get_payload(decode=True) or b"").decode()
            for part in message.iter_parts()
        }
    elif kind in ("application/x-www-form-urlencoded", ""):
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    else:
        raise ValueError(f"unsupported Content-Type {content_type!r}")
    return {key: _decode_form_value(key, value) for key, value in form.items()}


def _decode_form_value(key: str, value: str) -> Any:
    if key in FORM_JSON_KEYS and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@pytest.fixture
def slack_api() -> Iterator[FakeSlackApi]:
    """A started FakeSlackApi; the test fails at teardown if any call broke Slack's limits."""
    fake = FakeSlackApi()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    if fake.violations:
        listing = "\n".join(f"  - {violation}" for violation in fake.violations)
        pytest.fail(f"{len(fake.violations)} Slack API violation(s):\n{listing}", pytrace=False)
