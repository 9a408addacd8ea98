"""The git history every instance shares (`git_commits`, migration 3): one row per commit, in order.

- **The lock.** A session advisory lock (`pg_advisory_lock(SHARED_HISTORY_LOCK, hashtext('git'))`, connection.py
  `_session_lock`), held while a commit is made and appended: so each commit's parent is the newest one, and
  `seq` has no gap.
- **Readers need no lock.** A row is committed before its writer lets the lock go, so what any reader sees is
  always a whole beginning of the history.
- **The notification.** Appending notifies the rule files' channel (rulefiles.py) with an empty payload, so the
  other instances, which follow that channel, add the commit to their own repositories at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import asyncpg

from autotrain.ports import SharedCommit
from storage.postgres.connection import PostgresConnection, ts
from storage.postgres.rulefiles import CHANNEL

SHARED_HISTORY_LOCK = 0x41544748  # "ATGH": one key, one history


class SharedHistoryDiverged(RuntimeError):
    """A commit appended whose parent is not the newest commit: a writer without the lock (a bug)."""


def _commit(row: asyncpg.Record) -> SharedCommit:
    return SharedCommit(
        sha=row["sha"],
        parent=row["parent"],
        files=json.loads(row["files"]),
        author_name=row["author_name"],
        author_email=row["author_email"],
        committed_at=row["committed_at"],
        message=row["message"],
        seq=int(row["seq"]),
    )


class SharedHistoryMixin(PostgresConnection):
    def hold_shared_history(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._session_lock(SHARED_HISTORY_LOCK, "git")

    async def shared_commit(self, sha: str) -> SharedCommit | None:
        async with self._read() as db:
            row = await db.fetchrow("SELECT * FROM git_commits WHERE sha = $1", sha)
            return _commit(row) if row else None

    async def shared_commits(self, *, after: str | None) -> list[SharedCommit]:
        async with self._read() as db:
            since = 0
            if after is not None:
                since = await db.fetchval("SELECT seq FROM git_commits WHERE sha = $1", after) or 0
            rows = await db.fetch("SELECT * FROM git_commits WHERE seq > $1 ORDER BY seq", since)
            return [_commit(row) for row in rows]

    async def append_shared_commit(self, commit: SharedCommit) -> SharedCommit:
        async with self._tx() as db:
            newest = await db.fetchrow("SELECT seq, sha FROM git_commits ORDER BY seq DESC LIMIT 1")
            if (newest["sha"] if newest else None) != commit.parent:  # (a base or a root: an empty history)
                raise SharedHistoryDiverged(
                    f"commit {commit.sha[:10]}'s parent is {commit.parent}, the newest commit"
                    f" {newest['sha'] if newest else None}"
                )
            seq = (int(newest["seq"]) if newest else 0) + 1
            await db.execute(
                "INSERT INTO git_commits (seq, sha, parent, files, author_name, author_email, committed_at, message)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                seq,
                commit.sha,
                commit.parent,
                json.dumps(dict(commit.files), sort_keys=True),
                commit.author_name,
                commit.author_email,
                ts(commit.committed_at),
                commit.message,
            )
            await db.execute("SELECT pg_notify($1, '')", CHANNEL)  # at commit: the others follow at once
        return dataclasses.replace(commit, seq=seq)
