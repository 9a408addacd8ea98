"""Git authors of rule-file commits (issue 16): a Slack user's real name and e-mail from users.info, the id for
anyone else — a token subject, the pipeline itself, a Slack user Slack does not know — and a lookup that fails
or hangs never fails or blocks the commit. The real git binary, the real runtime with Slack on, and the fake
Slack Web API."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from autotrain.policy import Actor, Role
from bot.runtime import Runtime, open_runtime
from tests.conftest import REPO_ROOT, REPORTER, WEATHER_FEEDBACK, submit
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import slack_settings

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the git binary is not installed")

LAN = "U0LAN1234"


@pytest.fixture(autouse=True)
def neutral_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The machine's own git identity never reaches these tests."""
    empty = tmp_path / "empty-global-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def authors(rules_dir: Path) -> list[str]:
    """ "Name <email>" of each commit, newest first."""
    done = subprocess.run(
        ["git", "log", "--format=%an <%ae>"], cwd=rules_dir, capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


@asynccontextmanager
async def slack_runtime(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> AsyncIterator[Runtime]:
    runtime = await open_runtime(slack_settings(tmp_path, rules_dir, slack_api, git_history=True, auto_generate=False))
    try:
        yield runtime
    finally:
        await runtime.close()


async def deploy_as(runtime: Runtime, actor_id: str, line: str | None = None) -> str:
    """One rule deployed by `actor_id` (an admin): the offline generator's weather rule, or `line` added (a
    second deploy needs a line of its own to change the file); the deployment's commit sha."""
    feedback = await submit(runtime.service, {**WEATHER_FEEDBACK, "feedback_text": f"Trời nóng quá {line or ''}"})
    rule = await runtime.service.generate(feedback.feedback_id, REPORTER)
    actor = Actor(actor_id, Role.ADMIN)
    if line is not None:
        rule = await runtime.service.edit(
            rule.rule_id, actor, new_rule=line, module_name="fashion_rules.json", old_rule=""
        )
    await runtime.service.approve(rule.rule_id, actor)
    result = await runtime.service.deploy(rule.rule_id, actor)
    assert result.deployment.commit_sha, result.deployment
    return result.deployment.commit_sha


async def test_a_slack_admin_is_the_author_by_real_name_and_email(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    slack_api.set_user(LAN, real_name="Lan Nguyễn", email="lan@shop.vn", locale="vi-VN")
    async with slack_runtime(tmp_path, rules_dir, slack_api) as runtime:
        await deploy_as(runtime, LAN)
        await deploy_as(runtime, LAN, "- Khi trời nóng: gợi ý áo thun cotton")
        assert authors(rules_dir)[:2] == ["Lan Nguyễn <lan@shop.vn>"] * 2
        # one users.info for both commits, and the Slack side asks the same cache (one per process)
        assert runtime.slack is not None and runtime.history is not None
        people = runtime.slack.deps.people
        assert people is runtime.history.people  # type: ignore[attr-defined]
        assert (await people.person(LAN)).real_name == "Lan Nguyễn"
        assert [c.params["user"] for c in slack_api.calls_to("users.info")] == [LAN]
    assert authors(rules_dir)[-1] == "Auto-Train <autotrain@localhost>"  # the initial commit


async def test_a_name_without_an_email_keeps_the_ids_address(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    """Without the users:read.email scope Slack gives no e-mail."""
    slack_api.set_user(LAN, real_name="Lan <Nguyen>\nadmin")  # what git would refuse in a name is dropped
    async with slack_runtime(tmp_path, rules_dir, slack_api) as runtime:
        await deploy_as(runtime, LAN)
    assert authors(rules_dir)[0] == f"Lan Nguyen admin <{LAN.lower()}@autotrain.invalid>"


async def test_who_is_not_a_slack_user_keeps_the_id(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> None:
    """A token's subject (`autotrain token` mints cli-admin) is never looked up; an id-shaped subject Slack does
    not know is the id, as before."""
    slack_api.set_user(LAN, real_name="Lan Nguyen", email="lan@shop.vn")
    async with slack_runtime(tmp_path, rules_dir, slack_api) as runtime:
        await deploy_as(runtime, "cli-admin")
        assert slack_api.calls_to("users.info") == []
        assert authors(rules_dir)[0] == "cli-admin <cli-admin@autotrain.invalid>"


async def test_a_failing_or_hanging_users_info_never_holds_a_commit_up(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    slack_api.set_user(LAN, real_name="Lan Nguyen", email="lan@shop.vn")
    slack_api.fail_next("users.info", status=500, times=20)  # Slack down (with the client's own retries)
    async with slack_runtime(tmp_path, rules_dir, slack_api) as runtime:
        await deploy_as(runtime, LAN)
        assert authors(rules_dir)[0] == f"{LAN} <{LAN.lower()}@autotrain.invalid>"
        assert slack_api.calls_to("users.info")

    other = "U0SLOW999"
    slack_api.set_user(other, real_name="Chậm", email="slow@shop.vn")
    slack_api.delay("users.info", 6)  # Slack that does not answer in time
    async with slack_runtime(tmp_path, rules_dir, slack_api) as runtime:
        started = time.monotonic()
        await deploy_as(runtime, other, "- Khi trời nóng: gợi ý áo thun cotton")
        took = time.monotonic() - started
        slack_api.delay("users.info", 0)
    assert authors(rules_dir)[0] == f"{other} <{other.lower()}@autotrain.invalid>"
    assert took < 5, took  # the lookup's at most 3 s, not Slack's 6


async def test_without_slack_the_author_is_the_id(tmp_path: Path, rules_dir: Path) -> None:
    from tests.conftest import make_settings

    runtime = await open_runtime(make_settings(tmp_path, rules_dir, git_history=True))
    try:
        await deploy_as(runtime, "U0ADMIN")
    finally:
        await runtime.close()
    assert authors(rules_dir)[0] == "U0ADMIN <u0admin@autotrain.invalid>"


def test_the_manifest_asks_for_the_scopes_of_users_info() -> None:
    manifest = (REPO_ROOT / "manifest.yml").read_text(encoding="utf-8")
    scopes = [line.split("#")[0].strip().removeprefix("- ") for line in manifest.splitlines()]
    assert "users:read" in scopes and "users:read.email" in scopes


async def test_the_pipelines_own_actors_are_auto_train(tmp_path: Path, slack_api: FakeSlackApi) -> None:
    """`system` (a reconcile, a rollback by the pipeline) and `auto-approve` commit as Auto-Train, never looked
    up; `auto-canary` keeps its own name."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.git_history import AsyncGitHistory
    from bot.slack.people import SlackPeople

    people = SlackPeople(AsyncWebClient(token="xoxb-test", base_url=slack_api.base_url))
    history = AsyncGitHistory.open(tmp_path / "rules", people=people)
    assert await history.author("system") == ("Auto-Train", "autotrain@localhost")
    assert await history.author("auto-approve") == ("Auto-Train", "autotrain@localhost")
    assert await history.author("auto-canary") == ("auto-canary", "auto-canary@autotrain.invalid")
    assert slack_api.calls_to("users.info") == []
