"""Canary rollout, promote, rollback and the git history of the rule files, end to end: the real ASGI app over
HTTP (and Slack through signed requests), real rule files in a temp folder, the real git binary, and the
chatbot's RuleBook reading the files the way a chatbot would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotrain.client import RuleBook
from autotrain.models import FeedbackIn
from autotrain.rollout import in_rollout
from autotrain.rulefiles import render_rules_json
from autotrain.settings import Settings
from bot.api import create_app
from bot.git_history import INITIAL_MESSAGE, GitRuleHistory
from tests.conftest import (
    ADMIN,
    HEIGHT_FEEDBACK,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    REPO_ROOT,
    REPORTER,
    WEATHER_FEEDBACK,
    bearer,
    make_settings,
    read_rule_lines,
    rule_of,
)
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import (
    ADMIN_USER,
    SlackSimulator,
    action_ids,
    slack_settings,
)

RULES = "fashion_rules.json"
ADMIN_SUBJECT = "U_ADMIN"
OTHER_ADMIN_SUBJECT = "U_SECOND_ADMIN"
USERS = [f"user-{n:05d}" for n in range(2000)]
NEW_HEIGHT_RULE = "- Dưới 1m55: gợi ý đầm ngắn (midi, knee-length)"
OLD_HEIGHT_RULE = "- Gợi ý đầm maxi cho mọi khách"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="the git binary is not installed")


@pytest.fixture(autouse=True)
def neutral_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The machine's git config never reaches these tests (nor the `autotrain history` subprocess)."""
    empty = tmp_path / "empty-global-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


# ---------------------------------------------------------------------- helpers


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The app with its lifespan (runtime, reconcile, git repository), and an HTTP client on it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as client:
            yield app, client


def admin(subject: str = ADMIN_SUBJECT) -> dict[str, str]:
    return bearer(subject=subject)


async def approved_over_http(client: httpx.AsyncClient, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Feedback submitted by the chatbot, its rule generated and approved, all through the REST API."""
    response = await client.post(
        "/autotrain/feedback", json=payload or WEATHER_FEEDBACK, headers=bearer(REPORTER.role, REPORTER.id)
    )
    assert response.status_code == 201, response.text
    feedback_id = response.json()["feedback_id"]
    response = await client.post(f"/autotrain/generate/{feedback_id}", headers=admin())
    assert response.status_code == 200, response.text
    rule_id = response.json()["rule_id"]
    response = await client.post(f"/autotrain/rules/{rule_id}/approve", headers=admin())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved"
    return response.json()


async def deploy(
    client: httpx.AsyncClient, rule_id: str, percent: int | None = None, subject: str = ADMIN_SUBJECT
) -> httpx.Response:
    body = {"rollout_percent": percent} if percent is not None else None
    return await client.post(f"/autotrain/rules/{rule_id}/deploy", json=body, headers=admin(subject))


async def promote(client: httpx.AsyncClient, rule_id: str, subject: str = ADMIN_SUBJECT) -> httpx.Response:
    return await client.post(f"/autotrain/rules/{rule_id}/promote", headers=admin(subject))


async def rollback(client: httpx.AsyncClient, rule_id: str, subject: str = ADMIN_SUBJECT) -> httpx.Response:
    return await client.post(f"/autotrain/rules/{rule_id}/rollback", headers=admin(subject))


async def deployments(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/autotrain/deployments", headers=admin())
    assert response.status_code == 200, response.text
    return response.json()["items"]


def document(rules_dir: Path, module_name: str = RULES) -> dict[str, Any]:
    return json.loads((rules_dir / module_name).read_text(encoding="utf-8"))


def entries(rules_dir: Path) -> list[dict[str, Any]]:
    return document(rules_dir)["rules"]


def entry_for(rules_dir: Path, line: str) -> dict[str, Any]:
    found = [entry for entry in entries(rules_dir) if entry["rule"] == line]
    assert len(found) == 1, f"{line!r} is in the file {len(found)} times"
    return found[0]


def in_tool_layout(rules_dir: Path) -> bytes:
    """The rule file in the layout Auto-Train writes (one entry per line, as shipped), so a diff shows only a
    change's lines (the shipped file already is; test_the_first_deploy_on_the_shipped_file checks that)."""
    path = rules_dir / RULES
    content = render_rules_json(document(rules_dir)).encode()
    path.write_bytes(content)
    return content


def with_version(content: bytes, version: int) -> bytes:
    """The same file with another value of the "version" counter (bumped by every write, by design)."""
    data = json.loads(content)
    old = f'"version": {data["version"]},'.encode()
    assert content.count(old) == 1
    return content.replace(old, f'"version": {version},'.encode())


def split_users(rule_id: str, percent: int) -> tuple[list[str], list[str]]:
    inside = [user for user in USERS if in_rollout(rule_id, user, percent)]
    outside = [user for user in USERS if not in_rollout(rule_id, user, percent)]
    return inside, outside


def assert_everyone_gets(book: RuleBook, present: str, absent: str) -> None:
    for user in USERS:
        lines = book.rules_for(RULES, user)
        assert present in lines, user
        assert absent not in lines, user


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Plain git as a user would run it (identity given on the command line)."""
    return subprocess.run(
        ["git", "-c", "user.name=Someone", "-c", "user.email=someone@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=check,
    )


def log_shas(cwd: Path) -> list[str]:
    return git(cwd, "log", "--format=%H").stdout.split()


def normalized(line: str) -> str:
    """A JSON line without its indentation and trailing comma (a comma moves when a neighbour goes)."""
    return line.strip().removesuffix(",")


def net_change(diff: str) -> tuple[Counter[str], Counter[str]]:
    """(lines removed, lines added) of a unified diff, as multisets, after `normalized`, with lines that are
    only re-stated (the same line removed and added, e.g. for a comma) cancelled out."""
    lines = diff.splitlines()
    removed = Counter(normalized(line[1:]) for line in lines if line.startswith("-") and not line.startswith("---"))
    added = Counter(normalized(line[1:]) for line in lines if line.startswith("+") and not line.startswith("+++"))
    return removed - added, added - removed


def entry_lines(entry: dict[str, Any]) -> list[str]:
    """The lines of one rule entry in the file's layout (one line an entry), `normalized`."""
    return [normalized(json.dumps(entry, ensure_ascii=False))]


def version_line(version: int) -> str:
    return f'"version": {version}'


def cli(tmp_path: Path, rules_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        AUTOTRAIN_RULES_DIR=str(rules_dir),
        AUTOTRAIN_DATABASE_URL=f"sqlite:///{tmp_path / 'autotrain.db'}",
    )
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


# ---------------------------------------------------------------------- canary deploy


async def test_canary_deploy_adds_the_new_rule_for_a_tenth_of_users(tmp_path: Path, rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    assert_everyone_gets(book, OLD_WEATHER_RULE, NEW_WEATHER_RULE)
    original = entries(rules_dir)
    old_index = [e["rule"] for e in original].index(OLD_WEATHER_RULE)

    async with serve(make_settings(tmp_path, rules_dir)) as (_, client):
        rule = await approved_over_http(client)
        rule_id, feedback_id = rule["rule_id"], rule["feedback_id"]
        response = await deploy(client, rule_id, 10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "deployed"
        assert body["rollout_percent"] == 10
        assert body["deployment"]["outcome"] == "canary"
        assert body["deployment"]["rollout_percent"] == 10
        assert body["deployment"]["deployed_by"] == ADMIN_SUBJECT
        fetched = (await client.get(f"/autotrain/rules/{rule_id}", headers=admin())).json()
        assert fetched["status"] == "deployed" and fetched["rollout_percent"] == 10
        [recorded] = await deployments(client)
        assert recorded["outcome"] == "canary" and recorded["rollout_percent"] == 10

    # the file keeps the old entry, untouched, and has the new one right after it
    after = entries(rules_dir)
    assert len(after) == len(original) + 1
    assert after[old_index] == original[old_index]
    new_entry = after[old_index + 1]
    assert new_entry["rule"] == NEW_WEATHER_RULE
    assert new_entry["rollout_percent"] == 10
    assert new_entry["replaces"] == OLD_WEATHER_RULE
    assert new_entry["rule_id"] == rule_id and new_entry["added_from"] == feedback_id
    assert [e for i, e in enumerate(after) if i != old_index + 1] == original  # nothing else changed

    # the chatbot's view: same RuleBook, no restart; users in the canary get the new rule instead of the old
    inside, outside = split_users(rule_id, 10)
    for user in inside:
        lines = book.rules_for(RULES, user)
        assert NEW_WEATHER_RULE in lines and OLD_WEATHER_RULE not in lines, user
        assert lines.index(NEW_WEATHER_RULE) == old_index  # in the old rule's place
    for user in outside:
        lines = book.rules_for(RULES, user)
        assert OLD_WEATHER_RULE in lines and NEW_WEATHER_RULE not in lines, user
    share = 100 * len(inside) / len(USERS)
    assert abs(share - 10) <= 2.5, f"{share:.2f} % of users are in a 10 % canary"
    # a fresh RuleBook (another chatbot process) puts every user in the same variant
    other = RuleBook(rules_dir)
    assert all(other.rules_for(RULES, user) == book.rules_for(RULES, user) for user in USERS[:300])


# ---------------------------------------------------------------------- promote


async def test_promote_takes_the_canary_to_every_user_and_drops_the_old_rule(tmp_path: Path, rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    original = entries(rules_dir)
    old_index = [e["rule"] for e in original].index(OLD_WEATHER_RULE)
    async with serve(make_settings(tmp_path, rules_dir)) as (_, client):
        rule_id = (await approved_over_http(client))["rule_id"]
        assert (await deploy(client, rule_id, 10)).status_code == 200
        inside, outside = split_users(rule_id, 10)
        assert inside and outside
        assert OLD_WEATHER_RULE in book.rules_for(RULES, outside[0])

        response = await promote(client, rule_id)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "deployed"
        assert body["rollout_percent"] == 100
        assert body["deployment"]["outcome"] == "promoted"

        after = entries(rules_dir)
        assert OLD_WEATHER_RULE not in [e["rule"] for e in after]
        new_entry = entry_for(rules_dir, NEW_WEATHER_RULE)
        assert "rollout_percent" not in new_entry and "replaces" not in new_entry
        assert after.index(new_entry) == old_index  # where the old rule was
        assert after[:old_index] + after[old_index + 1 :] == [e for e in original if e["rule"] != OLD_WEATHER_RULE]
        assert_everyone_gets(book, NEW_WEATHER_RULE, OLD_WEATHER_RULE)  # the same RuleBook re-read the file

        # a second promote is refused and changes nothing
        before = (rules_dir / RULES).read_bytes()
        response = await promote(client, rule_id)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "transition_refused"
        assert (rules_dir / RULES).read_bytes() == before
        assert len(await deployments(client)) == 2


async def test_promote_refuses_a_full_deploy_and_a_pending_rule(tmp_path: Path, rules_dir: Path) -> None:
    async with serve(make_settings(tmp_path, rules_dir)) as (_, client):
        full_id = (await approved_over_http(client, HEIGHT_FEEDBACK))["rule_id"]
        assert (await deploy(client, full_id)).status_code == 200
        response = await client.post(
            "/autotrain/feedback", json=WEATHER_FEEDBACK, headers=bearer(REPORTER.role, "chatbot")
        )
        pending_id = (
            await client.post(f"/autotrain/generate/{response.json()['feedback_id']}", headers=admin())
        ).json()["rule_id"]
        before = (rules_dir / RULES).read_bytes()

        for rule_id, status in ((full_id, "deployed"), (pending_id, "pending")):
            response = await promote(client, rule_id)
            assert response.status_code == 409, (rule_id, response.text)
            assert response.json()["error"]["code"] == "transition_refused"
            assert (await client.get(f"/autotrain/rules/{rule_id}", headers=admin())).json()["status"] == status
        assert (rules_dir / RULES).read_bytes() == before
        assert len(await deployments(client)) == 1
        response = await promote(client, "RUL-9999")
        assert response.status_code == 404


async def test_a_canary_on_a_text_rule_file_is_refused(tmp_path: Path, rules_dir: Path) -> None:
    prompt_before = (rules_dir / "prompt_v2.txt").read_bytes()
    json_before = (rules_dir / RULES).read_bytes()
    new_rule = "- Trả lời bằng tiếng Việt có dấu, kể cả khi khách gõ không dấu"
    async with serve(make_settings(tmp_path, rules_dir)) as (app, client):
        response = await client.post(
            "/autotrain/feedback", json=WEATHER_FEEDBACK, headers=bearer(REPORTER.role, "chatbot")
        )
        feedback_id = response.json()["feedback_id"]
        rule_id = (await client.post(f"/autotrain/generate/{feedback_id}", headers=admin())).json()["rule_id"]
        edited = await app.state.runtime.service.edit(
            rule_id, ADMIN, new_rule=new_rule, module_name="prompt_v2.txt", old_rule=""
        )
        assert edited.module_name == "prompt_v2.txt" and edited.old_rule is None
        assert (await client.post(f"/autotrain/rules/{rule_id}/approve", headers=admin())).status_code == 200

        response = await deploy(client, rule_id, 10)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "canary_unsupported"
        assert (await client.get(f"/autotrain/rules/{rule_id}", headers=admin())).json()["status"] == "approved"
        assert await deployments(client) == []
        assert (rules_dir / "prompt_v2.txt").read_bytes() == prompt_before
        assert (rules_dir / RULES).read_bytes() == json_before

        # refused, not broken: the same rule still deploys to every user
        response = await deploy(client, rule_id)
        assert response.status_code == 200, response.text
        assert new_rule in read_rule_lines(rules_dir, "prompt_v2.txt")
        assert RuleBook(rules_dir).rules_for("prompt_v2.txt", "user-1") == read_rule_lines(rules_dir, "prompt_v2.txt")


@pytest.mark.parametrize("percent", [0, 101, -10])
async def test_rollout_percent_out_of_range_is_refused(tmp_path: Path, rules_dir: Path, percent: int) -> None:
    before = (rules_dir / RULES).read_bytes()
    async with serve(make_settings(tmp_path, rules_dir)) as (_, client):
        rule_id = (await approved_over_http(client))["rule_id"]
        response = await deploy(client, rule_id, percent)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_input"
        assert "rollout_percent" in response.json()["error"]["message"]
        assert (await client.get(f"/autotrain/rules/{rule_id}", headers=admin())).json()["status"] == "approved"
        assert await deployments(client) == []
    assert (rules_dir / RULES).read_bytes() == before


# ---------------------------------------------------------------------- rollback


async def test_rollback_of_a_canary_restores_the_file(tmp_path: Path, rules_dir: Path) -> None:
    before = in_tool_layout(rules_dir)
    version = document(rules_dir)["version"]
    book = RuleBook(rules_dir)
    async with serve(make_settings(tmp_path, rules_dir)) as (_, client):
        rule_id = (await approved_over_http(client))["rule_id"]
        assert (await deploy(client, rule_id, 10)).status_code == 200
        inside, _ = split_users(rule_id, 10)
        assert NEW_WEATHER_RULE in book.rules_for(RULES, inside[0])

        response = await rollback(client, rule_id)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "rolled_back"
        assert response.json()["deployment"]["rollback_of"] is not None

    # byte for byte the file before the canary, but for the version counter (two writes later)
    assert (rules_dir / RULES).read_bytes() == with_version(before, version + 2)
    assert_everyone_gets(book, OLD_WEATHER_RULE, NEW_WEATHER_RULE)


async def test_rollback_after_promote_puts_the_old_rule_back_in_its_place(tmp_path: Path, rules_dir: Path) -> None:
    original = entries(rules_dir)
    book = RuleBook(rules_dir)
    async with serve(make_settings(tmp_path, rules_dir)) as (_, client):
        rule_id = (await approved_over_http(client))["rule_id"]
        assert (await deploy(client, rule_id, 10)).status_code == 200
        inside, outside = split_users(rule_id, 10)
        assert NEW_WEATHER_RULE in book.rules_for(RULES, inside[0])
        assert OLD_WEATHER_RULE in book.rules_for(RULES, outside[0])
        assert (await promote(client, rule_id)).status_code == 200
        assert_everyone_gets(book, NEW_WEATHER_RULE, OLD_WEATHER_RULE)

        response = await rollback(client, rule_id)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "rolled_back"
        second = await rollback(client, rule_id)
        assert second.status_code == 409

    assert entries(rules_dir) == original  # the old entry back where it was, the new one gone
    assert_everyone_gets(book, OLD_WEATHER_RULE, NEW_WEATHER_RULE)


# ---------------------------------------------------------------------- git history


@needs_git
async def test_canary_promote_and_rollback_are_commits_with_exactly_the_change(tmp_path: Path, rules_dir: Path) -> None:
    in_tool_layout(rules_dir)
    old_entry = entry_for(rules_dir, OLD_WEATHER_RULE)
    history = GitRuleHistory(rules_dir)
    async with serve(make_settings(tmp_path, rules_dir, git_history=True)) as (_, client):
        # the app's start made the folder a repository, with one initial commit of the files as they are
        assert (rules_dir / ".git").is_dir()
        [initial] = log_shas(rules_dir)
        assert git(rules_dir, "log", "-1", "--format=%s").stdout.strip() == INITIAL_MESSAGE
        assert git(rules_dir, "status", "--porcelain").stdout == ""

        rule = await approved_over_http(client)
        rule_id, feedback_id = rule["rule_id"], rule["feedback_id"]
        assert log_shas(rules_dir) == [initial]  # approving writes nothing

        # canary: one commit, by the token's subject, adding only the new entry
        response = await deploy(client, rule_id, 10)
        assert response.status_code == 200, response.text
        canary_sha = response.json()["deployment"]["commit_sha"]
        assert log_shas(rules_dir) == [canary_sha, initial]
        canary_entry = entry_for(rules_dir, NEW_WEATHER_RULE)
        commit = history.history(RULES, limit=1)[0]
        assert commit.sha == canary_sha
        assert commit.author_name == ADMIN_SUBJECT
        assert commit.files == (RULES,)
        assert commit.message.splitlines()[0] == f"Canary 10 %: {rule_id} ({feedback_id}): {NEW_WEATHER_RULE}"
        assert f"Replaces: {OLD_WEATHER_RULE}" in commit.message
        removed, added = net_change(history.diff(canary_sha, RULES))
        assert removed == Counter([version_line(1)])
        assert added == Counter([version_line(2), *entry_lines(canary_entry)])
        assert history.diff(canary_sha) == history.diff(canary_sha, RULES)  # no other file in the commit

        # promote: one commit removing the old entry and the canary marks, adding nothing
        response = await promote(client, rule_id)
        assert response.status_code == 200, response.text
        promote_sha = response.json()["deployment"]["commit_sha"]
        assert log_shas(rules_dir) == [promote_sha, canary_sha, initial]
        promoted_entry = entry_for(rules_dir, NEW_WEATHER_RULE)
        commit = history.history(RULES, limit=1)[0]
        assert commit.author_name == ADMIN_SUBJECT
        assert commit.message.splitlines()[0] == f"Promote to 100 %: {rule_id} ({feedback_id}): {NEW_WEATHER_RULE}"
        removed, added = net_change(history.diff(promote_sha, RULES))
        # the old entry goes; the canary entry loses its rollout_percent and replaces marks
        assert removed == Counter([version_line(2), *entry_lines(old_entry), *entry_lines(canary_entry)])
        assert added == Counter([version_line(3), *entry_lines(promoted_entry)])
        assert "rollout_percent" not in promoted_entry and "replaces" not in promoted_entry

        # rollback, by another admin: one commit taking the new entry out and putting the old one back
        response = await rollback(client, rule_id, OTHER_ADMIN_SUBJECT)
        assert response.status_code == 200, response.text
        rollback_sha = response.json()["deployment"]["commit_sha"]
        assert log_shas(rules_dir) == [rollback_sha, promote_sha, canary_sha, initial]
        commit = history.history(RULES, limit=1)[0]
        assert commit.author_name == OTHER_ADMIN_SUBJECT
        assert commit.message.splitlines()[0] == f"Roll back {rule_id} ({feedback_id}): {NEW_WEATHER_RULE}"
        removed, added = net_change(history.diff(rollback_sha, RULES))
        assert removed == Counter([version_line(3), *entry_lines(promoted_entry)])
        assert added == Counter([version_line(4), *entry_lines(old_entry)])
        assert history.show(rollback_sha, RULES) == (rules_dir / RULES).read_text(encoding="utf-8")
        assert git(rules_dir, "status", "--porcelain").stdout == ""  # nothing left uncommitted

        # /autotrain/deployments shows each change's commit
        items = await deployments(client)
        assert [(d["outcome"], d["commit_sha"]) for d in items] == [
            ("reverted", rollback_sha),
            ("promoted", promote_sha),
            ("canary", canary_sha),
        ]

    # `autotrain history`: newest first, with authors; `--diff` prints what the commit changed
    result = cli(tmp_path, rules_dir, "history", RULES)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [sha[:10] for sha in (rollback_sha, promote_sha, canary_sha, initial)]
    assert OTHER_ADMIN_SUBJECT in lines[0] and "Roll back" in lines[0] and rule_id in lines[0]
    assert ADMIN_SUBJECT in lines[1] and "Promote to 100 %" in lines[1] and feedback_id in lines[1]
    assert ADMIN_SUBJECT in lines[2] and "Canary 10 %" in lines[2]
    assert INITIAL_MESSAGE in lines[3]
    for sha in (canary_sha, promote_sha, rollback_sha):
        shown = cli(tmp_path, rules_dir, "history", RULES, "--diff", sha[:12])
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == history.diff(sha, RULES)
        assert f"--- a/{RULES}" in shown.stdout


@needs_git
async def test_the_first_deploy_on_the_shipped_file_commits_only_the_change(tmp_path: Path, rules_dir: Path) -> None:
    """The shipped fashion_rules.json has one entry per line. A canary must add the new entry (and bump the
    version), not rewrite every line; rolling it back must give the shipped file back (but the version)."""
    shipped = (rules_dir / RULES).read_bytes()
    history = GitRuleHistory(rules_dir)
    async with serve(make_settings(tmp_path, rules_dir, git_history=True)) as (_, client):
        rule_id = (await approved_over_http(client))["rule_id"]
        response = await deploy(client, rule_id, 10)
        assert response.status_code == 200, response.text
        removed, _ = net_change(history.diff(response.json()["deployment"]["commit_sha"], RULES))
        assert removed == Counter([version_line(1)]), f"the canary's commit rewrote other lines: {sorted(removed)}"
        assert (await rollback(client, rule_id)).status_code == 200
    assert (rules_dir / RULES).read_bytes() == with_version(shipped, 3)


@needs_git
async def test_a_noop_deploy_makes_no_commit(tmp_path: Path, rules_dir: Path) -> None:
    existing = "- Không gợi ý sản phẩm đã hết hàng"
    before = (rules_dir / RULES).read_bytes()
    async with serve(make_settings(tmp_path, rules_dir, git_history=True)) as (app, client):
        shas = log_shas(rules_dir)
        assert len(shas) == 1
        response = await client.post(
            "/autotrain/feedback", json=HEIGHT_FEEDBACK, headers=bearer(REPORTER.role, "chatbot")
        )
        rule_id = (await client.post(f"/autotrain/generate/{response.json()['feedback_id']}", headers=admin())).json()[
            "rule_id"
        ]
        await app.state.runtime.service.edit(rule_id, ADMIN, new_rule=existing, old_rule="")
        assert (await client.post(f"/autotrain/rules/{rule_id}/approve", headers=admin())).status_code == 200

        response = await deploy(client, rule_id)
        assert response.status_code == 200, response.text
        assert response.json()["deployment"]["outcome"] == "noop"
        assert response.json()["deployment"]["commit_sha"] is None
        assert log_shas(rules_dir) == shas
        assert (rules_dir / RULES).read_bytes() == before
        assert [d["commit_sha"] for d in await deployments(client)] == [None]


@needs_git
async def test_a_rules_folder_inside_another_repository_gets_no_commits(tmp_path: Path) -> None:
    project = tmp_path / "project"
    rules_dir = project / "config"
    shutil.copytree(REPO_ROOT / "config", rules_dir, ignore=shutil.ignore_patterns(".autotrain"))
    (project / "README.md").write_text("a project that keeps its chatbot's rules in config/\n")
    git(project, "init", "-q", "--initial-branch=main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "the project")
    assert git(project, "check-ignore", "-q", "config", check=False).returncode == 1  # not ignored
    parent_log = git(project, "log", "--format=%H %an %s").stdout
    before = (rules_dir / RULES).read_bytes()

    async with serve(make_settings(tmp_path, rules_dir, git_history=True)) as (_, client):
        assert not (rules_dir / ".git").exists()  # no nested repository either
        rule_id = (await approved_over_http(client))["rule_id"]
        response = await deploy(client, rule_id, 10)
        assert response.status_code == 200, response.text
        assert response.json()["deployment"]["commit_sha"] is None
        assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)
        response = await promote(client, rule_id)
        assert response.status_code == 200, response.text
        assert response.json()["deployment"]["commit_sha"] is None
        response = await rollback(client, rule_id)
        assert response.status_code == 200, response.text
        assert response.json()["deployment"]["commit_sha"] is None
        assert [d["commit_sha"] for d in await deployments(client)] == [None, None, None]

    assert git(project, "log", "--format=%H %an %s").stdout == parent_log
    assert not (rules_dir / ".git").exists()
    assert not (rules_dir / ".gitignore").exists()
    assert (rules_dir / RULES).read_bytes() != before  # the deploys did write the file
    assert [e["rule"] for e in entries(rules_dir)] == [e["rule"] for e in json.loads(before)["rules"]]


# ---------------------------------------------------------------------- Slack


def header_text(blocks: list[dict[str, Any]]) -> str:
    assert blocks[0]["type"] == "header"
    return blocks[0]["text"]["text"]


def context_text(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(e.get("text", "") for b in blocks if b["type"] == "context" for e in b["elements"])


@needs_git
async def test_slack_card_canary_then_promote(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> None:
    slack_api.set_user(ADMIN_USER, real_name="Admin")  # the commits' author is looked up (users.info)
    app = create_app(slack_settings(tmp_path, rules_dir, slack_api, git_history=True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            slack = SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)
            service = slack.service
            feedback = await service.submit(FeedbackIn(**WEATHER_FEEDBACK), REPORTER)
            await service.drain()
            rule = await rule_of(service, feedback.feedback_id)
            assert rule is not None and rule.module_name == RULES
            rule_id = rule.rule_id
            [post] = await slack_api.wait_for("chat.postMessage")
            assert action_ids(post.params["blocks"]) == ["rule_approve", "rule_edit", "rule_reject"]

            await slack.click("rule_approve", rule_id)
            updates = await slack_api.wait_for("chat.update", 1)
            assert action_ids(updates[-1].params["blocks"]) == ["rule_deploy", "rule_deploy_canary", "rule_reject"]
            buttons = {
                e["action_id"]: e for b in updates[-1].params["blocks"] if b["type"] == "actions" for e in b["elements"]
            }
            assert buttons["rule_deploy"]["text"]["text"] == "All users"
            assert buttons["rule_deploy_canary"]["text"]["text"] == "Canary 10 %"

            await slack.click("rule_deploy_canary", rule_id)
            updates = await slack_api.wait_for("chat.update", 2)
            blocks = updates[-1].params["blocks"]
            assert "canary 10 %" in header_text(blocks)
            assert action_ids(blocks) == ["rule_promote", "rule_rollback"]
            current = await service.get_rule(rule_id)
            assert current.status.value == "deployed" and current.rollout_percent == 10
            assert entry_for(rules_dir, NEW_WEATHER_RULE)["rollout_percent"] == 10
            assert OLD_WEATHER_RULE in read_rule_lines(rules_dir)
            [canary] = (await service.list_deployments(rule_id=rule_id)).items
            assert canary.commit_sha and f"commit `{canary.commit_sha[:10]}`" in context_text(blocks)
            assert "to 10 % of users" in context_text(blocks)

            await slack.click("rule_promote", rule_id)
            updates = await slack_api.wait_for("chat.update", 3)
            blocks = updates[-1].params["blocks"]
            assert "canary" not in header_text(blocks)
            assert action_ids(blocks) == ["rule_rollback"]
            current = await service.get_rule(rule_id)
            assert current.status.value == "deployed" and current.rollout_percent == 100
            assert "rollout_percent" not in entry_for(rules_dir, NEW_WEATHER_RULE)
            assert OLD_WEATHER_RULE not in read_rule_lines(rules_dir)
            assert len(slack_api.calls_to("chat.postMessage")) == 1  # the one card, updated in place
            assert {u.params["ts"] for u in slack_api.calls_to("chat.update")} == {post.response["ts"]}
