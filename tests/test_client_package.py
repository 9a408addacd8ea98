"""The standalone client package (client/, `autotrain_client`): render() on the shipped files, one bucketing
shared with the server, the HTTP mode against a loopback stand-in of the rule-set endpoints (ETags, a copy on
disk, Auto-Train down, a hanging server), and — in a fresh virtual environment holding nothing but the client
— that it imports only the standard library and reads a real `autotrain serve` across its restarts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import autotrain.client
import autotrain.rollout
import autotrain_client
import autotrain_client.rollout
from autotrain.rulefiles import content_version as server_content_version
from autotrain_client import RuleBook, RuleFileInvalid, applicable_rules, content_version, render_content
from tests.conftest import NEW_WEATHER_RULE, OLD_WEATHER_RULE, SHIPPED_RULES, WEATHER_FEEDBACK
from tests.serve_process import free_port, subprocess_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_DIR = REPO_ROOT / "client"
JSON_FILE = "fashion_rules.json"
TEXT_FILE = "prompt_v2.txt"
MARKDOWN_FILE = "stylist_guidelines.md"
SHIPPED = (JSON_FILE, TEXT_FILE, MARKDOWN_FILE)
USERS = [f"user-{n}" for n in range(400)]
CANARY_ID = "RUL-2001"


def shipped_text(module_name: str) -> str:
    return (SHIPPED_RULES / module_name).read_text("utf-8")


def shipped_json_rules() -> list[str]:
    return [entry["rule"] for entry in json.loads(shipped_text(JSON_FILE))["rules"]]


def canary_json(percent: int = 30) -> str:
    """The shipped JSON file after a canary deploy replacing OLD_WEATHER_RULE."""
    entries: list[dict[str, Any]] = [{"rule": line} for line in shipped_json_rules()]
    at = [entry["rule"] for entry in entries].index(OLD_WEATHER_RULE) + 1
    canary = {"rule": NEW_WEATHER_RULE, "rule_id": CANARY_ID, "rollout_percent": percent, "replaces": OLD_WEATHER_RULE}
    entries.insert(at, canary)
    return json.dumps({"version": 2, "rules": entries}, ensure_ascii=False, indent=2) + "\n"


def wait_until(condition: Callable[[], bool], seconds: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        time.sleep(0.02)


# ---------------------------------------------------------------------- one implementation, server and client


def test_the_server_buckets_with_the_clients_implementation() -> None:
    assert autotrain.rollout.in_rollout is autotrain_client.rollout.in_rollout
    assert autotrain.rollout.bucket is autotrain_client.rollout.bucket
    assert autotrain.rollout.FULL_ROLLOUT == autotrain_client.rollout.FULL_ROLLOUT == 100
    assert autotrain.client.RuleBook is autotrain_client.RuleBook  # the old import path still works
    assert Path(autotrain_client.__file__).is_relative_to(CLIENT_DIR)


@pytest.mark.parametrize("module_name", SHIPPED)
def test_version_is_the_servers_content_version(module_name: str) -> None:
    content = (SHIPPED_RULES / module_name).read_bytes()
    assert RuleBook(SHIPPED_RULES).version(module_name) == content_version(content) == server_content_version(content)
    assert RuleBook(SHIPPED_RULES).version("not_there.json") is None


# ---------------------------------------------------------------------- render() on the shipped files


@pytest.mark.parametrize("module_name", [TEXT_FILE, MARKDOWN_FILE])
def test_render_of_a_shipped_text_file_is_the_whole_file(module_name: str) -> None:
    book = RuleBook.from_folder(SHIPPED_RULES)
    text = shipped_text(module_name)
    for user in USERS[:50]:
        assert book.render(module_name, user) == text  # no canaries in text files: headers, prose and every rule
    rule_lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert book.rules_for(module_name, "u") == rule_lines
    assert render_content(module_name, text.encode(), "u") == text


def test_render_of_the_markdown_file_keeps_headers_and_blank_lines() -> None:
    rendered = RuleBook(SHIPPED_RULES).render(MARKDOWN_FILE, "user-1")
    assert rendered.startswith("# Hướng dẫn stylist\n\nNhững nguyên tắc")
    assert "\n\n## Vóc dáng\n\n- Gợi ý kiểu dáng" in rendered
    assert rendered.endswith("- Phối tối đa 3 màu trong một bộ trang phục\n")


def test_render_of_the_shipped_json_file_is_its_rule_lines() -> None:
    book = RuleBook(SHIPPED_RULES)
    expected = "\n".join(shipped_json_rules())
    assert len(shipped_json_rules()) == 6
    for user in USERS[:50]:
        assert book.render(JSON_FILE, user) == expected
    assert not expected.endswith("\n") and "{" not in expected


def test_render_of_a_canary_gives_each_user_their_variant(rules_dir: Path) -> None:
    (rules_dir / JSON_FILE).write_text(canary_json(30), "utf-8")
    book = RuleBook(rules_dir)
    inside = [user for user in USERS if autotrain.rollout.in_rollout(CANARY_ID, user, 30)]
    outside = [user for user in USERS if user not in inside]
    assert inside and outside
    for user in USERS:
        rendered = book.render(JSON_FILE, user)
        assert rendered == "\n".join(book.rules_for(JSON_FILE, user))
        assert (NEW_WEATHER_RULE in rendered) is (user in inside)
        assert (OLD_WEATHER_RULE in rendered) is (user not in inside)
    assert render_content(JSON_FILE, canary_json(30).encode(), None) == "\n".join(book.all_rules(JSON_FILE))


def test_render_keeps_line_endings_and_drops_a_byte_order_mark() -> None:
    content = "\ufeff# Title\r\n\r\n- one\r\nprose\r\n- two".encode()
    assert render_content("x.md", content, "u") == "# Title\r\n\r\n- one\r\nprose\r\n- two"
    assert applicable_rules("x.md", content, "u") == [
        {"rule": "- one", "rule_id": None, "rollout_percent": None, "replaces": None},
        {"rule": "- two", "rule_id": None, "rollout_percent": None, "replaces": None},
    ]


# ---------------------------------------------------------------------- the server's ?user_id= view


def test_applicable_rules_without_a_user_lists_every_entry_with_who_gets_it() -> None:
    rules = applicable_rules(JSON_FILE, canary_json(30).encode(), None)
    assert [rule["rule"] for rule in rules] == [
        *shipped_json_rules()[:2],
        NEW_WEATHER_RULE,
        *shipped_json_rules()[2:],
    ]
    canary = rules[2]
    assert canary == {
        "rule": NEW_WEATHER_RULE,
        "rule_id": CANARY_ID,
        "rollout_percent": 30,
        "replaces": OLD_WEATHER_RULE,
    }
    everyone = {"rule_id": None, "rollout_percent": None, "replaces": None}
    assert all(rule == {"rule": rule["rule"], **everyone} for rule in rules if rule is not canary)


def test_applicable_rules_for_a_user_are_what_the_rulebook_gives_them(rules_dir: Path) -> None:
    content = canary_json(30).encode()
    (rules_dir / JSON_FILE).write_bytes(content)
    book = RuleBook(rules_dir)
    for user in USERS:
        assert [rule["rule"] for rule in applicable_rules(JSON_FILE, content, user)] == book.rules_for(JSON_FILE, user)


def test_applicable_rules_reports_a_malformed_rollout_as_reaching_nobody() -> None:
    content = json.dumps({"version": 1, "rules": [{"rule": "- a"}, {"rule": "- b", "rollout_percent": "ten"}]})
    rules = applicable_rules(JSON_FILE, content.encode(), None)
    assert rules[1]["rollout_percent"] == 0
    assert applicable_rules(JSON_FILE, content.encode(), "user-1") == rules[:1]


@pytest.mark.parametrize(
    ("module_name", "content"),
    [(JSON_FILE, b'{"rules": [{"rule": "- half'), (JSON_FILE, b'{"rules": "x"}'), (TEXT_FILE, b"- a\n\xff\n")],
)
def test_content_that_does_not_parse_raises_rule_file_invalid(module_name: str, content: bytes) -> None:
    with pytest.raises(RuleFileInvalid):
        applicable_rules(module_name, content, None)
    with pytest.raises(ValueError):  # RuleFileInvalid is a ValueError
        render_content(module_name, content, "u")


# ---------------------------------------------------------------------- over HTTP: a loopback stand-in


TOKEN = "reporter-token"


@dataclass
class FakeAutotrain:
    """The rule-set endpoints as the contract describes them, on loopback; `stop()` / `start()` keep the port."""

    files: dict[str, str]
    port: int = field(default_factory=free_port)
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # (path, If-None-Match, status)
    override: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # path -> (status, body)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def etag(self, module_name: str) -> str:
        return f'"{content_version(self.files[module_name].encode())}"'

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body, headers = fake.answer(self.path, dict(self.headers.items()))
                fake.requests.append((self.path, self.headers.get("If-None-Match"), status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if path in self.override:
            status, body = self.override[path]
            return status, body, {"Content-Type": "application/json"}
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, b'{"error": {"code": "unauthorized", "message": "missing or invalid token"}}', {}
        if path == "/autotrain/rulesets":
            items = [
                {
                    "module_name": name,
                    "version": self.etag(name).strip('"'),
                    "etag": self.etag(name),
                    "updated_at": None,
                }
                for name in self.files
            ]
            return 200, json.dumps({"items": items}).encode(), {"Content-Type": "application/json"}
        module_name = path.removeprefix("/autotrain/rulesets/")
        if module_name not in self.files:
            return 404, b'{"error": {"code": "not_found", "message": "no such rule set"}}', {}
        etag = self.etag(module_name)
        if headers.get("If-None-Match") == etag:
            return 304, b"", {"ETag": etag}
        content = self.files[module_name]
        body = {
            "module_name": module_name,
            "version": etag.strip('"'),
            "etag": etag,
            "format": "json" if module_name.endswith(".json") else "text",
            "content": content,
            "rules": applicable_rules(module_name, content.encode(), None),
        }
        return 200, json.dumps(body).encode(), {"Content-Type": "application/json", "ETag": etag}

    def module_gets(self) -> list[tuple[str, str | None, int]]:
        return [request for request in self.requests if request[0].startswith("/autotrain/rulesets/")]


@pytest.fixture
def fake_autotrain() -> Iterator[FakeAutotrain]:
    fake = FakeAutotrain({name: shipped_text(name) for name in SHIPPED})
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def books() -> Iterator[list[RuleBook]]:
    """RuleBooks a test opens over HTTP, closed after it (their threads stopped)."""
    opened: list[RuleBook] = []
    yield opened
    for book in opened:
        book.close()


def open_book(books: list[RuleBook], base_url: str, cache_dir: Path, **options: Any) -> RuleBook:
    book = RuleBook.from_url(base_url, TOKEN, cache_dir=cache_dir, **{"refresh_seconds": 60.0, **options})
    books.append(book)
    return book


def test_over_http_answers_as_from_the_folder(fake_autotrain: FakeAutotrain, books: list, tmp_path: Path) -> None:
    book = open_book(books, fake_autotrain.base_url, tmp_path / "cache")
    folder = RuleBook(SHIPPED_RULES)
    for module_name in SHIPPED:
        assert book.version(module_name) == folder.version(module_name)
        assert book.all_rules(module_name) == folder.all_rules(module_name)
        for user in USERS[:20]:
            assert book.rules_for(module_name, user) == folder.rules_for(module_name, user)
            assert book.render(module_name, user) == folder.render(module_name, user)
    assert book.rules_for("not_there.json", "u") == [] and book.render("not_there.json", "u") == ""
    assert book.version("not_there.json") is None
    with pytest.raises(ValueError):
        book.rules_for("../x", "u")
    assert book.rules_dir is None and "127.0.0.1" in repr(book)


def test_a_canary_over_http_buckets_like_the_folder(fake_autotrain: FakeAutotrain, books: list, tmp_path: Path) -> None:
    fake_autotrain.files[JSON_FILE] = canary_json(30)
    book = open_book(books, fake_autotrain.base_url, tmp_path / "cache")
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / JSON_FILE).write_text(canary_json(30), "utf-8")
    folder = RuleBook(rules_dir)
    assert any(NEW_WEATHER_RULE in book.rules_for(JSON_FILE, user) for user in USERS)
    for user in USERS:
        assert book.rules_for(JSON_FILE, user) == folder.rules_for(JSON_FILE, user)


def test_refresh_is_conditional_and_sees_a_change(fake_autotrain: FakeAutotrain, books: list, tmp_path: Path) -> None:
    book = open_book(books, fake_autotrain.base_url, tmp_path / "cache")
    assert len(fake_autotrain.module_gets()) == 3
    assert all(if_none_match is None and status == 200 for _, if_none_match, status in fake_autotrain.module_gets())

    assert book.refresh_now() is True  # the list says nothing changed: no rule set fetched again
    assert len(fake_autotrain.module_gets()) == 3

    fake_autotrain.files[JSON_FILE] = canary_json(100)
    old_etag = f'"{content_version(shipped_text(JSON_FILE).encode())}"'
    assert book.refresh_now() is True
    assert fake_autotrain.module_gets()[3:] == [(f"/autotrain/rulesets/{JSON_FILE}", old_etag, 200)]
    assert NEW_WEATHER_RULE in book.rules_for(JSON_FILE, "user-1")
    assert book.version(JSON_FILE) == content_version(canary_json(100).encode())


def test_a_known_list_of_modules_is_fetched_directly_with_if_none_match(
    fake_autotrain: FakeAutotrain, books: list, tmp_path: Path
) -> None:
    book = open_book(books, fake_autotrain.base_url, tmp_path / "cache", modules=[JSON_FILE])
    assert book.refresh_now() is True
    assert not any(path == "/autotrain/rulesets" for path, _, _ in fake_autotrain.requests)
    assert fake_autotrain.requests == [
        (f"/autotrain/rulesets/{JSON_FILE}", None, 200),
        (f"/autotrain/rulesets/{JSON_FILE}", fake_autotrain.etag(JSON_FILE), 304),
    ]
    assert book.rules_for(JSON_FILE, "u") == shipped_json_rules()
    assert book.rules_for(TEXT_FILE, "u") == []  # not asked for


def test_the_background_thread_sees_a_deploy(fake_autotrain: FakeAutotrain, books: list, tmp_path: Path) -> None:
    book = open_book(books, fake_autotrain.base_url, tmp_path / "cache", refresh_seconds=0.05)
    fake_autotrain.files[JSON_FILE] = canary_json(100)
    wait_until(lambda: NEW_WEATHER_RULE in book.rules_for(JSON_FILE, "user-1"), what="the background refresh")
    book.close()
    name = f"autotrain-client {fake_autotrain.base_url}"
    assert not any(thread.name == name and thread.is_alive() for thread in threading.enumerate())
    count = len(fake_autotrain.requests)
    time.sleep(0.2)
    assert len(fake_autotrain.requests) == count  # closed: no more fetches
    assert NEW_WEATHER_RULE in book.rules_for(JSON_FILE, "user-1")  # still readable


def test_autotrain_down_keeps_the_last_copy_also_after_a_restart(
    fake_autotrain: FakeAutotrain, books: list, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir = tmp_path / "cache"
    fake_autotrain.files[JSON_FILE] = canary_json(30)
    book = open_book(books, fake_autotrain.base_url, cache_dir)
    before = {user: book.rules_for(JSON_FILE, user) for user in USERS}
    assert sorted(path.name for path in cache_dir.iterdir()) == sorted(f"{name}.ruleset.json" for name in SHIPPED)

    fake_autotrain.stop()
    with caplog.at_level(logging.INFO, logger="autotrain_client"):
        assert book.refresh_now() is False
        assert book.refresh_now() is False
        assert {user: book.rules_for(JSON_FILE, user) for user in USERS} == before
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once, not at every refresh
    assert fake_autotrain.base_url in warnings[0] and "keeping the last copy" in warnings[0]

    # the chatbot restarts while Auto-Train is still down: the copy on disk, at once
    started = time.monotonic()
    again = open_book(books, fake_autotrain.base_url, cache_dir)
    assert time.monotonic() - started < 1
    assert {user: again.rules_for(JSON_FILE, user) for user in USERS} == before
    assert again.render(TEXT_FILE, "u") == shipped_text(TEXT_FILE)
    assert again.version(JSON_FILE) == content_version(canary_json(30).encode())

    # Auto-Train is back with a deploy: seen, and a copy of it kept
    assert again.refresh_now() is False
    fake_autotrain.files[JSON_FILE] = canary_json(100)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="autotrain_client"):
        fake_autotrain.start()
        assert again.refresh_now() is True
    assert any("refreshed again" in record.getMessage() for record in caplog.records)
    assert all(NEW_WEATHER_RULE in again.rules_for(JSON_FILE, user) for user in USERS)
    saved = json.loads((cache_dir / f"{JSON_FILE}.ruleset.json").read_text("utf-8"))
    assert saved["content"] == canary_json(100) and saved["etag"] == fake_autotrain.etag(JSON_FILE)
    assert not [path for path in cache_dir.iterdir() if path.name.endswith(".tmp")]


def test_first_start_with_autotrain_down_has_no_rules_and_does_not_raise(tmp_path: Path, books: list) -> None:
    port = free_port()  # nothing listens there
    book = open_book(books, f"http://127.0.0.1:{port}", tmp_path / "cache")
    assert book.rules_for(JSON_FILE, "u") == [] and book.render(TEXT_FILE, "u") == ""
    assert book.refresh_now() is False


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/autotrain/rulesets", 500, b"Internal Server Error"),
        ("/autotrain/rulesets", 200, b"<html>a proxy's page</html>"),
        ("/autotrain/rulesets", 200, b'{"no_items": []}'),
        (f"/autotrain/rulesets/{JSON_FILE}", 200, b'{"content": 5, "version": "x"}'),
        (f"/autotrain/rulesets/{JSON_FILE}", 200, json.dumps({"content": "{broken", "version": "v9"}).encode()),
        (f"/autotrain/rulesets/{JSON_FILE}", 404, b'{"error": {"code": "not_found", "message": "gone"}}'),
    ],
)
def test_a_bad_answer_keeps_the_last_copy(
    fake_autotrain: FakeAutotrain, books: list, tmp_path: Path, path: str, status: int, body: bytes
) -> None:
    book = open_book(books, fake_autotrain.base_url, tmp_path / "cache")
    fake_autotrain.files[JSON_FILE] = canary_json(100)  # a change, so the rule set is fetched again
    fake_autotrain.override[path] = (status, body)
    assert book.refresh_now() is False
    assert book.rules_for(JSON_FILE, "user-1") == shipped_json_rules()
    assert book.rules_for(TEXT_FILE, "user-1") == RuleBook(SHIPPED_RULES).rules_for(TEXT_FILE, "user-1")
    del fake_autotrain.override[path]
    assert book.refresh_now() is True
    assert NEW_WEATHER_RULE in book.rules_for(JSON_FILE, "user-1")


def test_a_wrong_token_is_logged_not_raised(
    fake_autotrain: FakeAutotrain, books: list, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="autotrain_client"):
        book = RuleBook.from_url(fake_autotrain.base_url, "wrong", cache_dir=tmp_path / "cache")
        books.append(book)
    assert book.rules_for(JSON_FILE, "u") == []
    assert any("HTTP 401 unauthorized" in record.getMessage() for record in caplog.records)


def test_a_hanging_autotrain_never_blocks_the_request_path(
    fake_autotrain: FakeAutotrain, books: list, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    open_book(books, fake_autotrain.base_url, cache_dir).close()  # a copy on disk
    with socket.socket() as hanging:  # accepts connections (the backlog) and never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(16)
        url = f"http://127.0.0.1:{hanging.getsockname()[1]}"
        book = open_book(books, url, cache_dir, refresh_seconds=0.05, timeout_seconds=0.5)
        time.sleep(0.1)  # the background fetch is now waiting for an answer
        started = time.monotonic()
        for user in USERS:
            assert book.rules_for(JSON_FILE, user) == shipped_json_rules()
        assert time.monotonic() - started < 0.4
        started = time.monotonic()
        assert book.refresh_now() is False  # waits for the background fetch, then its own: each bounded
        assert time.monotonic() - started < 3


def test_an_unwritable_cache_dir_still_serves_the_rules(
    fake_autotrain: FakeAutotrain, books: list, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    book = open_book(books, fake_autotrain.base_url, not_a_folder / "cache")
    assert book.rules_for(JSON_FILE, "u") == shipped_json_rules()


def test_readers_in_threads_during_background_refreshes(
    fake_autotrain: FakeAutotrain, books: list, tmp_path: Path
) -> None:
    versions = [canary_json(percent) for percent in (0, 30, 60, 100)]
    allowed = {JSON_FILE: set()}
    for content in versions:
        (tmp_path / JSON_FILE).write_text(content, "utf-8")
        allowed[JSON_FILE].add(tuple(RuleBook(tmp_path).rules_for(JSON_FILE, "user-7")))
    fake_autotrain.files[JSON_FILE] = versions[0]
    book = open_book(books, fake_autotrain.base_url, tmp_path / "cache", refresh_seconds=0.01)
    seen: list[tuple[str, ...]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(tuple(book.rules_for(JSON_FILE, "user-7")))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for content in versions[1:] * 3 + versions[-1:]:
        fake_autotrain.files[JSON_FILE] = content
        time.sleep(0.05)
    stop.set()
    for thread in readers:
        thread.join()
    assert seen and set(seen) <= allowed[JSON_FILE]
    wait_until(lambda: book.version(JSON_FILE) == content_version(versions[-1].encode()))


def test_the_readmes_example_runs(fake_autotrain: FakeAutotrain, tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text("utf-8")
    example = readme.split("## Connect your chatbot", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    example = example.replace("http://autotrain:8000", fake_autotrain.base_url)
    example = example.replace("/var/cache/chatbot-rules", str(tmp_path / "cache"))
    namespace: dict[str, Any] = {"REPORTER_TOKEN": TOKEN, "user_id": "user-1"}
    exec(compile(example, "README.md", "exec"), namespace)
    try:
        assert namespace["system_prompt"] == shipped_text(TEXT_FILE)
        assert namespace["fashion_rules"] == shipped_json_rules()
    finally:
        namespace["rules"].close()


# ---------------------------------------------------------------------- a fresh virtual environment


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv with nothing but `pip install --no-deps ./client` (from a copy of client/,
    so a build leaves nothing in the checkout)."""
    root = tmp_path_factory.mktemp("client-venv")
    source = root / "client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    # The setuptools a venv brings builds the package offline when it can make wheels itself (70.1 and later,
    # or with `wheel` beside it); else pip fetches a build backend from the package index, as for any user.
    can_build = subprocess.run(
        [str(python), "-c", "import setuptools, sys; from setuptools.command import bdist_wheel"],
        capture_output=True,
    ).returncode == 0 or (
        subprocess.run([str(python), "-c", "import setuptools, wheel"], capture_output=True).returncode == 0
    )
    command = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check"]
    command += ["--no-build-isolation"] if can_build else []
    done = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def run_in(python: Path, script: str, *args: str, cwd: Path, timeout: float = 60) -> str:
    """Run `script` in that python, isolated (-I: no PYTHONPATH, no user site, not the script's folder), in
    an environment without this venv's settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(python), "-I", "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


IMPORTS_SCRIPT = """
import json, sys
before = set(sys.modules)
import autotrain_client
from autotrain_client import RuleBook
folder = RuleBook(sys.argv[1])
rendered = folder.render("stylist_guidelines.md", "u-1")
over_http = RuleBook.from_url("http://127.0.0.1:9", "t", cache_dir=sys.argv[2], timeout_seconds=0.5)
over_http.rules_for("fashion_rules.json", "u-1")
over_http.refresh_now()
over_http.close()
new = sorted(set(sys.modules) - before)
import importlib.metadata as metadata
print(json.dumps({
    "file": autotrain_client.__file__,
    "not_stdlib": [m for m in new if m.split(".")[0] not in sys.stdlib_module_names],
    "requires": metadata.requires("autotrain-client"),
    "version": metadata.version("autotrain-client"),
    "rendered": rendered,
}))
"""


def test_the_client_installs_alone_and_imports_only_the_standard_library(client_python: Path, tmp_path: Path) -> None:
    out = json.loads(run_in(client_python, IMPORTS_SCRIPT, str(SHIPPED_RULES), str(tmp_path / "c"), cwd=tmp_path))
    assert Path(out["file"]).is_relative_to(client_python.parent.parent)  # the installed copy, not the checkout
    assert {name.split(".")[0] for name in out["not_stdlib"]} == {"autotrain_client"}
    assert out["requires"] is None  # zero runtime dependencies
    assert out["version"] == "0.1.0"
    assert out["rendered"] == shipped_text(MARKDOWN_FILE)
    for absent in ("autotrain", "pydantic", "httpx"):  # the server is not there to lean on
        found = run_in(
            client_python, f"import importlib.util; print(importlib.util.find_spec({absent!r}))", cwd=tmp_path
        )
        assert found.strip() == "None", absent


# ---------------------------------------------------------------------- against a real `autotrain serve`

ENDPOINTS_MISSING = "/rulesets" not in (REPO_ROOT / "bot" / "api.py").read_text("utf-8")

DRIVER_SCRIPT = """
import json, logging, sys
from autotrain_client import RuleBook
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
base_url, token, cache_dir, modules = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
book = RuleBook.from_url(base_url, token, cache_dir=cache_dir, refresh_seconds=0.3, timeout_seconds=2, modules=modules)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    call = json.loads(line)
    op = call.pop("op")
    if op == "rules":
        result = {user: book.rules_for(call["module"], user) for user in call["users"]}
    elif op == "render":
        result = book.render(call["module"], call["user"])
    elif op == "version":
        result = book.version(call["module"])
    elif op == "refresh":
        result = book.refresh_now()
    print(json.dumps({"result": result}), flush=True)
book.close()
"""


class ChatbotProcess:
    """A chatbot's process holding a RuleBook over HTTP, in the fresh venv, driven over stdin/stdout."""

    def __init__(self, python: Path, base_url: str, token: str, cache_dir: Path, log: Path, modules=None) -> None:
        self.log = log
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.process = subprocess.Popen(
            [str(python), "-I", "-c", DRIVER_SCRIPT, base_url, token, str(cache_dir), json.dumps(modules)],
            cwd=cache_dir.parent,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("a"),
            text=True,
        )
        self.started = time.monotonic()
        assert self._read(timeout=30) == {"ready": True}
        self.startup_seconds = time.monotonic() - self.started

    def _read(self, timeout: float = 30) -> Any:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise AssertionError("the chatbot process did not answer:\n" + self.log.read_text(errors="replace"))
        return json.loads(line)

    def call(self, op: str, **args: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        return self._read()["result"]

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def autotrain_serve(workdir: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """`autotrain serve` on a given port (so a restarted one answers where the chatbot looks), stopped after."""
    with open(workdir / "serve.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("autotrain serve did not start:\n" + (workdir / "serve.log").read_text("utf-8"))
            time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def mint(workdir: Path, env: dict[str, str], role: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "token", "--role", role],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def server_rules(http: httpx.Client, module_name: str, user: str) -> list[str]:
    """The server's `?user_id=` view of one rule set."""
    answer = http.get(f"/autotrain/rulesets/{module_name}", params={"user_id": user})
    assert answer.status_code == 200, answer.text
    return [entry["rule"] for entry in answer.json()["rules"]]


@pytest.mark.skipif(ENDPOINTS_MISSING, reason="GET /autotrain/rulesets is not in bot/api.py yet")
def test_a_chatbot_reads_a_real_autotrain_across_its_restarts(client_python: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "served"
    shutil.copytree(SHIPPED_RULES, workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    env = subprocess_environment()
    port = free_port()
    chatbot_dir = tmp_path / "chatbot"
    chatbot_dir.mkdir()
    cache_dir = chatbot_dir / "rules-cache"
    log = chatbot_dir / "chatbot.log"
    users = USERS[:40]
    shipped = {user: shipped_json_rules() for user in users}

    with autotrain_serve(workdir, env, port) as base_url:
        reporter, admin = mint(workdir, env, "reporter"), mint(workdir, env, "admin")
        listed = httpx.get(f"{base_url}/autotrain/rulesets", headers={"Authorization": f"Bearer {reporter}"}).json()
        versions = {item["module_name"]: item["version"] for item in listed["items"]}
        chatbot = ChatbotProcess(client_python, base_url, reporter, cache_dir, log)  # lists, then fetches
        assert chatbot.call("rules", module=JSON_FILE, users=users) == shipped
        assert chatbot.call("render", module=MARKDOWN_FILE, user="u") == shipped_text(MARKDOWN_FILE)
        assert chatbot.call("version", module=JSON_FILE) == versions[JSON_FILE]
    # Auto-Train is down
    assert chatbot.call("refresh") is False
    assert chatbot.call("rules", module=JSON_FILE, users=users) == shipped
    chatbot.stop()

    # the chatbot restarts while Auto-Train is still down: its rules from the copy on disk, at once
    chatbot = ChatbotProcess(client_python, base_url, reporter, cache_dir, log, modules=list(SHIPPED))
    try:
        assert chatbot.startup_seconds < 5
        assert chatbot.call("rules", module=JSON_FILE, users=users) == shipped
        assert chatbot.call("render", module=TEXT_FILE, user="u") == shipped_text(TEXT_FILE)
        assert chatbot.call("version", module=JSON_FILE) == versions[JSON_FILE]

        with autotrain_serve(workdir, env, port):
            # nothing changed: the conditional GETs of the known rule sets are answered 304
            assert chatbot.call("refresh") is True
            assert chatbot.call("version", module=JSON_FILE) == versions[JSON_FILE]

            # a canary deploy through the REST API, as an admin
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as http:
                assert http.post("/autotrain/feedback", json=WEATHER_FEEDBACK).status_code == 201
                rule = http.post("/autotrain/generate/FB-1001").json()
                assert (rule["new_rule"], rule["old_rule"]) == (NEW_WEATHER_RULE, OLD_WEATHER_RULE)
                assert http.post(f"/autotrain/rules/{rule['rule_id']}/approve").status_code == 200
                deployed = http.post(f"/autotrain/rules/{rule['rule_id']}/deploy", json={"rollout_percent": 50})
                assert deployed.status_code == 200, deployed.text
                version = http.get(f"/autotrain/rulesets/{JSON_FILE}").json()["version"]
                server_view = {user: server_rules(http, JSON_FILE, user) for user in users}
            # seen by the background refresh, without a reload call
            wait_until(
                lambda: chatbot.call("version", module=JSON_FILE) == version, what="the chatbot seeing the deploy"
            )
            got = chatbot.call("rules", module=JSON_FILE, users=users)
            assert got == server_view  # the chatbot's buckets are the server's
            inside = {user for user in users if autotrain.rollout.in_rollout(rule["rule_id"], user, 50)}
            assert inside and inside != set(users)
            for user in users:
                assert (NEW_WEATHER_RULE in got[user]) is (user in inside)
                assert (OLD_WEATHER_RULE in got[user]) is (user not in inside)
            assert chatbot.call("refresh") is True
    finally:
        chatbot.stop()
    serve_log = (workdir / "serve.log").read_text("utf-8", errors="replace")
    assert f'GET /autotrain/rulesets/{JSON_FILE} HTTP/1.1" 304' in serve_log
