"""This instance's rules folder made from the database (PostgreSQL, several instances): each allowed file is
the newest stored version, written atomically (temp file, fsync, rename) and only when its bytes differ.

When: at start (`start_up`: a file nothing is stored for yet is stored first, from this folder: the seed), on
every change another instance (or this one) stores (`RuleFileChanges`, LISTEN/NOTIFY), and every
`check_seconds` (a notification missed while the listening connection was down; a hand edit).

A hand edit — a file whose bytes are no stored version of it — is reported (a WARNING naming the file and
where its copy is kept, and an audit row, which every instance's /autotrain/status lists and the
`rule_file_hand_edited` alert counts), then the database wins: the copy
is kept under `.autotrain/hand-edits/<file>/` and the file is written from the newest version, so that the
chatbot reads what every other instance serves. A file whose bytes are an older stored version is simply
brought up to date (nothing is lost: that version is in the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from autotrain.errors import RuleFileInvalid
from autotrain.models import HandEditedFile
from autotrain.options import Clock
from autotrain.ports import RuleFileChanges, RuleFileVersions
from autotrain.rulefiles import RuleFiles, content_version, parse_rule_file

log = logging.getLogger("autotrain.rulefiles")

CHECK_SECONDS = 5.0  # the periodic check, behind the notifications


class MaterializeRuleFiles:
    def __init__(
        self,
        *,
        rule_files: RuleFiles,
        versions: RuleFileVersions,
        changes: RuleFileChanges,
        clock: Clock,
        check_seconds: float = CHECK_SECONDS,
        after_sync: Callable[[], Awaitable[None]] | None = None,
        instance: str | None = None,
    ) -> None:
        self.instance = instance  # who this is, in the hand edits it records (host:pid:…)
        # run after every round (a notification, the periodic check): the shared git history follows the database
        # too (bot/shared_history.py); it never raises
        self.after_sync = after_sync
        self.rule_files = rule_files
        self.versions = versions
        self.changes = changes
        self.clock = clock
        self.check_seconds = check_seconds
        self._written: dict[str, int] = {}  # module -> the version number this instance last wrote (or found)
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start_up(self) -> None:
        """At open: seed what nothing is stored for yet from this folder, then write every stored file."""
        stored = await self.versions.latest_rule_file_numbers()
        for module_name in self.rule_files.allowed_modules:
            if module_name not in stored:
                local = await asyncio.to_thread(self._local, module_name)
                if local is not None and self._parses(module_name, local):
                    await self.versions.seed_rule_file(module_name, local, now=self.clock())
            await self.sync(module_name)

    def start(self) -> None:
        """Follow the database in the background (serve)."""
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="autotrain-materialize")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.changes.stop_watching_rule_files()

    def _notified(self, module_name: str) -> None:
        if module_name in self.rule_files.allowed_modules:
            self._dirty.add(module_name)
        self._wake.set()  # (an empty payload: a commit of the shared git history, for after_sync)

    async def _follow(self) -> None:
        while True:
            try:
                if await self.changes.watch_rule_files(self._notified):
                    await self.check()  # (re)started listening: a change may have been missed meanwhile
                    if self.after_sync is not None:
                        await self.after_sync()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.check_seconds)
                except TimeoutError:
                    await self.check()
                else:
                    self._wake.clear()
                    modules, self._dirty = self._dirty, set()
                    for module_name in sorted(modules):
                        await self.sync(module_name)
                if self.after_sync is not None:
                    await self.after_sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away for a moment: the next round tries again
                log.warning("cannot bring the rules folder up to date from the database yet: %s", exc)
                await asyncio.sleep(min(self.check_seconds, 1.0))

    async def check(self) -> list[str]:
        """Sync every file whose bytes are not the newest stored version (one cheap query); the files written."""
        stored = await self.versions.latest_rule_file_numbers()
        written = []
        for module_name in self.rule_files.allowed_modules:
            if module_name not in stored:
                continue
            local = await asyncio.to_thread(self._local, module_name)
            if local is None or content_version(local) != stored[module_name][1]:
                if await self.sync(module_name):
                    written.append(module_name)
        return written

    async def sync(self, module_name: str) -> bool:
        """Write the newest stored version of this file when the folder's copy differs; True when written."""
        lock = self._locks.setdefault(module_name, asyncio.Lock())
        async with lock:
            stored = await self.versions.latest_rule_file(module_name)
            if stored is None:
                return False
            local = await asyncio.to_thread(self._local, module_name)
            if local == stored.content:
                self._written[module_name] = max(self._written.get(module_name, 0), stored.number)
                return False
            if self._written.get(module_name, 0) > stored.number:
                return False  # a stale read: this instance has written a newer version already
            if local is not None:
                known = await self.versions.rule_file_with_version(module_name, content_version(local))
                if known is not None and known.number > stored.number:
                    return False  # another instance sharing this folder wrote a newer one (its notification follows)
                if known is None:
                    await self._keep_hand_edit(module_name, local)
            await asyncio.to_thread(self.rule_files.replace, module_name, stored.content)
            self._written[module_name] = stored.number
            log.debug("%s: version %d written from the database", module_name, stored.number)
            return True

    async def _keep_hand_edit(self, module_name: str, local: bytes) -> None:
        kept = await asyncio.to_thread(self.rule_files.keep_hand_edit, module_name, local)
        log.warning(
            "%s was edited by hand (its bytes are no version the database has): the database wins, the file is"
            " written from its newest version, and the edited copy is kept at %s (deploy the change through"
            " Auto-Train to keep it)",
            self.rule_files.path_for(module_name),
            kept,
        )
        found = HandEditedFile(
            module_name=module_name, kept_at=str(kept), found_at=self.clock(), instance=self.instance
        )
        try:  # in the audit log, for every instance's /status and the alert
            await self.versions.record_hand_edit(found)
        except Exception as exc:  # the WARNING above has said it; the file is still written from the database
            log.warning("%s: the hand edit is not recorded in the database: %s", module_name, exc)

    @staticmethod
    def _parses(module_name: str, content: bytes) -> bool:
        try:
            parse_rule_file(module_name, content)
        except RuleFileInvalid as exc:  # not stored: once repaired, the next start (or the first deploy) stores it
            log.error("%s does not parse, so it is not stored as the file's first version: %s", module_name, exc)
            return False
        return True

    def _local(self, module_name: str) -> bytes | None:
        try:
            return self.rule_files.path_for(module_name).read_bytes()
        except FileNotFoundError:
            return None
