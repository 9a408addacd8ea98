"""Issue 13, part 4, "Git push": every rule-file commit reaches AUTOTRAIN_GIT_REMOTE (a bare repository here).
A push never fails or undoes a deploy: a failed one is recorded on the deployment (push_error), shown as the
git_push alert, and retried — with the next commit, which sends the earlier commits too, and by
`push_pending`, the scheduler's retry."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from autotrain.models import Deployment
from autotrain.usecases.commits import push_pending
from bot.git_history import AsyncGitHistory, GitHistoryError
from bot.runtime import Runtime, open_runtime
from tests.conftest import ADMIN, HEIGHT_FEEDBACK, approved_rule, make_settings, read_rule_lines
from tests.test_rule_composition import LINE_A, LINE_B, rule_with

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the git binary is not installed")

BRANCH = "main"
# the parts that go through open_runtime with AUTOTRAIN_GIT_REMOTE set: bot/runtime.py's git_history(settings)
# must pass settings.git_remote / settings.git_branch to AsyncGitHistory.open


@pytest.fixture(autouse=True)
def neutral_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-global-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Someone", "-c", "user.email=someone@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def bare_repository(path: Path) -> Path:
    git("init", "-q", "--bare", str(path))
    return path


def remote_subjects(bare: Path, branch: str = BRANCH) -> list[str]:
    return git(f"--git-dir={bare}", "log", "--format=%s", branch).splitlines()


def local_subjects(rules_dir: Path) -> list[str]:
    return git("log", "--format=%s", cwd=rules_dir).splitlines()


async def deployments(runtime: Runtime) -> list[Deployment]:
    return (await runtime.service.list_deployments(limit=100)).items


async def git_push_alert(runtime: Runtime) -> str | None:
    """What the git_push alert did at this check: "fired", "resolved", "repeated", or None."""
    events = [e for e in await runtime.monitor.check_alerts() if e.name == "git_push"]
    return events[0].kind.value if events else None


async def canary_promote_rollback(runtime: Runtime, rules_dir: Path, bare: Path | None) -> list[str]:
    """A canary, its promotion, a second rule deployed, the first rolled back; after each step (when `bare`
    is given) the remote has the commit just made. The commit subjects, oldest first."""
    service = runtime.service
    first = await rule_with(service, 1, LINE_A)
    second = await rule_with(service, 2, LINE_B, old_rule=None)
    steps = (
        lambda: service.deploy(first.rule_id, ADMIN, rollout_percent=10),
        lambda: service.promote(first.rule_id, ADMIN),
        lambda: service.deploy(second.rule_id, ADMIN),
        lambda: service.rollback(first.rule_id, ADMIN),
    )
    for step in steps:
        result = await step()
        assert result.deployment.commit_sha is not None
        if bare is not None:
            assert remote_subjects(bare)[0] == local_subjects(rules_dir)[0]
            stored = await runtime.store.get_deployment(result.deployment.deployment_id)
            assert stored.pushed_at is not None and stored.push_error is None
    subjects = local_subjects(rules_dir)[:4][::-1]
    assert [s.split(" ")[0] for s in subjects] == ["Canary", "Promote", "Deploy", "Roll"]
    return subjects


# --- through the runtime, once bot/runtime.py passes AUTOTRAIN_GIT_REMOTE / AUTOTRAIN_GIT_BRANCH -----------


async def test_every_deploy_promote_and_rollback_is_pushed(tmp_path: Path, rules_dir: Path) -> None:
    bare = bare_repository(tmp_path / "remote.git")
    settings = make_settings(tmp_path, rules_dir, git_history=True, git_remote=str(bare), git_branch=BRANCH)
    runtime = await open_runtime(settings)
    try:
        subjects = await canary_promote_rollback(runtime, rules_dir, bare)
        assert remote_subjects(bare) == local_subjects(rules_dir)  # the whole history, the first commit too
        assert remote_subjects(bare)[:4] == subjects[::-1]
        assert all(d.pushed_at is not None and d.push_error is None for d in await deployments(runtime))
        assert await git_push_alert(runtime) is None
    finally:
        await runtime.close()


async def test_an_unreachable_remote_never_fails_a_deploy_and_the_next_commit_pushes_both(
    tmp_path: Path, rules_dir: Path
) -> None:
    missing = tmp_path / "not-yet" / "remote.git"
    settings = make_settings(tmp_path, rules_dir, git_history=True, git_remote=str(missing), git_branch=BRANCH)
    runtime = await open_runtime(settings)
    try:
        rule = await rule_with(runtime.service, 1, LINE_A)
        deployed = await runtime.service.deploy(rule.rule_id, ADMIN, rollout_percent=10)
        assert deployed.deployment.commit_sha is not None  # the deploy stands: written, committed
        assert any(LINE_A in line for line in read_rule_lines(rules_dir))
        assert local_subjects(rules_dir)[0].startswith(f"Canary 10 %: {rule.rule_id} ")
        [stored] = await deployments(runtime)
        assert stored.pushed_at is None
        assert stored.push_error is not None and str(missing) in stored.push_error
        assert await git_push_alert(runtime) == "fired"

        bare_repository(missing)  # the remote is back: the next commit pushes both
        other = await approved_rule(runtime.service, HEIGHT_FEEDBACK)
        await runtime.service.deploy(other.rule_id, ADMIN)
        assert remote_subjects(missing) == local_subjects(rules_dir)
        assert all(d.pushed_at is not None and d.push_error is None for d in await deployments(runtime))
        assert await git_push_alert(runtime) == "resolved"
    finally:
        await runtime.close()


# --- the retry (the scheduler's push_pending), and the store and alert behind it: no runtime change needed ---


async def test_the_retry_pushes_every_commit_and_marks_every_deployment(tmp_path: Path, rules_dir: Path) -> None:
    """Deployments from before a remote was set (or whose push failed) are pushed, all in one push."""
    bare = bare_repository(tmp_path / "remote.git")
    runtime = await open_runtime(make_settings(tmp_path, rules_dir, git_history=True))
    try:
        subjects = await canary_promote_rollback(runtime, rules_dir, None)
        history = AsyncGitHistory.open(rules_dir, remote=str(bare), branch=BRANCH)
        assert await push_pending(history, runtime.store) is True
        assert remote_subjects(bare) == local_subjects(rules_dir)
        assert remote_subjects(bare)[:4] == subjects[::-1]
        stored = await deployments(runtime)
        assert len(stored) == 4
        assert all(d.pushed_at is not None and d.push_error is None for d in stored)
        assert await push_pending(history, runtime.store) is True  # nothing left to push
        assert await git_push_alert(runtime) is None
    finally:
        await runtime.close()


async def test_a_failed_push_is_recorded_alerted_and_retried_once_the_remote_exists(
    tmp_path: Path, rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "not-yet" / "remote.git"
    runtime = await open_runtime(make_settings(tmp_path, rules_dir, git_history=True))
    try:
        rule = await rule_with(runtime.service, 1, LINE_A)
        await runtime.service.deploy(rule.rule_id, ADMIN, rollout_percent=10)
        await runtime.service.promote(rule.rule_id, ADMIN)
        history = AsyncGitHistory.open(rules_dir, remote=f"file://{missing}", branch=BRANCH)
        with caplog.at_level("WARNING", logger="autotrain.deploys"):
            assert await push_pending(history, runtime.store) is False
        [warning] = [r for r in caplog.records if "push" in r.getMessage()]
        assert warning.levelname == "WARNING"
        for each in await deployments(runtime):
            assert each.commit_sha is not None and each.pushed_at is None
            assert each.push_error is not None and "git push to file://" in each.push_error
        assert (await runtime.monitor.metrics()).unpushed_deployments == 2
        assert await git_push_alert(runtime) == "fired"

        bare_repository(missing)
        assert await push_pending(history, runtime.store) is True
        assert remote_subjects(missing) == local_subjects(rules_dir)
        assert all(d.pushed_at is not None and d.push_error is None for d in await deployments(runtime))
        assert await git_push_alert(runtime) == "resolved"
    finally:
        await runtime.close()


async def test_a_remote_branch_that_moved_on_is_refused_never_forced(tmp_path: Path, rules_dir: Path) -> None:
    bare = bare_repository(tmp_path / "remote.git")
    elsewhere = tmp_path / "elsewhere"
    git("init", "-q", f"--initial-branch={BRANCH}", str(elsewhere))
    git("commit", "-q", "--allow-empty", "-m", "someone else's work", cwd=elsewhere)
    git("push", "-q", str(bare), f"{BRANCH}:{BRANCH}", cwd=elsewhere)
    runtime = await open_runtime(make_settings(tmp_path, rules_dir, git_history=True))
    try:
        rule = await rule_with(runtime.service, 1, LINE_A)
        await runtime.service.deploy(rule.rule_id, ADMIN)
        history = AsyncGitHistory.open(rules_dir, remote=str(bare), branch=BRANCH)
        assert await push_pending(history, runtime.store) is False
        [stored] = await deployments(runtime)
        assert stored.push_error is not None and "rejected" in stored.push_error
        assert "hint:" not in stored.push_error
        assert remote_subjects(bare) == ["someone else's work"]
    finally:
        await runtime.close()


# --- the adapter ------------------------------------------------------------------------------------------


def test_open_without_a_remote_keeps_working(rules_dir: Path) -> None:
    history = AsyncGitHistory.open(rules_dir)
    assert history.remote is None and history.branch is None


async def test_the_default_branch_is_the_checked_out_one_and_a_detached_head_says_so(
    tmp_path: Path, rules_dir: Path
) -> None:
    bare = bare_repository(tmp_path / "remote.git")
    history = AsyncGitHistory.open(rules_dir, remote=str(bare))
    head = git("rev-parse", "HEAD", cwd=rules_dir).strip()
    assert await history.push([head]) == {head}
    assert git(f"--git-dir={bare}", "rev-parse", BRANCH).strip() == head

    git("checkout", "-q", "--detach", cwd=rules_dir)
    with pytest.raises(GitHistoryError, match="AUTOTRAIN_GIT_BRANCH"):
        await history.push([head])


async def test_a_relative_path_is_meant_from_where_autotrain_starts(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = bare_repository(tmp_path / "remote.git")
    monkeypatch.chdir(tmp_path)
    history = AsyncGitHistory.open(rules_dir, remote="remote.git", branch=BRANCH)
    assert history.remote == str(bare)
    head = git("rev-parse", "HEAD", cwd=rules_dir).strip()
    assert await history.push([head]) == {head}


async def test_credentials_in_the_url_never_reach_the_error(rules_dir: Path) -> None:
    history = AsyncGitHistory.open(rules_dir, remote="https://bot:s3cret-token@127.0.0.1:1/rules.git")
    with pytest.raises(GitHistoryError) as failure:
        await history.push([])
    assert "s3cret-token" not in str(failure.value)
    assert "https://***@127.0.0.1:1/rules.git" in str(failure.value)


async def test_a_remote_that_does_not_answer_times_out(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ssh that never answers (GIT_SSH_COMMAND, kept for the transport): killed with its whole process
    group once the push timeout is up, not when ssh gives up."""
    monkeypatch.setenv("GIT_SSH_COMMAND", "sleep 30; :")
    history = AsyncGitHistory.open(rules_dir, remote="ssh://example.invalid/rules.git", push_timeout=1)
    started = time.monotonic()
    with pytest.raises(GitHistoryError, match="took longer than 1 s"):
        await history.push([])
    assert time.monotonic() - started < 5
