"""Where a rule file's content is the truth, for the deploys that change it (chosen once, in bot/runtime.py):

- `FolderTruth` (SQLite: one instance): the file in the rules folder. A change is written to the folder, then
  its deployment is marked applied; a crash in between is settled by looking at the file.
- `DatabaseTruth` (PostgreSQL: several instances, each with a folder of its own): the newest version stored in
  the database (`RuleFileVersions`). Nothing is written before the deployment is marked applied: the new
  version is stored in that same transaction, and only then copied into this instance's folder
  (`MaterializeRuleFiles`, which every other instance runs on the change's notification).

The derivation of a change (file_models.py, autotrain/ruleset.py) is the same for both: it starts from the
bytes `read` returns.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Protocol

from autotrain.models import Deployment, NewEvent
from autotrain.options import Clock
from autotrain.ports import DeploymentStore, RuleFileVersions
from autotrain.rulefiles import RuleDocument, RuleFiles, parse_to_change
from autotrain.usecases.materialize import MaterializeRuleFiles

log = logging.getLogger("autotrain.deploys")


class RuleFileTruth(Protocol):
    """What a deploy reads a rule file from, and how its change becomes the file's new truth."""

    async def read(self, module_name: str) -> tuple[bytes, RuleDocument]:
        """The file's current content and its parsed document (RuleFileInvalid when it does not parse)."""
        ...

    async def current(self, module_name: str) -> tuple[bytes, datetime | None]:
        """The file's current content and when it last changed (None: never), for the rule sets endpoint."""
        ...

    async def read_base(self, module_name: str, version: str) -> bytes | None: ...

    async def keep_base(self, module_name: str, content: bytes) -> None: ...

    async def prune_bases(self, module_name: str, keep: set[str]) -> int: ...

    async def write(self, module_name: str, content: bytes, previous: bytes, label: str) -> str | None:
        """Before the deployment is marked applied: write what must be written first (the backup's path)."""
        ...

    async def complete(
        self,
        deployment_id: int,
        module_name: str,
        content: bytes | None,
        *,
        backup_path: str | None,
        now: datetime,
        event: NewEvent | None,
    ) -> Deployment:
        """Mark the deployment applied; `content`: the file it made (None: the file did not change)."""
        ...


class FolderTruth:
    """The rules folder is the truth (one instance): today's path, unchanged."""

    def __init__(self, *, rule_files: RuleFiles, deployments: DeploymentStore) -> None:
        self.rule_files = rule_files
        self.deployments = deployments

    async def read(self, module_name: str) -> tuple[bytes, RuleDocument]:
        return await asyncio.to_thread(self.rule_files.read, module_name)

    async def current(self, module_name: str) -> tuple[bytes, datetime | None]:
        return await folder_current(self.rule_files, module_name)

    async def read_base(self, module_name: str, version: str) -> bytes | None:
        return await asyncio.to_thread(self.rule_files.read_base, module_name, version)

    async def keep_base(self, module_name: str, content: bytes) -> None:
        await asyncio.to_thread(self.rule_files.keep_base, module_name, content)

    async def prune_bases(self, module_name: str, keep: set[str]) -> int:
        return await asyncio.to_thread(self.rule_files.prune_bases, module_name, keep)

    async def write(self, module_name: str, content: bytes, previous: bytes, label: str) -> str | None:
        return await asyncio.to_thread(self.rule_files.write, module_name, content, previous, label)

    async def complete(
        self,
        deployment_id: int,
        module_name: str,
        content: bytes | None,
        *,
        backup_path: str | None,
        now: datetime,
        event: NewEvent | None,
    ) -> Deployment:
        return await self.deployments.complete_deployment(deployment_id, backup_path=backup_path, now=now, event=event)


class DatabaseTruth:
    """The newest stored version is the truth (several instances); this instance's folder is a copy of it."""

    def __init__(
        self,
        *,
        rule_files: RuleFiles,
        versions: RuleFileVersions,
        deployments: DeploymentStore,
        folder: MaterializeRuleFiles,
        clock: Clock,
    ) -> None:
        self.rule_files = rule_files
        self.versions = versions
        self.deployments = deployments
        self.folder = folder
        self.clock = clock

    async def _content(self, module_name: str) -> bytes:
        self.rule_files.path_for(module_name)  # an unknown file is refused before the database is asked
        stored = await self.versions.latest_rule_file(module_name)
        if stored is None:  # the very first change of this file: the local seed file becomes version 1
            seed = await asyncio.to_thread(self.rule_files.read_bytes, module_name)
            parse_to_change(
                module_name, seed
            )  # a seed that does not parse is refused, never stored (it can be repaired)
            stored = await self.versions.seed_rule_file(module_name, seed, now=self.clock())
        return stored.content

    async def read(self, module_name: str) -> tuple[bytes, RuleDocument]:
        content = await self._content(module_name)
        return content, parse_to_change(module_name, content)

    async def current(self, module_name: str) -> tuple[bytes, datetime | None]:
        self.rule_files.path_for(module_name)
        stored = await self.versions.latest_rule_file(module_name)
        if stored is None:  # nothing stored yet (no instance has seeded it): the local file, as every instance has it
            return await folder_current(self.rule_files, module_name)
        return stored.content, stored.created_at

    async def read_base(self, module_name: str, version: str) -> bytes | None:
        stored = await self.versions.rule_file_with_version(module_name, version)
        return stored.content if stored is not None else None

    async def keep_base(self, module_name: str, content: bytes) -> None:
        """Nothing to keep: a base is always a stored version (the file before its first active change is the
        newest version then, and a later base is read back from the versions), found by its content version."""

    async def prune_bases(self, module_name: str, keep: set[str]) -> int:
        return 0  # the versions are the history: none is removed

    async def write(self, module_name: str, content: bytes, previous: bytes, label: str) -> str | None:
        return None  # nothing is written before the version is stored (complete); the folder follows it

    async def complete(
        self,
        deployment_id: int,
        module_name: str,
        content: bytes | None,
        *,
        backup_path: str | None,
        now: datetime,
        event: NewEvent | None,
    ) -> Deployment:
        if content is None:
            return await self.deployments.complete_deployment(
                deployment_id, backup_path=backup_path, now=now, event=event
            )
        deployment = await self.versions.complete_deployment_with_file(
            deployment_id, content=content, backup_path=backup_path, now=now, event=event
        )
        # the change is a fact now; this instance's folder follows at once (the git commit and the chatbot read
        # it), and a failure here is only a stale copy, which the periodic check writes again
        try:
            await self.folder.sync(module_name)
        except Exception as exc:
            log.error(
                "%s: the new version is stored, but this instance's copy is not written yet: %s",
                module_name,
                exc,
            )
        return deployment


async def folder_current(rule_files: RuleFiles, module_name: str) -> tuple[bytes, datetime | None]:
    """The file in the rules folder, and when it was last written (None: it does not exist)."""
    path = rule_files.path_for(module_name)

    def read() -> tuple[bytes, datetime | None]:
        content = rule_files.read_bytes(module_name)
        try:
            changed = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except FileNotFoundError:
            changed = None
        return content, changed

    return await asyncio.to_thread(read)
