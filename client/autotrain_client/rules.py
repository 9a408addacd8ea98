"""Reading one rule file: who gets which rule line, and the file as a given user's chatbot should use it.

Pure functions on bytes (no disk, no network), used by `RuleBook` and by the Auto-Train server alike, so the
two always agree on who gets a canary.

The formats (as Auto-Train writes them):

- JSON (`*.json`): `{"version": N, "rules": [{"rule": "- ...", "rule_id": "RUL-…", "rollout_percent": 10,
  "replaces": "- old line", ...}, ...]}`. An entry without `rollout_percent` applies to everyone; one with it
  applies to the users whose bucket for its rule id (its line when it has no id) is below it. A canary with
  `replaces` hides the entry whose "rule" is that line from the users it reaches.
- Text and Markdown (anything else): the lines that start with "- " are the rules, for everyone; every other
  line (headers, blank lines, prose) is kept as it is.

A leading byte-order mark is ignored; an empty JSON file has no rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass
from typing import Any

from autotrain_client.rollout import FULL_ROLLOUT, in_rollout

__all__ = [
    "RULE_PREFIX",
    "CompiledRules",
    "RuleFileInvalid",
    "applicable_rules",
    "compile_rules",
    "content_version",
    "render_content",
]

logger = logging.getLogger("autotrain_client")

RULE_PREFIX = "- "
BOM = "\ufeff"


class RuleFileInvalid(ValueError):
    """The content is not a rule file of its format (broken JSON, wrong shape, not UTF-8, NUL bytes)."""


def content_version(content: bytes) -> str:
    """A file version: the first 16 hex digits of its SHA-256 (what Auto-Train's deployments record)."""
    return hashlib.sha256(content).hexdigest()[:16]


def _same_line(text: str) -> str:
    return unicodedata.normalize("NFC", text.strip())


@dataclass(frozen=True)
class Entry:
    """One rule line and who gets it."""

    line: str
    rule_id: str | None = None  # as the file gives it (None: none, or not a text)
    rollout_percent: int | None = None  # as it counts (None: everyone; a malformed value counts as 0)
    replaces: str | None = None  # the line this canary replaces for the users it reaches
    rollout_key: str = ""  # what the bucket is taken from: the rule id, or the line itself when there is none
    # the canaries that replace this line, as (rollout_key, percent): a user in any of them does not get it
    replaced_by: tuple[tuple[str, int], ...] = ()

    @property
    def percent(self) -> int:
        return FULL_ROLLOUT if self.rollout_percent is None else self.rollout_percent

    def applies_to(self, user_id: str | None) -> bool:
        """`user_id=None` stands for a user inside every rollout (what everyone gets after promote)."""
        if user_id is None:
            return not self.replaced_by
        if not in_rollout(self.rollout_key, user_id, self.percent):
            return False
        return not any(in_rollout(key, user_id, percent) for key, percent in self.replaced_by)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.line,
            "rule_id": self.rule_id,
            "rollout_percent": self.rollout_percent,
            "replaces": self.replaces,
        }


@dataclass(frozen=True)
class CompiledRules:
    """A parsed rule file, ready to answer for any user."""

    module_name: str
    kind: str  # "json" or "lines"
    entries: tuple[Entry, ...]
    version: str  # content_version of the bytes it was compiled from
    # text and Markdown only: every line with its line ending, and for a rule line the index of its entry
    lines: tuple[str, ...] = ()
    line_entries: tuple[int | None, ...] = ()

    def rules_for(self, user_id: str | None) -> list[str]:
        return [entry.line for entry in self.entries if entry.applies_to(user_id)]

    def render(self, user_id: str | None) -> str:
        if self.kind == "json":
            return "\n".join(self.rules_for(user_id))
        return "".join(
            line
            for line, index in zip(self.lines, self.line_entries, strict=True)
            if index is None or self.entries[index].applies_to(user_id)
        )


def _rollout_percent(module_name: str, index: int, raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return max(0, min(FULL_ROLLOUT, raw))
    # A hand edit broke it: the cautious reading is that the canary reaches nobody (and the old rule it
    # replaces stays with everyone) until the file is fixed.
    logger.warning("%s: rules[%d] has rollout_percent %r, not an integer; it goes to no user", module_name, index, raw)
    return 0


def _parse_json(content: bytes) -> list[dict[str, Any]]:
    if content.startswith(BOM.encode()):
        content = content[len(BOM.encode()) :]
    if not content.strip():
        return []
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RuleFileInvalid(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RuleFileInvalid('expected an object with a "rules" list')
    version = data.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise RuleFileInvalid('"version" must be an integer')
    for index, entry in enumerate(data["rules"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("rule"), str):
            raise RuleFileInvalid(f'rules[{index}] must be an object with a "rule" string')
    return data["rules"]


def _compile_json(module_name: str, content: bytes) -> CompiledRules:
    raw_entries = _parse_json(content)
    rule_ids: list[str | None] = []
    keys: list[str] = []
    percents: list[int | None] = []
    replaces: list[str | None] = []
    for index, raw in enumerate(raw_entries):
        rule_id = raw.get("rule_id")
        rule_ids.append(rule_id if isinstance(rule_id, str) and rule_id else None)
        keys.append(rule_ids[-1] or _same_line(raw["rule"]))
        percents.append(_rollout_percent(module_name, index, raw.get("rollout_percent")))
        target = raw.get("replaces")
        if target is not None and not isinstance(target, str):
            logger.warning('%s: rules[%d] has a non-text "replaces"; it is ignored', module_name, index)
            target = None
        replaces.append(target)

    replaced_by: dict[int, list[tuple[str, int]]] = {}
    for index, target in enumerate(replaces):
        if target is None:
            continue
        same = _same_line(target)
        percent = FULL_ROLLOUT if percents[index] is None else percents[index]
        for other, candidate in enumerate(raw_entries):
            if other != index and _same_line(candidate["rule"]) == same:
                replaced_by.setdefault(other, []).append((keys[index], percent))

    entries = tuple(
        Entry(
            line=raw["rule"],
            rule_id=rule_ids[index],
            rollout_percent=percents[index],
            replaces=replaces[index],
            rollout_key=keys[index],
            replaced_by=tuple(replaced_by.get(index, ())),
        )
        for index, raw in enumerate(raw_entries)
    )
    return CompiledRules(module_name, "json", entries, content_version(content))


def _compile_lines(module_name: str, content: bytes) -> CompiledRules:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleFileInvalid(f"not valid UTF-8: {exc}") from exc
    if "\x00" in text:
        raise RuleFileInvalid("contains NUL bytes")
    lines = tuple(text.removeprefix(BOM).splitlines(keepends=True))
    entries: list[Entry] = []
    line_entries: list[int | None] = []
    for line in lines:
        if line.startswith(RULE_PREFIX):
            line_entries.append(len(entries))
            entries.append(Entry(line=line.rstrip("\r\n").strip(), rollout_key=line.rstrip("\r\n").strip()))
        else:
            line_entries.append(None)
    return CompiledRules(module_name, "lines", tuple(entries), content_version(content), lines, tuple(line_entries))


def compile_rules(module_name: str, content: bytes) -> CompiledRules:
    """Parse one rule file (its format from its name: `*.json` or lines). Raises RuleFileInvalid."""
    if module_name.endswith(".json"):
        return _compile_json(module_name, content)
    return _compile_lines(module_name, content)


def applicable_rules(module_name: str, content: bytes, user_id: str | None) -> list[dict[str, Any]]:
    """The rule entries of that file that apply to `user_id`, in file order, each as
    `{"rule", "rule_id", "rollout_percent", "replaces"}`; with `user_id=None`, every entry (who gets each is
    in its fields). `rollout_percent` is the share that counts: None for everyone, a malformed value as 0.
    Raises RuleFileInvalid when the content does not parse."""
    compiled = compile_rules(module_name, content)
    return [entry.as_dict() for entry in compiled.entries if user_id is None or entry.applies_to(str(user_id))]


def render_content(module_name: str, content: bytes, user_id: str | None) -> str:
    """The file as this user's chatbot should use it: a text or Markdown file with its other lines as they
    are and only the rule lines that apply; a JSON file's applicable rule lines joined by newlines.
    `user_id=None`: as for a user inside every rollout. Raises RuleFileInvalid when it does not parse."""
    return compile_rules(module_name, content).render(None if user_id is None else str(user_id))
