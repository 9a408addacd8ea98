"""One git history for every instance (PostgreSQL: bot/shared_history.py): each change committed once, by the
instance that made it, and rebuilt with the same sha in every other folder; where the history starts (the git
remote's branch, or a root commit of the first stored versions); a folder's own earlier history kept aside; a
commit that does not rebuild stops the following, loudly, and never gets a commit of its own on top.

Skipped (failed in CI) without a PostgreSQL server: tests/services.py.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

import asyncpg
import pytest

from bot.runtime import open_runtime
from bot.shared_history import GITIGNORE
from tests.conftest import ADMIN, SHIPPED_RULES, approved_rule, make_settings
from tests.test_concurrency import size_complaint
from tests.test_rule_files_in_database import folder_copy, open_instances, postgres_url  # noqa: F401

MODULE = "fashion_rules.json"


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout


def branch(folder: Path) -> list[str]:
    """The branch's commits, newest first: sha, parent(s), subject."""
    return git(folder, "log", "--format=%H %P | %an | %s", "main").splitlines()


async def same_branch(*folders: Path) -> list[str]:
    for _ in range(200):  # the other instance follows on the notification, within moments
        logs = [branch(folder) for folder in folders]
        if all(log == logs[0] for log in logs):
            return logs[0]
        await asyncio.sleep(0.01)
    raise AssertionError([branch(folder)[:2] for folder in folders])


def remote_with_history(tmp_path: Path) -> tuple[Path, str]:
    """A bare repository whose main has one commit of its own (the team's rules repository)."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(remote)], check=True)
    work = tmp_path / "team-clone"
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)
    (work / "README.md").write_text("The stylist bot's rules.\n")
    (work / MODULE).write_bytes((SHIPPED_RULES / MODULE).read_bytes())
    identity = ["-c", "user.name=Team", "-c", "user.email=team@example.com"]
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), *identity, "commit", "-q", "-m", "Our rules"], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", str(remote), "main"], check=True)
    return remote, git(work, "rev-parse", "HEAD").strip()


async def test_without_a_remote_the_history_starts_at_the_first_stored_versions(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    async with open_instances(tmp_path, postgres_url, git_history=True) as two:
        seed = (two.folders[0] / MODULE).read_bytes()
        first = await approved_rule(two.a.service, size_complaint(1))
        deployed = await two.a.service.deploy(first.rule_id, ADMIN)
        second = await approved_rule(two.b.service, size_complaint(2))
        through_b = await two.b.service.deploy(second.rule_id, ADMIN)

        log = await same_branch(*two.folders)
        assert len(log) == 3  # the root, then one commit per change
        root = log[-1].split()[0]
        assert log[-1].endswith("| Auto-Train | Auto-Train: track the rule files (their first stored versions)")
        assert len(log[-1].split(" | ")[0].split()) == 1  # no parent
        assert git(two.folders[0], "show", f"{root}:{MODULE}").encode() == seed
        assert git(two.folders[0], "show", f"{root}:.gitignore").encode() == GITIGNORE
        # each change's commit is the sha its deployment records, authored by who made it, and changes one file
        assert [line.split()[0] for line in log[:2]] == [
            through_b.deployment.commit_sha,
            deployed.deployment.commit_sha,
        ]
        assert all(f"| {ADMIN.id} | " in line for line in log[:2])
        for sha in (through_b.deployment.commit_sha, deployed.deployment.commit_sha):
            assert git(two.folders[1], "diff-tree", "--no-commit-id", "--name-only", "-r", sha).split() == [MODULE]
        # the folders are clean work trees of that branch: nothing the history lacks, nothing own
        for folder in two.folders:
            assert git(folder, "status", "--porcelain") == ""
            assert git(folder, "for-each-ref", "refs/autotrain/local-history") == ""


async def test_with_a_remote_the_history_continues_its_branch_and_every_instance_pushes_it(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    remote, team_commit = remote_with_history(tmp_path)
    async with open_instances(tmp_path, postgres_url, git_history=True, git_remote=str(remote)) as two:
        rule = await approved_rule(two.a.service, size_complaint(1))
        result = await two.a.service.deploy(rule.rule_id, ADMIN)
        log = await same_branch(*two.folders)
        assert [line.split(" | ")[0].strip() for line in log] == [
            f"{result.deployment.commit_sha} {team_commit}",
            team_commit,
        ]
        assert git(remote, "rev-parse", "main").strip() == result.deployment.commit_sha
        # the team's own files stay in the tree; the change is the only difference
        assert git(two.folders[1], "show", f"{result.deployment.commit_sha}:README.md") == "The stylist bot's rules.\n"
        changed = git(two.folders[1], "diff-tree", "--no-commit-id", "--name-only", "-r", result.deployment.commit_sha)
        assert changed.split() == [MODULE]

        # the other instance commits on top and pushes: a fast-forward of the same branch
        other = await approved_rule(two.b.service, size_complaint(2))
        pushed = await two.b.service.deploy(other.rule_id, ADMIN)
        assert git(remote, "rev-parse", "main").strip() == pushed.deployment.commit_sha
        assert git(remote, "rev-parse", f"{pushed.deployment.commit_sha}^").strip() == result.deployment.commit_sha
        deployments = (await two.a.service.list_deployments()).items
        assert all(d.pushed_at is not None and d.push_error is None for d in deployments)
        assert await same_branch(*two.folders) == branch(remote)


async def test_a_folders_own_history_is_kept_aside(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    folder = folder_copy(tmp_path, "rules-own")
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "add", "-A"], check=True)
    identity = ["-c", "user.name=Ops", "-c", "user.email=ops@example.com"]
    subprocess.run(["git", "-C", str(folder), *identity, "commit", "-q", "-m", "before Auto-Train"], check=True)
    own = git(folder, "rev-parse", "HEAD").strip()

    runtime = await open_runtime(make_settings(tmp_path, folder, database_url=postgres_url, git_history=True))
    try:
        rule = await approved_rule(runtime.service, size_complaint(1))
        result = await runtime.service.deploy(rule.rule_id, ADMIN)
    finally:
        await runtime.close()
    assert git(folder, "rev-parse", "main").strip() == result.deployment.commit_sha
    # nothing lost: its commits (and the .gitignore commit Auto-Train added at open) are kept under a ref
    kept = git(folder, "rev-parse", "refs/autotrain/local-history").strip()
    assert subprocess.run(["git", "-C", str(folder), "merge-base", "--is-ancestor", own, kept]).returncode == 0
    assert subprocess.run(["git", "-C", str(folder), "merge-base", "--is-ancestor", own, "main"]).returncode == 1


async def test_a_commit_that_does_not_rebuild_stops_the_following_and_says_so(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    a_folder, b_folder = folder_copy(tmp_path, "rules-a"), folder_copy(tmp_path, "rules-b")
    a = await open_runtime(make_settings(tmp_path, a_folder, database_url=postgres_url, git_history=True))
    try:
        rule = await approved_rule(a.service, size_complaint(1))
        await a.service.deploy(rule.rule_id, ADMIN)
    finally:
        await a.close()
    db = await asyncpg.connect(postgres_url)
    try:  # a row no instance can rebuild to its sha (as a git that wrote commits differently would make)
        await db.execute("UPDATE git_commits SET message = message || 'edited' WHERE seq = 2")
    finally:
        await db.close()

    caplog.set_level(logging.ERROR, logger="autotrain.git")
    b = await open_runtime(make_settings(tmp_path, b_folder, database_url=postgres_url, git_history=True))
    try:
        before = git(b_folder, "for-each-ref", "refs/heads")
        other = await approved_rule(b.service, size_complaint(2))
        result = await b.service.deploy(other.rule_id, ADMIN)  # the deploy itself goes ahead
        assert result.rule.status.value == "deployed"
        deployment = await b.store.get_deployment(result.deployment.deployment_id)
        assert deployment is not None
        assert deployment.commit_sha is None
        assert "rebuilding commit 2 of the shared git history" in caplog.text
        assert "rebuilding commit 2" in (deployment.commit_error or "")
        assert git(b_folder, "for-each-ref", "refs/heads") == before  # no commit of its own on top
    finally:
        await b.close()
    db = await asyncpg.connect(postgres_url)
    try:
        assert await db.fetchval("SELECT COUNT(*) FROM git_commits") == 2
    finally:
        await db.close()


async def test_a_new_folder_takes_what_the_remote_has_rather_than_rebuilding_it(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(remote)], check=True)
    a_folder, b_folder = folder_copy(tmp_path, "rules-a"), folder_copy(tmp_path, "rules-b")
    settings = {"database_url": postgres_url, "git_history": True, "git_remote": str(remote)}
    a = await open_runtime(make_settings(tmp_path, a_folder, **settings))
    try:
        for n in (1, 2):
            await a.service.deploy((await approved_rule(a.service, size_complaint(n))).rule_id, ADMIN)
    finally:
        await a.close()
    pushed = git(remote, "rev-parse", "main").strip()
    db = await asyncpg.connect(postgres_url)
    try:  # rows that would not rebuild: taking them from the remote is the only way to get them right
        await db.execute("UPDATE git_commits SET message = message || 'edited'")
    finally:
        await db.close()

    caplog.set_level(logging.ERROR, logger="autotrain.git")
    b = await open_runtime(make_settings(tmp_path, b_folder, **settings))  # an ephemeral disk: a new folder
    try:
        result = await b.service.deploy((await approved_rule(b.service, size_complaint(3))).rule_id, ADMIN)
    finally:
        await b.close()
    assert "rebuilding" not in caplog.text
    assert git(b_folder, "rev-parse", f"{result.deployment.commit_sha}^").strip() == pushed
    assert git(remote, "rev-parse", "main").strip() == result.deployment.commit_sha
