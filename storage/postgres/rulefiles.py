"""The rule files' truth: every version of every rule file (`rule_file_versions`, migration 2), the per-file lock
every instance takes to change one, and the notification that tells every instance a file changed.

- **Versions.** A deploy, canary, promote or rollback stores the file's next version in the transaction that
  marks its deployment applied (`complete_deployment_with_file`), so a version and its deployment exist together
  or not at all. The first version of a file is the seed: the content of the first instance's local file.
- **The lock.** A session advisory lock (`pg_advisory_lock(RULE_FILE_LOCK, hashtext(module))`) on a pooled
  connection kept for the whole change: not a transaction's lock, since a deploy is several transactions (begin,
  complete, the git commit's record). The server drops it with the connection, so a killed instance never
  leaves a file locked; a wait longer than the pool's lock_timeout is StoreBusy, as a row lock's.
- **The notification.** `pg_notify(CHANNEL, module)` in the transaction that stores a version: delivered to every
  listening instance at commit (and never for a rolled-back one). A listener is one connection of its own,
  outside the pool; a lost one is opened again by the next `watch_rule_files`, and the caller then checks every
  file (it may have missed a change).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from autotrain.models import Deployment, HandEditedFile, NewEvent
from autotrain.ports import StoredRuleFile
from storage.postgres.connection import PostgresConnection, ts
from storage.postgres.deployments import complete_in
from storage.postgres.queries import audit

log = logging.getLogger("storage.postgres")

CHANNEL = "autotrain_rule_files"
RULE_FILE_LOCK = 0x41545246  # the first key of a rule file's advisory lock ("ATRF"); the second: hashtext(module)
HAND_EDIT_ACTION = "rule_file_hand_edited"  # the audit row of a hand edit an instance found (materialize.py)


class RuleFileChanged(RuntimeError):
    """The stored file is not the one the change was derived from: someone wrote it without the file's lock."""


def _stored(row: asyncpg.Record) -> StoredRuleFile:
    return StoredRuleFile(
        module_name=row["module_name"],
        number=int(row["version"]),
        content=bytes(row["content"]),
        deployment_id=row["deployment_id"],
        created_at=row["created_at"],
    )


async def _insert_version(
    db: asyncpg.Connection, module_name: str, number: int, content: bytes, deployment_id: int | None, now: datetime
) -> None:
    await db.execute(
        "INSERT INTO rule_file_versions (module_name, version, content, content_hash, deployment_id, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        module_name,
        number,
        content,
        hashlib.sha256(content).hexdigest(),
        deployment_id,
        ts(now),
    )
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, module_name)  # sent at commit, to every instance


class RuleFileMixin(PostgresConnection):
    _listener: asyncpg.Connection | None = None

    async def latest_rule_file(self, module_name: str) -> StoredRuleFile | None:
        async with self._read() as db:
            row = await db.fetchrow(
                "SELECT * FROM rule_file_versions WHERE module_name = $1 ORDER BY version DESC LIMIT 1", module_name
            )
            return _stored(row) if row else None

    async def latest_rule_file_numbers(self) -> dict[str, tuple[int, str]]:
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT DISTINCT ON (module_name) module_name, version, left(content_hash, 16) AS content_version"
                " FROM rule_file_versions ORDER BY module_name, version DESC"
            )
            return {row["module_name"]: (int(row["version"]), row["content_version"]) for row in rows}

    async def rule_file_with_version(self, module_name: str, version: str) -> StoredRuleFile | None:
        async with self._read() as db:
            row = await db.fetchrow(
                "SELECT * FROM rule_file_versions WHERE module_name = $1 AND left(content_hash, 16) = $2"
                " ORDER BY version DESC LIMIT 1",
                module_name,
                version,
            )
            return _stored(row) if row else None

    async def rule_file_number(self, module_name: str, number: int) -> StoredRuleFile | None:
        async with self._read() as db:
            row = await db.fetchrow(
                "SELECT * FROM rule_file_versions WHERE module_name = $1 AND version = $2", module_name, number
            )
            return _stored(row) if row else None

    async def seed_rule_file(self, module_name: str, content: bytes, *, now: datetime) -> StoredRuleFile:
        async with self._tx() as db:
            status = await db.execute(
                "INSERT INTO rule_file_versions (module_name, version, content, content_hash, deployment_id,"
                " created_at) VALUES ($1, 1, $2, $3, NULL, $4) ON CONFLICT (module_name, version) DO NOTHING",
                module_name,
                content,
                hashlib.sha256(content).hexdigest(),
                ts(now),
            )
            if status.endswith(" 1"):  # the first instance to get here: tell the others
                await db.execute("SELECT pg_notify($1, $2)", CHANNEL, module_name)
            row = await db.fetchrow(
                "SELECT * FROM rule_file_versions WHERE module_name = $1 ORDER BY version DESC LIMIT 1", module_name
            )
            assert row is not None
            return _stored(row)

    async def complete_deployment_with_file(
        self,
        deployment_id: int,
        *,
        content: bytes,
        backup_path: str | None,
        now: datetime,
        event: NewEvent | None = None,
    ) -> Deployment:
        async with self._tx() as db:
            # the rule's row first, as every change of a deployment takes it (storage/postgres/deployments.py)
            await db.execute(
                "SELECT 1 FROM generated_rules WHERE rule_id = (SELECT rule_id FROM deployments WHERE id = $1)"
                " FOR NO KEY UPDATE",
                deployment_id,
            )
            row = await db.fetchrow(
                "SELECT module_name, version_before, state FROM deployments WHERE id = $1 FOR UPDATE", deployment_id
            )
            if row is None:
                raise LookupError(f"no deployment {deployment_id}")
            if row["state"] == "pending":  # a retry after a lost answer stores nothing twice
                latest = await db.fetchrow(
                    "SELECT version, left(content_hash, 16) AS content_version FROM rule_file_versions"
                    " WHERE module_name = $1 ORDER BY version DESC LIMIT 1",
                    row["module_name"],
                )
                number = int(latest["version"]) if latest else 0
                if latest is not None and latest["content_version"] != row["version_before"]:
                    raise RuleFileChanged(
                        f"{row['module_name']} is at version {number} ({latest['content_version']}), not the"
                        f" {row['version_before']} deployment {deployment_id} was derived from"
                    )
                await _insert_version(db, row["module_name"], number + 1, content, deployment_id, now)
            return await complete_in(db, deployment_id, backup_path=backup_path, now=now, event=event)

    async def record_hand_edit(self, found: HandEditedFile) -> None:
        async with self._tx() as db:
            await audit(
                db,
                now=found.found_at,
                actor="system",
                action=HAND_EDIT_ACTION,
                subject_id=found.module_name,
                detail={"kept_at": found.kept_at, "instance": found.instance},
            )

    async def hand_edits(self, *, since: datetime | None = None, limit: int = 20) -> list[HandEditedFile]:
        async with self._read() as db:
            rows = await db.fetch(
                "SELECT subject_id, at, detail FROM audit_log WHERE action = $1 AND at >= $2"
                " ORDER BY at DESC, id DESC LIMIT $3",
                HAND_EDIT_ACTION,
                ts(since or datetime.min.replace(tzinfo=UTC)),
                limit,
            )
        found = []
        for row in reversed(rows):
            detail = json.loads(row["detail"] or "{}")
            found.append(
                HandEditedFile(
                    module_name=row["subject_id"],
                    kept_at=str(detail.get("kept_at") or ""),
                    found_at=row["at"],
                    instance=detail.get("instance"),
                )
            )
        return found

    def hold_rule_file(self, module_name: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._session_lock(RULE_FILE_LOCK, module_name)

    async def watch_rule_files(self, on_change: Callable[[str], None]) -> bool:
        listener = self._listener
        if listener is not None and not listener.is_closed():
            return False

        def notified(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            on_change(payload)

        try:
            listener = await asyncpg.connect(self.url, server_settings={"application_name": "autotrain-listen"})
            await listener.add_listener(CHANNEL, notified)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("cannot listen for rule file changes (checked periodically instead): %s", exc)
            return False
        self._listener = listener
        return True

    async def stop_watching_rule_files(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await listener.close(timeout=5)

    async def close(self) -> None:
        await self.stop_watching_rule_files()
        await super().close()
