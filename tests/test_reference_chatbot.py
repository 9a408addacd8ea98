"""The reference chatbot (examples/chatbot, issue 13): its offline answers obey the rules they are given, /replay
answers with exactly the rules in the request, /reload verifies Auto-Train's signature, /feedback forwards the
end user's report; and, through real processes, a bad answer becomes a rule that the chatbot follows after the
admin deploys it (`autotrain serve` and `python -m examples.chatbot` as subprocesses)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import httpx

from autotrain.policy import Role
from autotrain_client import RuleBook, in_rollout
from bot.auth import mint_token
from bot.webhooks import signed_headers
from examples.chatbot.app import Chatbot, Rules, make_server, verify_signature
from examples.chatbot.stylist import offline_answer, system_prompt
from tests.conftest import JWT_SECRET, NEW_WEATHER_RULE, OLD_WEATHER_RULE, SHIPPED_RULES, bearer
from tests.fakes.anthropic_api import FakeMessagesApi, answer_text
from tests.serve_process import REPO_ROOT, free_port, serving, subprocess_environment

HOT_QUERY = "Tìm áo cho trời 35 độ"
JACKET = "Áo khoác nỉ lót lông"
SECRET = "chatbot-reload-secret-0123456789"
SHIPPED_FASHION_RULES = [
    entry["rule"] for entry in json.loads((SHIPPED_RULES / "fashion_rules.json").read_text())["rules"]
]


def with_weather_rule(lines: list[str]) -> list[str]:
    return [NEW_WEATHER_RULE if line == OLD_WEATHER_RULE else line for line in lines]


class FakeBook:
    """A RuleBook stand-in: fixed lines per module, counts what it is asked."""

    def __init__(self, rules: dict[str, list[str]], version: str = "v1") -> None:
        self.rules = rules
        self._version = version
        self.refreshes = 0
        self.reads = 0

    def rules_for(self, module_name: str, user_id: str) -> list[str]:
        self.reads += 1
        return list(self.rules.get(module_name, []))

    def version(self, module_name: str) -> str | None:
        return self._version if module_name in self.rules else None

    def refresh_now(self) -> bool:
        self.refreshes += 1
        return True


@contextlib.contextmanager
def running(chatbot: Chatbot) -> Iterator[str]:
    server = make_server(chatbot)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def a_chatbot(book: Rules | None = None, **options: Any) -> Chatbot:
    options = {"autotrain_url": "http://127.0.0.1:9", "token": "reporter-token", "reload_secret": SECRET} | options
    return Chatbot(book or FakeBook({"fashion_rules.json": SHIPPED_FASHION_RULES}), **options)


# ---------------------------------------------------------------------- offline answers


def test_offline_answers_visibly_obey_the_rules_they_are_given() -> None:
    shipped = offline_answer(HOT_QUERY, {"fashion_rules.json": SHIPPED_FASHION_RULES})
    assert shipped.products[0] == JACKET  # "- Luôn ưu tiên áo khoác/dày": the bad answer
    assert OLD_WEATHER_RULE in shipped.rules_followed
    assert "Áo len cổ lọ" not in shipped.products  # "- Không gợi ý sản phẩm đã hết hàng"

    fixed = offline_answer(HOT_QUERY, {"fashion_rules.json": with_weather_rule(SHIPPED_FASHION_RULES)})
    assert JACKET not in fixed.products and fixed.products
    assert JACKET not in fixed.text
    assert NEW_WEATHER_RULE in fixed.rules_followed
    assert "«Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày»" in fixed.text  # says which rule it followed
    # the rule's condition: hot by the words or by the degrees, typed with or without accents; not when cold
    rules = {"fashion_rules.json": [NEW_WEATHER_RULE]}
    assert JACKET not in offline_answer("tim ao cho troi 35 do", rules).products
    assert JACKET not in offline_answer("trời nóng quá, tìm áo khoác", rules).products
    assert JACKET in offline_answer("Tìm áo khoác cho trời 15 độ", rules).products

    # "tối đa N sản phẩm"; a condition on height; no rules at all: the catalogue order, nothing followed
    assert len(offline_answer("gợi ý đầm", {"m": ["- Gợi ý tối đa 1 sản phẩm mỗi lần"]}).products) == 1
    short = {"m": ["- Gợi ý đầm maxi cho mọi khách", "- Dưới 1m55: gợi ý đầm ngắn (midi, knee-length)"]}
    assert offline_answer("mình cao 1m50, tìm đầm", short).products[0] != "Đầm maxi hoa"
    assert offline_answer("mình cao 1m70, tìm đầm", short).products[0] == "Đầm maxi hoa"
    bare = offline_answer(HOT_QUERY, {})
    assert bare.rules_followed == [] and "Quy tắc" not in bare.text


def test_replay_answers_with_exactly_the_rules_given_not_its_rulebooks() -> None:
    book = FakeBook({"fashion_rules.json": SHIPPED_FASHION_RULES})
    with running(a_chatbot(book)) as url:
        chat = httpx.post(f"{url}/chat", json={"user_id": "u-1", "query": HOT_QUERY}).json()
        assert chat["products"][0] == JACKET
        assert chat["rules_version"] == "v1"
        reads = book.reads

        replay = {"query": HOT_QUERY, "rules": {"fashion_rules.json": [NEW_WEATHER_RULE]}, "user_id": "u-1"}
        response = httpx.post(f"{url}/replay", json=replay)
        assert response.status_code == 200, response.text
        assert JACKET not in response.json()["products"]
        assert response.json()["rules_followed"] == [NEW_WEATHER_RULE]
        assert set(response.json()) >= {"answer"}
        assert book.reads == reads  # the RuleBook is not read at all

        no_rules = httpx.post(f"{url}/replay", json={"query": HOT_QUERY, "rules": {}}).json()
        assert no_rules["rules_followed"] == [] and no_rules["products"][0] == JACKET  # catalogue order

        bad = httpx.post(f"{url}/replay", json={"query": HOT_QUERY, "rules": {"fashion_rules.json": "- x"}})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
        assert httpx.post(f"{url}/chat", content=b"not json").status_code == 400


def test_a_canary_reaches_only_its_users_answers(tmp_path: Path) -> None:
    """/chat reads each user's rules (RuleBook.rules_for): inside a canary of the weather rule, no jacket."""
    rules = json.loads((SHIPPED_RULES / "fashion_rules.json").read_text())
    rules["rules"].append(
        {"rule": NEW_WEATHER_RULE, "rule_id": "RUL-1001", "rollout_percent": 50, "replaces": OLD_WEATHER_RULE}
    )
    (tmp_path / "fashion_rules.json").write_text(json.dumps(rules, ensure_ascii=False))
    users = [f"u-{n}" for n in range(40)]
    inside = next(u for u in users if in_rollout("RUL-1001", u, 50))
    outside = next(u for u in users if not in_rollout("RUL-1001", u, 50))
    with running(a_chatbot(RuleBook(tmp_path))) as url, httpx.Client(base_url=url) as http:
        answers = {u: http.post("/chat", json={"user_id": u, "query": HOT_QUERY}).json() for u in users}
    assert JACKET not in answers[inside]["products"] and NEW_WEATHER_RULE in answers[inside]["rules_followed"]
    assert answers[outside]["products"][0] == JACKET and OLD_WEATHER_RULE in answers[outside]["rules_followed"]
    assert all((JACKET in a["products"]) != in_rollout("RUL-1001", u, 50) for u, a in answers.items())
    assert len({a["rules_version"] for a in answers.values()}) == 1  # one file version, two variants


def test_with_a_claude_client_the_rules_given_are_what_claude_is_told(messages_api: FakeMessagesApi) -> None:
    messages_api.then(answer_text("Mình gợi ý Áo thun cotton, thoáng mát cho trời nóng."))
    claude = anthropic.Anthropic(api_key="test-key", base_url=messages_api.base_url, max_retries=0)
    with running(a_chatbot(claude=claude, model="claude-test")) as url:
        replay = {"query": HOT_QUERY, "rules": {"fashion_rules.json": [NEW_WEATHER_RULE]}}
        response = httpx.post(f"{url}/replay", json=replay, timeout=10).json()
    assert response["answer"] == "Mình gợi ý Áo thun cotton, thoáng mát cho trời nóng."
    assert response["engine"] == "claude"
    [request] = messages_api.requests
    assert request.body["model"] == "claude-test"
    assert request.body["system"] == system_prompt({"fashion_rules.json": [NEW_WEATHER_RULE]})
    assert NEW_WEATHER_RULE in request.body["system"] and OLD_WEATHER_RULE not in request.body["system"]
    assert request.body["messages"] == [{"role": "user", "content": HOT_QUERY}]


# ---------------------------------------------------------------------- /reload


def test_reload_refuses_a_bad_signature_and_refreshes_on_a_good_one() -> None:
    book = FakeBook({"fashion_rules.json": SHIPPED_FASHION_RULES}, version="abc123")
    body = json.dumps(
        {"event": "rules_changed", "module_name": "fashion_rules.json", "rule_id": "RUL-1001", "version": "abc123"}
    ).encode()
    now = time.time()
    good = signed_headers(SECRET, "rules_changed", "reload:1", body, now)  # exactly as Auto-Train signs it
    with running(a_chatbot(book)) as url:

        def reload(headers: dict[str, str], content: bytes = body) -> httpx.Response:
            return httpx.post(f"{url}/reload", content=content, headers={"Content-Type": "application/json", **headers})

        refused = [
            reload({}),  # unsigned
            reload(signed_headers("another-secret", "rules_changed", "reload:1", body, now)),
            reload(good, body.replace(b"RUL-1001", b"RUL-6666")),  # the body changed after signing
            reload(signed_headers(SECRET, "rules_changed", "reload:1", body, now - 600)),  # too old
            reload({**good, "X-Autotrain-Signature": "sha256=" + "0" * 64}),
        ]
        assert [r.status_code for r in refused] == [401] * 5
        assert all(r.json()["error"]["code"] == "unauthorized" for r in refused)
        assert book.refreshes == 0

        accepted = reload(good)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"reloaded": True, "module_name": "fashion_rules.json", "version": "abc123"}
        assert book.refreshes == 1
        health = httpx.get(f"{url}/healthz").json()
        assert health["reloads"]["verified"] == 1 and health["reloads"]["refused"] == 5

    # without a secret of its own, the chatbot verifies nothing: every reload call is refused
    with running(a_chatbot(FakeBook({}), reload_secret=None)) as url:
        assert httpx.post(f"{url}/reload", content=body, headers=good).status_code == 401
    assert verify_signature(SECRET, good["X-Autotrain-Timestamp"], good["X-Autotrain-Signature"], body, now) is None


# ---------------------------------------------------------------------- /feedback


@contextlib.contextmanager
def fake_autotrain(status: int = 201, answer: dict[str, Any] | None = None) -> Iterator[tuple[str, list[Any]]]:
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append((self.path, dict(self.headers), json.loads(body)))
            data = json.dumps(answer or {"feedback_id": "FB-1001", "status": "pending"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_feedback_is_forwarded_to_autotrain_with_the_end_users_id() -> None:
    report = {
        "user_id": "u-42",
        "query": HOT_QUERY,
        "answer": "Mình gợi ý cho bạn: Áo khoác nỉ lót lông",
        "feedback_text": "Trời nóng quá, AI còn tư vấn áo khoác",
        "feedback_type": "bug",
    }
    with fake_autotrain() as (autotrain_url, received), running(a_chatbot(autotrain_url=autotrain_url)) as url:
        response = httpx.post(f"{url}/feedback", json=report)
    assert response.status_code == 201, response.text
    assert response.json()["feedback_id"] == "FB-1001"
    [(path, headers, body)] = received
    assert path == "/autotrain/feedback"
    assert headers["Authorization"] == "Bearer reporter-token"
    assert body == {
        "user_id": "u-42",
        "query": HOT_QUERY,
        "ai_response": report["answer"],
        "feedback_text": report["feedback_text"],
        "feedback_type": "bug",
    }

    refused = {"error": {"code": "invalid_input", "message": "feedback_type: not one of bug, suggestion, praise"}}
    with fake_autotrain(422, refused) as (autotrain_url, _), running(a_chatbot(autotrain_url=autotrain_url)) as url:
        response = httpx.post(f"{url}/feedback", json={**report, "feedback_type": "rant"})
    assert response.status_code == 422 and response.json() == refused  # Auto-Train's own answer
    with running(a_chatbot(autotrain_url=f"http://127.0.0.1:{free_port()}")) as url:
        response = httpx.post(f"{url}/feedback", json=report)
    assert response.status_code == 502 and response.json()["error"]["code"] == "autotrain_unreachable"


def test_the_chatbot_imports_neither_the_server_nor_anthropic_without_a_key() -> None:
    """A real chatbot installs autotrain-client, not Auto-Train; anthropic only when it answers with Claude."""
    probe = (
        "import sys, examples.chatbot.app, examples.chatbot.stylist; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'autotrain', 'bot', 'storage', 'anthropic'}))"
    )
    env = subprocess_environment()
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------- end to end, real processes


@contextlib.contextmanager
def chatbot_process(workdir: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """`python -m examples.chatbot` (the README's command) on `port`, its log in workdir/chatbot.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    base_url = f"http://127.0.0.1:{port}"
    with open(workdir / "chatbot.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.chatbot"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the chatbot did not start:\n" + (workdir / "chatbot.log").read_text())
                time.sleep(0.05)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def test_a_reported_answer_becomes_a_deployed_rule_the_chatbot_follows(tmp_path: Path) -> None:
    import shutil

    autotrain_dir = tmp_path / "autotrain"
    shutil.copytree(SHIPPED_RULES, autotrain_dir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    chatbot_port = free_port()
    autotrain_env = subprocess_environment(
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_GIT="false",
        AUTOTRAIN_AUTO_GENERATE="false",
        AUTOTRAIN_RELOAD_URL=f"http://127.0.0.1:{chatbot_port}/reload",
        AUTOTRAIN_RELOAD_SECRET=SECRET,
    )
    admin = bearer(Role.ADMIN, "U_ADMIN")
    with serving(autotrain_dir, autotrain_env) as (autotrain_url, _):
        chatbot_env = subprocess_environment(
            AUTOTRAIN_URL=autotrain_url,
            AUTOTRAIN_TOKEN=mint_token(JWT_SECRET, subject="chatbot", role=Role.REPORTER),
            CHATBOT_RELOAD_SECRET=SECRET,
            CHATBOT_PORT=str(chatbot_port),
            CHATBOT_CACHE_DIR=str(tmp_path / "chatbot-cache"),
            CHATBOT_REFRESH_SECONDS="3600",  # only the reload call can bring the new rule in time
        )
        chatbot_env["PYTHONPATH"] = str(REPO_ROOT)
        with (
            chatbot_process(tmp_path / "chatbot", chatbot_env, chatbot_port) as chatbot_url,
            httpx.Client(timeout=15) as http,
        ):
            ask = {"user_id": "u-42", "query": HOT_QUERY}
            before = http.post(f"{chatbot_url}/chat", json=ask).json()
            assert before["products"][0] == JACKET, before  # the bad answer
            assert OLD_WEATHER_RULE in before["rules_followed"]

            # its user reports it, through the chatbot
            report = {
                **ask,
                "answer": before["answer"],
                "feedback_text": "Trời nóng quá, AI còn tư vấn áo khoác",
                "feedback_type": "bug",
            }
            reported = http.post(f"{chatbot_url}/feedback", json=report)
            assert reported.status_code == 201, reported.text
            feedback_id = reported.json()["feedback_id"]
            stored = http.get(f"{autotrain_url}/autotrain/feedback/{feedback_id}", headers=admin).json()
            assert stored["user_id"] == "u-42" and stored["ai_response"] == before["answer"]

            # Auto-Train's offline generator makes the rule; an admin approves and deploys it
            rule = http.post(f"{autotrain_url}/autotrain/generate/{feedback_id}", headers=admin).json()
            assert (rule["old_rule"], rule["new_rule"]) == (OLD_WEATHER_RULE, NEW_WEATHER_RULE), rule
            approved = http.post(f"{autotrain_url}/autotrain/rules/{rule['rule_id']}/approve", headers=admin)
            assert approved.status_code == 200, approved.text
            deployed = http.post(f"{autotrain_url}/autotrain/rules/{rule['rule_id']}/deploy", headers=admin)
            assert deployed.status_code == 200, deployed.text
            deployment = deployed.json()["deployment"]
            assert deployment["reload_status"] == "ok", deployment  # the chatbot answered the reload call

            # the signed reload arrived, verified, and the chatbot fetched the new version at once
            reloads = http.get(f"{chatbot_url}/healthz").json()["reloads"]
            assert reloads["verified"] == 1 and reloads["refused"] == 0, reloads
            assert reloads["last"]["rule_id"] == rule["rule_id"]
            assert reloads["last"]["version"] == reloads["last"]["announced_version"] == deployment["version_after"]

            after = http.post(f"{chatbot_url}/chat", json=ask).json()
            assert JACKET not in after["products"] and after["products"], after
            assert JACKET not in after["answer"]
            assert NEW_WEATHER_RULE in after["rules_followed"]
            assert after["rules_version"] == deployment["version_after"] != before["rules_version"]
