"""One writer per rule file: an asyncio lock inside this process, flock across processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from autotrain.rulefiles import RuleFiles


class RuleFileLocks:
    def __init__(self, rule_files: RuleFiles) -> None:
        self.rule_files = rule_files
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, module_name: str) -> AsyncIterator[None]:
        self.rule_files.path_for(module_name)  # an unknown file is refused before anything waits
        lock = self._locks.setdefault(module_name, asyncio.Lock())
        async with lock:
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
