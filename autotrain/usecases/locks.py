"""One writer per rule file: an asyncio lock inside this process, and across processes either flock on the
rules folder (one instance: the folder is the truth) or the database's lock (`RuleFileLock`: several instances,
each with a folder of its own; bot/runtime.py chooses)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from autotrain.ports import RuleFileLock
from autotrain.rulefiles import RuleFiles


class RuleFileLocks:
    def __init__(self, rule_files: RuleFiles, *, across: RuleFileLock | None = None) -> None:
        self.rule_files = rule_files
        self.across = across
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, module_name: str) -> AsyncIterator[None]:
        self.rule_files.path_for(module_name)  # an unknown file is refused before anything waits
        lock = self._locks.setdefault(module_name, asyncio.Lock())
        async with lock:  # (first: this process's changes of a file wait here, not on the database's connections)
            if self.across is not None:
                async with self.across.hold_rule_file(module_name):
                    yield
                return
            acquiring = asyncio.ensure_future(asyncio.to_thread(self.rule_files.acquire, module_name))
            try:
                handle = await asyncio.shield(acquiring)
            except asyncio.CancelledError:
                # the thread still takes the flock: give it back as soon as it has it
                acquiring.add_done_callback(
                    lambda f: None if f.cancelled() or f.exception() else self.rule_files.release(f.result())
                )
                raise
            try:
                yield
            finally:
                self.rule_files.release(handle)
