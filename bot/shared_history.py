"""One git history of the rule files for every instance (PostgreSQL): each change is committed once, by the
instance that made it, and every instance's rules folder holds the same commits — the same shas — so a push
from any of them is a fast-forward of the same branch.

How: the history's order is in the database (`SharedHistory`: one row per commit, appended under one lock).
A commit is made from content, not from the work tree (`GitRuleHistory.build_commit`): its tree is its
parent's with the changed file set to the stored version, its committer is Auto-Train, both of its dates
are the row's, its author is the row's (looked up once, by the instance that made it). Every other instance
rebuilds it from the row and the stored version and gets the same sha; a different one stops the following
(an ERROR), never a commit of its own on top.

Where the history starts (the first commit, made by whichever instance commits first):
- AUTOTRAIN_GIT_REMOTE set and its branch exists: that commit (a base row); the history continues the
  remote's, and each instance fetches the base from the remote;
- otherwise: a root commit of every stored rule file's first version and the `.gitignore` of Auto-Train's
  working files.
A folder's own commits from before (its repository's history, or the SQLite era) stay in it under
`refs/autotrain/local-history`; the branch follows the shared history.

When an instance follows: before each commit and push of its own, and whenever the database says a commit
was appended (the rule files' channel; `MaterializeRuleFiles(after_sync=...)`, in the background from the
start on, and every few seconds). A new folder first fetches what the git remote has (an ephemeral disk does
not rebuild the whole history); without a remote it rebuilds every commit once. A push sends the shared
branch; every deployment's commit is on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime

from autotrain.options import Clock
from autotrain.ports import RuleFileVersions, SharedCommit, SharedHistory
from autotrain.rulefiles import RuleFiles, content_version
from bot.git_history import DEFAULT_BRANCH, GITIGNORE_LINES, AsyncGitHistory, GitHistoryError

log = logging.getLogger("autotrain.git")

GITIGNORE = "".join(f"{line}\n" for line in GITIGNORE_LINES).encode()
ROOT_MESSAGE = "Auto-Train: track the rule files (their first stored versions)\n"


class SharedGitHistory:
    """The RuleHistory port when several instances share one database: commit, remote, push, and `follow`."""

    def __init__(
        self,
        local: AsyncGitHistory,
        *,
        shared: SharedHistory,
        versions: RuleFileVersions,
        rule_files: RuleFiles,
        clock: Clock,
    ) -> None:
        self.local = local
        self.git = local.history
        self.shared = shared
        self.versions = versions
        self.rule_files = rule_files
        self.clock = clock
        self._lock = asyncio.Lock()  # this process's commits and follows of the one repository, one at a time
        self._broken: str | None = None  # why following stopped (a rebuilt commit that differs)
        # the remote's branch the history continues and is pushed to: AUTOTRAIN_GIT_BRANCH, else the one checked
        # out here (as pushes have it)
        self.branch = local.branch or self.git.branch_name() or DEFAULT_BRANCH

    @property
    def remote(self) -> str | None:
        return self.local.remote

    async def commit(self, module_name: str, *, author: str, message: str) -> str | None:
        """Commit the file's newest stored version as the next commit of the shared history; None when the
        history has that content already (nothing changed)."""
        name, email = await self.local.author(author)  # (before the lock: users.info may take seconds)
        async with self._lock, self.shared.hold_shared_history():
            tip = await self._follow()
            stored = await self.versions.latest_rule_file(module_name)
            if stored is None:
                return None
            if tip is None:
                tip = await self._begin()
            commit = SharedCommit(
                sha="",
                parent=tip,
                files={module_name: stored.version},
                author_name=name,
                author_email=email,
                committed_at=_whole_seconds(self.clock()),
                message=_normalized(message),
            )
            sha = await self._append(commit, {module_name: stored.content})
            return sha if sha is not None else await self._committed_already(module_name, stored.version)

    async def push(self, commits: Sequence[str]) -> set[str]:
        """Push the shared branch, followed to its newest commit first (so no instance pushes an older one)."""
        async with self._lock, self.shared.hold_shared_history():
            await self._follow()
            return await self.local.push(commits)

    async def follow(self) -> None:
        """Add the commits other instances appended to this folder's repository (the materializer's hook).
        Never raises: a failure is logged, and the next round tries again."""
        if self._broken is not None:
            return
        try:
            async with self._lock:
                await self._follow()
        except Exception as exc:
            log.warning("cannot bring this folder's git history up to date yet: %s", exc)

    # ------------------------------------------------------------------ inside the lock(s)

    async def _follow(self) -> str | None:
        """Rebuild the commits this repository lacks, in order, and move the branch to the newest; its sha (None:
        the shared history is empty)."""
        if self._broken is not None:
            raise GitHistoryError(self._broken)
        mine = await asyncio.to_thread(self.git.tip)
        branch = mine
        known = mine is not None and await self.shared.shared_commit(mine) is not None
        if not known and self.remote is not None:
            # a new folder (an ephemeral disk): what the remote has already is fetched, not rebuilt commit by commit
            with contextlib.suppress(GitHistoryError):
                fetched = await self._fetch()
                if fetched is not None and await self.shared.shared_commit(fetched) is not None:
                    mine, known = fetched, True
        commits = await self.shared.shared_commits(after=mine if known else None)
        if commits:
            have = await asyncio.to_thread(self.git.present, [c.sha for c in commits])
            for commit in commits:
                if commit.sha not in have:
                    await self._rebuild(commit)
            mine, known = commits[-1].sha, True
        if not known or mine is None:
            return None
        if mine != branch:
            await asyncio.to_thread(self.git.move_to, mine)
        return mine

    async def _rebuild(self, commit: SharedCommit) -> None:
        if commit.is_base:
            if self.remote is None:
                raise GitHistoryError(
                    f"the shared git history starts at {commit.sha[:10]} of the git remote, which this instance"
                    " cannot fetch: set AUTOTRAIN_GIT_REMOTE as on the other instances"
                )
            fetched = await self._fetch()
            if commit.sha not in await asyncio.to_thread(self.git.present, [commit.sha]):
                raise GitHistoryError(
                    f"the git remote's {self.branch} is at {(fetched or 'nothing')[:10]} and does not have"
                    f" {commit.sha[:10]}, where the shared history starts"
                )
            return
        contents: dict[str, bytes] = {}
        for path, version in commit.files.items():
            if path == ".gitignore":
                contents[path] = GITIGNORE
                continue
            stored = await self.versions.rule_file_with_version(path, version)
            if stored is None:
                raise GitHistoryError(f"commit {commit.sha[:10]} sets {path} to version {version}, never stored")
            contents[path] = stored.content
        sha = await self._build(commit, contents)
        if sha != commit.sha:
            sha = sha or "nothing"
            self._broken = (
                f"rebuilding commit {commit.seq} of the shared git history gave {sha[:10]}, not {commit.sha[:10]}:"
                " this folder's git history stops following (the rule files themselves are not affected)"
            )
            log.error("%s", self._broken)
            raise GitHistoryError(self._broken)

    async def _begin(self) -> str:
        """Start the shared history (it is empty): the remote's branch, or a root commit of every stored file's
        first version (the change being committed is the next commit)."""
        if self.remote is not None:
            base = await self._fetch()
            if base is not None:
                commit = SharedCommit(
                    sha=base,
                    parent=None,
                    files={},
                    author_name="",
                    author_email="",
                    committed_at=_whole_seconds(self.clock()),
                    message="",
                )
                await self.shared.append_shared_commit(commit)
                await asyncio.to_thread(self.git.move_to, base)
                log.info("the shared git history continues %s of the git remote (%s)", self.branch, base[:10])
                return base
        contents: dict[str, bytes] = {".gitignore": GITIGNORE}
        files = {".gitignore": content_version(GITIGNORE)}
        for module_name in self.rule_files.allowed_modules:
            first = await self._first_version(module_name)
            if first is not None:
                contents[module_name] = first
                files[module_name] = content_version(first)
        root = SharedCommit(
            sha="",
            parent=None,
            files=files,
            author_name=self.git.committer,
            author_email=self.git.committer_email,
            committed_at=_whole_seconds(self.clock()),
            message=ROOT_MESSAGE,
        )
        sha = await self._append(root, contents)
        assert sha is not None  # (a root commit always is one)
        return sha

    async def _committed_already(self, module_name: str, version: str) -> str | None:
        """The commit that last set this file, when it set it to `version`: an instance that made it died before
        recording it on its deployment, so the catch-up records it rather than finding nothing to commit."""
        for commit in reversed(await self.shared.shared_commits(after=None)):
            if module_name in commit.files:
                return commit.sha if commit.files[module_name] == version and commit.parent else None
        return None

    async def _first_version(self, module_name: str) -> bytes | None:
        stored = await self.versions.rule_file_number(module_name, 1)
        return stored.content if stored is not None else None

    async def _append(self, commit: SharedCommit, contents: dict[str, bytes]) -> str | None:
        """Make the commit, append it to the shared history, and move this branch to it (None: the parent has
        that content already, nothing to commit). A crash after the commit is made and before it is appended
        leaves an object nothing refers to; the change is committed again (reconcile.py: commit_uncommitted)."""
        sha = await self._build(commit, contents)
        if sha is None:
            return None
        await self.shared.append_shared_commit(dataclasses.replace(commit, sha=sha))
        await asyncio.to_thread(self.git.move_to, sha, expected=commit.parent)
        return sha

    async def _fetch(self) -> str | None:
        """The remote's branch, fetched (None: it has no such branch); call with a remote."""
        assert self.remote is not None
        return await asyncio.to_thread(self.git.fetch, self.remote, self.branch, timeout=self.local.push_timeout)

    async def _build(self, commit: SharedCommit, contents: dict[str, bytes]) -> str | None:
        """The git commit of this row, from these contents (its sha; None: nothing changed)."""
        return await asyncio.to_thread(
            self.git.build_commit,
            commit.parent,
            contents,
            author=(commit.author_name, commit.author_email),
            at=commit.committed_at,
            message=commit.message,
        )


def _whole_seconds(at: datetime) -> datetime:
    return at.replace(microsecond=0)


def _normalized(message: str) -> str:
    """The message as `git commit --cleanup=whitespace` keeps it, so that every instance stores the same."""
    lines = [line.rstrip() for line in message.strip().splitlines()]
    return "\n".join(lines) + "\n"
