"""Git history without gaps: a rule-file change written but not committed (a crash, or a commit that failed)
is committed under its own rule and author — at the next start, or before the next deploy of that file — and
never slips into another rule's commit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bot.runtime import open_runtime
from tests.conftest import ADMIN, HEIGHT_FEEDBACK, WEATHER_FEEDBACK, approved_rule, make_settings

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the git binary is not installed")

RULES = "fashion_rules.json"


@pytest.fixture(autouse=True)
def neutral_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-global-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git_log(cwd: Path) -> list[tuple[str, str]]:
    """(author, subject) of each commit, newest first."""
    out = subprocess.run(
        ["git", "log", "--format=%an%x09%s"], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
    return [tuple(line.split("\t", 1)) for line in out.splitlines()]  # type: ignore[misc]


def dirty(cwd: Path) -> list[str]:
    out = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


async def deploy_without_commit(settings, rules_dir: Path):
    """A deploy whose commit cannot happen (another git process's lock), as a crash after the write leaves it."""
    runtime = await open_runtime(settings)
    try:
        rule = await approved_rule(runtime.service, WEATHER_FEEDBACK)
        (rules_dir / ".git" / "index.lock").write_text("")
        deployed = await runtime.service.deploy(rule.rule_id, ADMIN)
        (rules_dir / ".git" / "index.lock").unlink()
        assert deployed.deployment.commit_sha is None
        assert dirty(rules_dir) == [f" M {RULES}"]
        return rule, deployed.deployment
    finally:
        await runtime.close()


async def test_a_restart_commits_what_was_written_but_not_committed(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir, git_history=True)
    rule, _ = await deploy_without_commit(settings, rules_dir)

    runtime = await open_runtime(settings, reconcile=True)
    try:
        assert dirty(rules_dir) == []
        author, subject = git_log(rules_dir)[0]
        assert (author, subject.split(":")[0]) == (ADMIN.id, f"Deploy {rule.rule_id} ({rule.feedback_id})")
        [stored] = (await runtime.service.list_deployments(rule_id=rule.rule_id)).items
        assert stored.commit_sha is not None
        assert (await runtime.service.reconcile()).commits_restored == []  # nothing left to commit
    finally:
        await runtime.close()


async def test_the_next_deploy_commits_the_earlier_change_under_its_own_rule(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir, git_history=True)
    first, _ = await deploy_without_commit(settings, rules_dir)

    runtime = await open_runtime(settings)  # no reconcile: the next deploy finds it
    try:
        second = await approved_rule(runtime.service, HEIGHT_FEEDBACK)
        await runtime.service.deploy(second.rule_id, ADMIN)
        subjects = [subject for _, subject in git_log(rules_dir)[:2]]
        assert subjects[0].startswith(f"Deploy {second.rule_id} ")
        assert subjects[1].startswith(f"Deploy {first.rule_id} ")
        assert dirty(rules_dir) == []
        # the second rule's commit holds only its own change
        shown = subprocess.run(
            ["git", "show", "--format=", "HEAD", "--", RULES], cwd=rules_dir, capture_output=True, text=True
        ).stdout
        added = [line for line in shown.splitlines() if line.startswith("+") and not line.startswith("+++")]
        assert any(second.new_rule in line for line in added)
        assert not any(first.new_rule in line for line in added)
    finally:
        await runtime.close()


async def test_a_stale_git_lock_is_cleared_and_the_deploy_committed(tmp_path: Path, rules_dir: Path) -> None:
    """A git process that died left .git/index.lock: every later commit failed, forever, seen only in the log."""
    import os
    import time

    settings = make_settings(tmp_path, rules_dir, git_history=True)
    runtime = await open_runtime(settings)
    try:
        rule = await approved_rule(runtime.service, WEATHER_FEEDBACK)
        lock = rules_dir / ".git" / "index.lock"
        lock.write_text("")
        ten_minutes_ago = time.time() - 600
        os.utime(lock, (ten_minutes_ago, ten_minutes_ago))
        deployed = await runtime.service.deploy(rule.rule_id, ADMIN)
        assert deployed.deployment.commit_sha is not None
        assert not lock.exists()
        assert dirty(rules_dir) == []
        assert git_log(rules_dir)[0][1].startswith(f"Deploy {rule.rule_id} ")
    finally:
        await runtime.close()


async def test_a_held_git_lock_is_shown_in_status_on_the_card_and_as_an_alert(tmp_path: Path, rules_dir: Path) -> None:
    """A commit that cannot happen is no longer visible only in the log: the deployment keeps the reason, and
    /status, /metrics, the rule's card and the git_history alert show it until a later commit includes it."""
    from bot.slack import blocks
    from tests.fakes.monitoring import RecordingSink

    sink = RecordingSink()
    settings = make_settings(tmp_path, rules_dir, git_history=True)
    runtime = await open_runtime(settings, monitoring_sinks=(sink,))
    try:
        rule = await approved_rule(runtime.service, WEATHER_FEEDBACK)
        lock = rules_dir / ".git" / "index.lock"
        lock.write_text("")  # fresh: another git process may hold it, so it is not removed
        deployed = await runtime.service.deploy(rule.rule_id, ADMIN)
        assert deployed.deployment.commit_sha is None
        [stored] = (await runtime.service.list_deployments(rule_id=rule.rule_id)).items
        assert stored.commit_error is not None and "git is locked" in stored.commit_error
        assert str(lock) in stored.commit_error

        status = await runtime.service.status()
        assert status.git_history and status.uncommitted_deployments == 1
        assert status.last_commit_error == stored.commit_error
        status_text = str(blocks.status_blocks(status))
        assert "1 deployed change is not committed yet" in status_text and "git is locked" in status_text

        _, card = blocks.rule_card(
            await runtime.service.get_rule(rule.rule_id), None, stored, canary_percent=settings.canary_percent
        )
        assert "Not in git history yet: git is locked" in str(card)

        [fired] = [e for e in await runtime.monitor.check_alerts() if e.name == "git_history"]
        assert (fired.kind.value, fired.value) == ("fired", 1.0)
        assert [e.name for e in sink.alerts] == ["git_history"]

        lock.unlink()  # the other git process is done: the next change of the file commits both
        second = await approved_rule(runtime.service, HEIGHT_FEEDBACK)
        again = await runtime.service.deploy(second.rule_id, ADMIN)
        assert again.deployment.commit_sha is not None
        [first] = (await runtime.service.list_deployments(rule_id=rule.rule_id)).items
        assert first.commit_sha is not None and first.commit_error is None
        status = await runtime.service.status()
        assert status.uncommitted_deployments == 0 and status.last_commit_error is None
        [resolved] = [e for e in await runtime.monitor.check_alerts() if e.name == "git_history"]
        assert resolved.kind.value == "resolved"
    finally:
        await runtime.close()
