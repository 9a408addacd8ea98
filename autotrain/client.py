"""What a chatbot imports to read its rule files: which rule lines apply to which user.

    from autotrain.client import RuleBook
    book = RuleBook("/srv/chatbot/config")
    rules = book.rules_for("fashion_rules.json", user_id)   # list of "- ..." lines, in file order

Canary rollout (JSON rule files only). An entry `{"rule": "- ...", "rule_id": "RUL-…", "rollout_percent": 10}`
applies to the users whose bucket for that rule id is below 10; an entry without `rollout_percent` applies to
everyone. A canary entry with `"replaces": "- old line"` hides the entry whose "rule" is that line from the
users in the canary, so users outside it keep the old rule until promote. Text and Markdown rule files have no
canaries: every line that starts with "- " applies to everyone.

Buckets are stable across processes and machines (SHA-256 of rule id and user id), so a user keeps the same
variant. A file is re-read when it changed on disk (inode, size or mtime), so a deploy — an atomic rename — is
seen without a restart. A file that stops parsing keeps its last good version (with a warning); a missing
file has no rules.

Standard library and `autotrain.rulefiles` only: no framework, no database.
"""

from __future__ import annotations

import logging
import os
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotrain.errors import RuleFileInvalid
from autotrain.rollout import FULL_ROLLOUT, bucket, in_rollout
from autotrain.rulefiles import JsonRuleDocument, parse_rule_file

__all__ = ["RuleBook", "bucket", "in_rollout"]

logger = logging.getLogger("autotrain.client")


def _same_line(text: str) -> str:
    return unicodedata.normalize("NFC", text.strip())


@dataclass(frozen=True)
class _Entry:
    """One rule line and who gets it."""

    line: str
    rollout_key: str = ""  # the rule id the bucket is taken from (the line itself when the entry has none)
    percent: int = FULL_ROLLOUT
    # the canaries that replace this line, as (rollout_key, percent): a user in any of them does not get it
    replaced_by: tuple[tuple[str, int], ...] = ()

    def applies_to(self, user_id: str | None) -> bool:
        """`user_id=None` stands for a user inside every rollout (what everyone gets after promote)."""
        if user_id is None:
            return not self.replaced_by
        if not in_rollout(self.rollout_key, user_id, self.percent):
            return False
        return not any(in_rollout(key, user_id, percent) for key, percent in self.replaced_by)


def _rollout_percent(module_name: str, index: int, raw: Any) -> int:
    if raw is None:
        return FULL_ROLLOUT
    if isinstance(raw, int) and not isinstance(raw, bool):
        return max(0, min(FULL_ROLLOUT, raw))
    # A hand edit broke it: the cautious reading is that the canary reaches nobody (and the old rule it
    # replaces stays with everyone) until the file is fixed.
    logger.warning("%s: rules[%d] has rollout_percent %r, not an integer; it goes to no user", module_name, index, raw)
    return 0


def _compile_json(module_name: str, document: JsonRuleDocument) -> tuple[_Entry, ...]:
    raw_entries: list[dict[str, Any]] = document.data["rules"]
    keys: list[str] = []
    percents: list[int] = []
    for index, raw in enumerate(raw_entries):
        rule_id = raw.get("rule_id")
        keys.append(rule_id if isinstance(rule_id, str) and rule_id else _same_line(raw["rule"]))
        percents.append(_rollout_percent(module_name, index, raw.get("rollout_percent")))

    replaced_by: dict[int, list[tuple[str, int]]] = {}
    for index, raw in enumerate(raw_entries):
        replaces = raw.get("replaces")
        if replaces is None:
            continue
        if not isinstance(replaces, str):
            logger.warning('%s: rules[%d] has a non-text "replaces"; it is ignored', module_name, index)
            continue
        target = _same_line(replaces)
        for other, candidate in enumerate(raw_entries):
            if other != index and _same_line(candidate["rule"]) == target:
                replaced_by.setdefault(other, []).append((keys[index], percents[index]))

    return tuple(
        _Entry(
            line=raw["rule"],
            rollout_key=keys[index],
            percent=percents[index],
            replaced_by=tuple(replaced_by.get(index, ())),
        )
        for index, raw in enumerate(raw_entries)
    )


def _compile(module_name: str, content: bytes) -> tuple[_Entry, ...]:
    """Raises RuleFileInvalid when the content does not parse."""
    document = parse_rule_file(module_name, content)
    if isinstance(document, JsonRuleDocument):
        return _compile_json(module_name, document)
    return tuple(_Entry(line=line) for line in document.rule_lines())


@dataclass
class _Cached:
    key: tuple[int, int, int] | None  # (inode, size, mtime_ns) of the version last read, good or bad
    entries: tuple[_Entry, ...]  # the last version that parsed
    good: bool = True  # whether any version parsed (else `entries` is empty)
    problem: str = ""  # why the version last read was not used ("" when it was)


class RuleBook:
    """The rule files of one folder, as the chatbot sees them. Safe to share between threads."""

    def __init__(self, rules_dir: str | Path) -> None:
        self.rules_dir = Path(rules_dir)
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}

    def rules_for(self, module_name: str, user_id: str) -> list[str]:
        """The rule lines of that file that apply to this user, in file order. Re-reads the file when it
        changed since the last read, so a deploy is seen without a restart. A file that does not parse keeps
        the last good version and logs a warning; a missing file gives []."""
        return [entry.line for entry in self._entries(module_name) if entry.applies_to(str(user_id))]

    def all_rules(self, module_name: str) -> list[str]:
        """Every line as for a user inside every rollout: all canary lines, without the lines they replace."""
        return [entry.line for entry in self._entries(module_name) if entry.applies_to(None)]

    def _path(self, module_name: str) -> Path:
        if (
            not isinstance(module_name, str)
            or not module_name
            or module_name.startswith(".")  # "..", ".autotrain" (locks and backups), temporary files
            or "\x00" in module_name
            or "/" in module_name
            or "\\" in module_name
            or Path(module_name).name != module_name
        ):
            raise ValueError(f"{module_name!r} is not a rule file name inside {self.rules_dir}")
        return self.rules_dir / module_name

    def _entries(self, module_name: str) -> tuple[_Entry, ...]:
        path = self._path(module_name)
        try:
            # One open file for both the version key and the content: a rename in between cannot pair the
            # key of one version with the content of another.
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
                with self._lock:
                    cached = self._cache.get(module_name)
                    if cached is not None and cached.key == key:
                        return cached.entries
                content = handle.read()
        except FileNotFoundError:
            with self._lock:
                self._cache.pop(module_name, None)
            return ()
        except OSError as exc:
            return self._keep_last_good(module_name, None, f"cannot be read ({exc.strerror or exc})")
        try:
            entries = _compile(module_name, content)
        except RuleFileInvalid as exc:
            return self._keep_last_good(module_name, key, f"does not parse ({exc.message})")
        with self._lock:
            self._cache[module_name] = _Cached(key, entries)
        return entries

    def _keep_last_good(self, module_name: str, key: tuple[int, int, int] | None, reason: str) -> tuple[_Entry, ...]:
        with self._lock:
            cached = self._cache.setdefault(module_name, _Cached(None, (), good=False))
            if cached.problem != reason or (key is not None and cached.key != key):  # once per bad version
                if cached.good:
                    logger.warning("rule file %s %s; keeping the last good version", module_name, reason)
                else:
                    logger.warning("rule file %s %s; no version of it parsed yet, so no rules", module_name, reason)
            if key is not None:
                cached.key = key
            cached.problem = reason
            return cached.entries
