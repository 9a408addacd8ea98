"""A rule file is its base plus its active changes: the file's content is always derived, never patched.

`base` is the file as it was before Auto-Train's first still-active change (or as a human last left it,
once that was detected and adopted). `changes` are the deployed rules of the file, in the order they were
first deployed: replace X by Y, add Y, a canary of Y at p % (replacing X for those users), a promote (the
same change at 100 %). A deploy derives `base + active + [new]`; a rollback derives `base + (active − it)`.
So, by construction: rolling back every change gives `base` back byte for byte; a rolled-back rule's line
is never in the file (unless the base or another active change has it); a line is never added twice; the
result does not depend on the order of rollbacks. Pure: bytes in, bytes out, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autotrain.errors import RuleFileInvalid
from autotrain.rollout import FULL_ROLLOUT
from autotrain.rulefiles import BOM, JsonRuleDocument, LineRuleDocument, render_rules_json, rule_key, same_rule

# what one change did when it was derived on top of the ones before it
REPLACED, APPENDED, CANARY, PROMOTED_CANARY, NOOP = "replaced", "appended", "canary", "promoted_canary", "noop"


@dataclass(frozen=True)
class ActiveChange:
    """One deployed rule's change, as recorded in its deployment (`spec`)."""

    rule_id: str
    new_rule: str
    old_rule: str | None = None
    rollout_percent: int = FULL_ROLLOUT
    entry: dict[str, Any] = field(default_factory=dict)  # the JSON entry's extra fields (added_from, ...)

    def to_detail(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "new_rule": self.new_rule,
            "old_rule": self.old_rule,
            "rollout_percent": self.rollout_percent,
            "entry": dict(self.entry),
        }

    @classmethod
    def from_detail(cls, detail: dict[str, Any]) -> ActiveChange:
        return cls(
            rule_id=str(detail["rule_id"]),
            new_rule=str(detail["new_rule"]),
            old_rule=detail.get("old_rule"),
            rollout_percent=int(detail.get("rollout_percent") or FULL_ROLLOUT),
            entry=dict(detail.get("entry") or {}),
        )

    def promoted(self) -> ActiveChange:
        return ActiveChange(self.rule_id, self.new_rule, self.old_rule, FULL_ROLLOUT, dict(self.entry))


@dataclass(frozen=True)
class Derivation:
    content: bytes
    outcomes: list[str]  # one per change, in order


def derive(base: bytes, changes: Sequence[ActiveChange], module_name: str, *, version: int | None = None) -> bytes:
    return derivation(base, changes, module_name, version=version).content


def derivation(
    base: bytes, changes: Sequence[ActiveChange], module_name: str, *, version: int | None = None
) -> Derivation:
    """The file `base` becomes once `changes` are applied in order (raises RuleFileInvalid if base does not parse).

    A JSON file's "version" counter is the one thing not derived: every write bumps it, by design, so a reader
    never sees one version number with two contents. `version` is its value (None: the base's plus one per
    change that did something). With it, rolling every change back gives the base byte for byte but for it.
    """
    if module_name.endswith(".json"):
        return _derive_json(base, changes, version)
    if not changes:
        return Derivation(base, [])
    return _derive_lines(base, changes)


def with_version(content: bytes, version: int) -> bytes:
    """A JSON file with another "version" value, every other byte kept. A file without the key (an empty
    one, say) gets it as soon as the counter is above 0, so the counter never goes back."""
    data = json.loads(content.decode("utf-8-sig") or "{}")
    if not isinstance(data, dict):
        return content
    if "version" not in data:
        if version == 0:
            return content
        data = {"version": version, "rules": data.get("rules", []), **data}
        bom = content.startswith(BOM.encode())
        return (BOM.encode() if bom else b"") + render_rules_json(data).encode("utf-8")
    pattern = re.compile(rb'^(\s*(?:\xef\xbb\xbf)?\s*\{\s*"version"\s*:\s*)-?\d+')
    replaced, count = pattern.subn(lambda m: m.group(1) + str(version).encode(), content, count=1)
    if count == 1 and json.loads(replaced.decode("utf-8-sig")).get("version") == version:
        return replaced
    data["version"] = version  # "version" is not the first key: the file is laid out anew
    bom = content.startswith(BOM.encode())
    return (BOM.encode() if bom else b"") + render_rules_json(data).encode("utf-8")


def _index(rules: list[str], text: str | None) -> int | None:
    if not text:
        return None
    return next((i for i, rule in enumerate(rules) if same_rule(rule, text)), None)


def _position(keys: list[str], text: str | None) -> int | None:
    if not text:
        return None
    try:
        return keys.index(rule_key(text))
    except ValueError:
        return None


def _derive_json(base: bytes, changes: Sequence[ActiveChange], version: int | None) -> Derivation:
    document = JsonRuleDocument.parse(base)  # parsed anew from the bytes: its data is this derivation's own
    data = document.data
    entries: list[dict[str, Any]] = data["rules"]
    # each entry's rule as same_rule compares them, kept beside the entries: a file of ten thousand rules is
    # normalised once, and a rule is found by list.index, not by normalising every entry for every change
    keys = [rule_key(entry["rule"]) for entry in entries]
    outcomes: list[str] = []
    for change in changes:
        present = _position(keys, change.new_rule)
        old = _position(keys, change.old_rule)
        full = change.rollout_percent >= FULL_ROLLOUT
        if present is not None:
            held = entries[present]
            if full and "rollout_percent" in held:
                # a full deploy (or a promote) of a line a canary holds: the canary goes to every user
                held.pop("rollout_percent")
                replaced = held.pop("replaces", None)
                gone = _position(keys, replaced)
                if gone is not None:
                    del entries[gone]
                    del keys[gone]
                outcomes.append(PROMOTED_CANARY)
            elif not full and "rollout_percent" in held and change.rollout_percent > int(held["rollout_percent"]):
                # a wider canary of a line a canary holds: the line reaches the wider share while both are active
                held["rollout_percent"] = change.rollout_percent
                outcomes.append(CANARY)
            else:
                outcomes.append(NOOP)
            continue
        new_entry = {"rule": change.new_rule, **change.entry}
        new_key = rule_key(change.new_rule)
        if not full:
            new_entry["rollout_percent"] = change.rollout_percent
            if old is not None:
                new_entry["replaces"] = entries[old]["rule"]
                entries.insert(old + 1, new_entry)
                keys.insert(old + 1, new_key)
            else:
                entries.append(new_entry)
                keys.append(new_key)
            outcomes.append(CANARY)
        elif old is not None:
            entries[old] = new_entry
            keys[old] = new_key
            outcomes.append(REPLACED)
        else:
            entries.append(new_entry)
            keys.append(new_key)
            outcomes.append(APPENDED)
    if all(outcome == NOOP for outcome in outcomes):  # nothing to do: the base as it is, byte for byte
        return Derivation(base if version is None else with_version(base, version), outcomes)
    if version is None:
        version = int(data.get("version", 0)) + sum(outcome != NOOP for outcome in outcomes)
    data["version"] = version
    rendered = render_rules_json(data).encode("utf-8")
    return Derivation((BOM.encode() if document.bom else b"") + rendered, outcomes)


def _derive_lines(base: bytes, changes: Sequence[ActiveChange]) -> Derivation:
    document = LineRuleDocument.parse(base)
    lines = list(document.lines)
    newline = document.newline()
    outcomes: list[str] = []
    for change in changes:
        if change.rollout_percent < FULL_ROLLOUT:
            raise RuleFileInvalid("a line rule file cannot hold a canary")
        rules = [line.rstrip("\r\n") if LineRuleDocument.is_rule(line) else "" for line in lines]
        if _index(rules, change.new_rule) is not None:
            outcomes.append(NOOP)
            continue
        old = _index(rules, change.old_rule)
        if old is not None:
            ending = lines[old][len(lines[old].rstrip("\r\n")) :] or newline
            lines[old] = change.new_rule + ending
            outcomes.append(REPLACED)
            continue
        rule_indexes = [i for i, line in enumerate(lines) if LineRuleDocument.is_rule(line)]
        at = rule_indexes[-1] + 1 if rule_indexes else len(lines)
        if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
            lines[at - 1] += newline
        lines.insert(at, change.new_rule + newline)
        outcomes.append(APPENDED)
    return Derivation(((BOM if document.bom else "") + "".join(lines)).encode("utf-8"), outcomes)


def json_text(content: bytes) -> str:
    """A base as the deployment's JSON detail stores it (rule files are UTF-8: parse refuses anything else)."""
    return content.decode("utf-8")


def base_bytes(text: str) -> bytes:
    return text.encode("utf-8")


def dumps_spec(change: ActiveChange) -> str:  # for logs and tests
    return json.dumps(change.to_detail(), ensure_ascii=False, sort_keys=True)
