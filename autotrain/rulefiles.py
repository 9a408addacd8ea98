"""Rule files the chatbot reads: parsing, applying and reverting one rule, and safe writing.

The pure part (parse / apply / revert) works on bytes and returns bytes, so it is tested without disk.
`RuleFiles` does the I/O with the standard library only: an exclusive lock per file (flock, so it also
holds between processes), a backup of the version before, a temporary file in the same folder, fsync and
an atomic rename. A file that does not parse is never written.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from autotrain.errors import InvalidInput, RuleFileInvalid, RuleFileWriteFailed
from autotrain.i18n import N_
from autotrain.models import MAX_RULE_LENGTH, DeployOutcome
from autotrain.text import one_line

RULE_PREFIX = "- "
BOM = "\ufeff"  # a byte-order mark some editors put first: kept, never taken for part of the first line
STATE_DIR = ".autotrain"  # locks and backups, inside the rules folder


def normalize_rule_line(text: str) -> str:
    """One rule line as the files hold it: NFC, a single line, starting with "- "."""
    line = one_line(unicodedata.normalize("NFC", text))
    if line.startswith(("- ", "* ")):
        line = line[2:].strip()
    elif line.startswith(("-", "*", "•")):
        line = line[1:].strip()
    if not line:
        raise InvalidInput("a rule must have text")
    line = RULE_PREFIX + line
    if len(line) > MAX_RULE_LENGTH:
        raise InvalidInput(f"a rule must be at most {MAX_RULE_LENGTH} characters")
    return line


def content_version(content: bytes) -> str:
    """A file version: the first 16 hex digits of its SHA-256 (what deployments record)."""
    return hashlib.sha256(content).hexdigest()[:16]


@dataclass(frozen=True)
class RuleChange:
    """The result of applying or reverting a rule on one file's content."""

    content: bytes
    outcome: DeployOutcome
    detail: dict[str, Any] = field(default_factory=dict)
    keep_base: bytes | None = None  # a base the change derives from, to keep before the file is written

    @property
    def touches_file(self) -> bool:
        return self.outcome is not DeployOutcome.NOOP and self.detail.get("changed", True)


class RuleDocument(Protocol):
    def rule_lines(self) -> list[str]: ...

    def apply(
        self, *, new_rule: str, old_rule: str | None, entry: dict[str, Any], rollout_percent: int = 100
    ) -> RuleChange: ...

    def revert(self, *, new_rule: str, change: dict[str, Any], keep_new: bool, restore_old: bool) -> RuleChange: ...


def rule_key(rule: str) -> str:
    """A rule as rules are compared: NFC, without surrounding space."""
    return unicodedata.normalize("NFC", rule.strip())


def same_rule(a: str, b: str) -> bool:
    return rule_key(a) == rule_key(b)


_same = same_rule


def render_rules_json(data: dict[str, Any]) -> str:
    """One rule entry per line, as the shipped file is laid out: a deploy's diff (and its git commit) is then
    exactly the entries it changed. Other top-level keys, if any, are kept (indented JSON)."""
    if set(data) != {"version", "rules"}:
        return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    entries = ",\n".join("    " + json.dumps(entry, ensure_ascii=False) for entry in data["rules"])
    body = f"\n{entries}\n  " if entries else ""
    return f'{{\n  "version": {data["version"]},\n  "rules": [{body}]\n}}\n'


class JsonRuleDocument:
    """`{"version": N, "rules": [{"rule": "- ...", "added_from": ..., "rule_id": ...}, ...]}`."""

    def __init__(self, data: dict[str, Any], bom: bool = False) -> None:
        self.data = data
        self.bom = bom

    @classmethod
    def parse(cls, content: bytes) -> JsonRuleDocument:
        bom = content.startswith(BOM.encode())
        if bom:
            content = content[len(BOM.encode()) :]
        if not content.strip():
            return cls({"version": 0, "rules": []}, bom)
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
        return cls(data, bom)

    def rule_lines(self) -> list[str]:
        return [entry["rule"] for entry in self.data["rules"]]

    def _index_of(self, rule: str) -> int | None:
        for index, entry in enumerate(self.data["rules"]):
            if _same(entry["rule"], rule):
                return index
        return None

    def _dump(self, data: dict[str, Any]) -> bytes:
        data["version"] = int(data.get("version", 0)) + 1
        return (BOM if self.bom else "").encode() + render_rules_json(data).encode("utf-8")

    def apply(
        self, *, new_rule: str, old_rule: str | None, entry: dict[str, Any], rollout_percent: int = 100
    ) -> RuleChange:
        if self._index_of(new_rule) is not None:
            return RuleChange(b"", DeployOutcome.NOOP, {"outcome": "noop"})
        data = copy.deepcopy(self.data)
        new_entry = {"rule": new_rule, **entry}
        old_index = self._index_of(old_rule) if old_rule else None
        if rollout_percent < 100:
            # A canary: the new entry goes to a share of users; a rule it replaces stays, for everyone else.
            new_entry["rollout_percent"] = rollout_percent
            if old_index is not None:
                new_entry["replaces"] = data["rules"][old_index]["rule"]
                at = old_index + 1
            else:
                at = len(data["rules"])
            data["rules"].insert(at, new_entry)
            detail = {"outcome": "appended", "index": at, "canary": True}
            return RuleChange(self._dump(data), DeployOutcome.CANARY, detail)
        if old_index is not None:
            removed = data["rules"][old_index]
            data["rules"][old_index] = new_entry
            detail = {"outcome": "replaced", "index": old_index, "removed": removed}
            return RuleChange(self._dump(data), DeployOutcome.REPLACED, detail)
        data["rules"].append(new_entry)
        detail = {"outcome": "appended", "index": len(data["rules"]) - 1}
        return RuleChange(self._dump(data), DeployOutcome.APPENDED, detail)

    def promote(self, *, new_rule: str) -> RuleChange:
        """Take a canary entry to every user: its rollout mark goes, and so does the rule it replaced."""
        data = copy.deepcopy(self.data)
        position = self._index_of(new_rule)
        if position is None:
            raise InvalidInput("the canary's rule is no longer in the file; roll it back and deploy again")
        entry = data["rules"][position]
        entry.pop("rollout_percent", None)
        replaced = entry.pop("replaces", None)
        old_index = self._index_of(replaced) if replaced else None
        if old_index is not None:
            removed = data["rules"].pop(old_index)
            # as a replace: rolling back puts the old entry back where the new one is
            detail = {"outcome": "replaced", "index": old_index, "removed": removed, "promoted": True}
        else:
            detail = {"outcome": "appended", "index": position, "promoted": True}
        return RuleChange(self._dump(data), DeployOutcome.PROMOTED, detail)

    def revert(self, *, new_rule: str, change: dict[str, Any], keep_new: bool, restore_old: bool) -> RuleChange:
        if change.get("outcome") == "noop":  # the line was there before this deploy
            return RuleChange(b"", DeployOutcome.REVERTED, {"outcome": "reverted", "changed": False})
        data = copy.deepcopy(self.data)
        position = self._index_of(new_rule)
        removed_new = False
        if position is not None and not keep_new:
            del data["rules"][position]
            removed_new = True
        restored = False
        removed_entry = change.get("removed")
        if change.get("outcome") == "replaced" and restore_old and isinstance(removed_entry, dict):
            if self._index_of(removed_entry["rule"]) is None:
                at = position if position is not None else change.get("index", len(data["rules"]))
                if position is not None and not removed_new:
                    at = position + 1
                data["rules"].insert(min(at, len(data["rules"])), removed_entry)
                restored = True
        detail = {"outcome": "reverted", "removed_new": removed_new, "restored_old": restored}
        if not (removed_new or restored):
            return RuleChange(b"", DeployOutcome.REVERTED, {**detail, "changed": False})
        return RuleChange(self._dump(data), DeployOutcome.REVERTED, detail)


class LineRuleDocument:
    """Text or Markdown: rules are the lines starting with "- "; every other line stays exactly as it is."""

    def __init__(self, lines: list[str], bom: bool = False) -> None:
        self.lines = lines  # each with its own line ending
        self.bom = bom  # the text started with a byte-order mark (not part of `lines`)

    @classmethod
    def parse(cls, content: bytes) -> LineRuleDocument:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RuleFileInvalid(f"not valid UTF-8: {exc}") from exc
        if "\x00" in text:
            raise RuleFileInvalid("contains NUL bytes")
        bom = text.startswith(BOM)
        return cls((text[len(BOM) :] if bom else text).splitlines(keepends=True), bom)

    def newline(self) -> str:
        return "\r\n" if self.lines and self.lines[0].endswith("\r\n") else "\n"

    _newline = newline

    @staticmethod
    def is_rule(line: str) -> bool:
        return line.startswith(RULE_PREFIX)

    _is_rule = is_rule

    def rule_lines(self) -> list[str]:
        return [line.rstrip("\r\n").strip() for line in self.lines if self._is_rule(line)]

    def _index_of(self, rule: str) -> int | None:
        for index, line in enumerate(self.lines):
            if self._is_rule(line) and _same(line, rule):
                return index
        return None

    def _dump(self, lines: list[str]) -> bytes:
        return ((BOM if self.bom else "") + "".join(lines)).encode("utf-8")

    def apply(
        self, *, new_rule: str, old_rule: str | None, entry: dict[str, Any], rollout_percent: int = 100
    ) -> RuleChange:
        if rollout_percent < 100:
            # policy.check_rollout refuses this before any file is read. Not an `assert`: under -O a line would
            # silently give every user a rule meant for a share of them.
            raise AssertionError(f"a line rule file cannot hold a {rollout_percent} % canary; check_rollout first")
        if self._index_of(new_rule) is not None:
            return RuleChange(b"", DeployOutcome.NOOP, {"outcome": "noop"})
        lines = list(self.lines)
        newline = self._newline()
        old_index = self._index_of(old_rule) if old_rule else None
        if old_index is not None:
            removed = lines[old_index]
            ending = removed[len(removed.rstrip("\r\n")) :] or newline
            lines[old_index] = new_rule + ending
            detail = {"outcome": "replaced", "index": old_index, "removed": removed}
            return RuleChange(self._dump(lines), DeployOutcome.REPLACED, detail)
        rule_indexes = [i for i, line in enumerate(lines) if self._is_rule(line)]
        at = rule_indexes[-1] + 1 if rule_indexes else len(lines)
        if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
            lines[at - 1] += newline
        lines.insert(at, new_rule + newline)
        return RuleChange(self._dump(lines), DeployOutcome.APPENDED, {"outcome": "appended", "index": at})

    def revert(self, *, new_rule: str, change: dict[str, Any], keep_new: bool, restore_old: bool) -> RuleChange:
        if change.get("outcome") == "noop":  # the line was there before this deploy
            return RuleChange(b"", DeployOutcome.REVERTED, {"outcome": "reverted", "changed": False})
        lines = list(self.lines)
        position = self._index_of(new_rule)
        removed_new = False
        if position is not None and not keep_new:
            del lines[position]
            removed_new = True
        restored = False
        removed_line = change.get("removed")
        if change.get("outcome") == "replaced" and restore_old and isinstance(removed_line, str):
            if self._index_of(removed_line) is None:
                at = position if position is not None else int(change.get("index", len(lines)))
                if position is not None and not removed_new:
                    at = position + 1
                at = min(at, len(lines))
                if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
                    lines[at - 1] += self._newline()
                if at < len(lines) and not removed_line.endswith(("\n", "\r")):
                    removed_line += self._newline()  # it was the last line; now another follows it
                lines.insert(at, removed_line)
                restored = True
        detail = {"outcome": "reverted", "removed_new": removed_new, "restored_old": restored}
        if not (removed_new or restored):
            return RuleChange(b"", DeployOutcome.REVERTED, {**detail, "changed": False})
        return RuleChange(self._dump(lines), DeployOutcome.REVERTED, detail)


def parse_rule_file(module_name: str, content: bytes) -> RuleDocument:
    if module_name.endswith(".json"):
        return JsonRuleDocument.parse(content)
    return LineRuleDocument.parse(content)


def parse_to_change(module_name: str, content: bytes) -> RuleDocument:
    """The document a change is derived from; RuleFileInvalid, saying the file was not changed, if it does not
    parse."""
    try:
        return parse_rule_file(module_name, content)
    except RuleFileInvalid as exc:
        raise RuleFileInvalid(
            N_("{module} does not parse, so it was not changed: {reason}"), module=module_name, reason=exc.message
        ) from exc


def deploy_entry(*, rule_id: str, feedback_id: str, confidence: float, deployed_at: datetime) -> dict[str, Any]:
    """The extra fields a JSON rule entry carries (the cookbook's deploy template, plus the rule id)."""
    return {
        "added_from": feedback_id,
        "rule_id": rule_id,
        "confidence": confidence,
        "deployed_at": deployed_at.isoformat(),
    }


class RuleFiles:
    """The allowed rule files in one folder, read and written safely."""

    def __init__(self, rules_dir: Path, allowed_modules: tuple[str, ...], backup_keep: int = 50) -> None:
        self.rules_dir = Path(rules_dir)
        self.allowed_modules = allowed_modules
        self.backup_keep = backup_keep
        self._rules_cache: dict[str, tuple[tuple[int, ...], list[str]]] = {}

    def path_for(self, module_name: str) -> Path:
        if (
            module_name not in self.allowed_modules
            or Path(module_name).name != module_name
            or module_name.startswith(".")
        ):
            allowed = ", ".join(self.allowed_modules)
            raise InvalidInput(f"module {module_name!r} is not an allowed rule file (allowed: {allowed})")
        return self.rules_dir / module_name

    def read_bytes(self, module_name: str) -> bytes:
        path = self.path_for(module_name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise RuleFileInvalid(
                N_("{module} cannot be read: {reason}"), module=module_name, reason=exc.strerror
            ) from exc

    def read(self, module_name: str) -> tuple[bytes, RuleDocument]:
        content = self.read_bytes(module_name)
        return content, parse_to_change(module_name, content)

    def current_rules(self) -> dict[str, list[str]]:
        """Rule lines of every allowed file that parses (for generators and duplicate checks).

        Parsed files are cached by (inode, size, mtime): a generation per feedback need not re-read them.
        """
        rules: dict[str, list[str]] = {}
        for module_name in self.allowed_modules:
            path = self.path_for(module_name)
            try:
                stat = path.stat()
                key: tuple[int, ...] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            except OSError:
                key = ()
            cached = self._rules_cache.get(module_name)
            if cached is not None and key and cached[0] == key:
                rules[module_name] = list(cached[1])
                continue
            try:
                lines = self.read(module_name)[1].rule_lines()
            except RuleFileInvalid:
                lines = []
            self._rules_cache[module_name] = (key, lines)
            rules[module_name] = list(lines)
        return rules

    @contextlib.contextmanager
    def locked(self, module_name: str) -> Iterator[None]:
        """Exclusive lock on one rule file, held across threads and processes (blocking)."""
        handle = self.acquire(module_name)
        try:
            yield
        finally:
            self.release(handle)

    def acquire(self, module_name: str) -> int:
        self.path_for(module_name)
        lock_dir = self.rules_dir / STATE_DIR / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{module_name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    @staticmethod
    def release(handle: int) -> None:
        try:
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            os.close(handle)

    def base_path(self, module_name: str, version: str) -> Path:
        self.path_for(module_name)
        return self.rules_dir / STATE_DIR / "bases" / module_name / f"{version}.base"

    def keep_base(self, module_name: str, content: bytes) -> str:
        """Keep a file's base (what it was before Auto-Train's first active change), by its content version."""
        version = content_version(content)
        path = self.base_path(module_name, version)
        try:
            if path.exists() and path.read_bytes() == content:
                return version
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(content)
                    tmp.flush()
                    os.fsync(tmp.fileno())
                os.replace(tmp_name, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
                raise
        except OSError as exc:
            raise RuleFileWriteFailed(
                N_("could not keep the base of {module} ({reason}); the file was left unchanged"),
                module=module_name,
                reason=exc.strerror or exc,
            ) from exc
        return version

    def read_base(self, module_name: str, version: str) -> bytes | None:
        try:
            content = self.base_path(module_name, version).read_bytes()
        except OSError:
            return None
        return content if content_version(content) == version else None

    def prune_bases(self, module_name: str, keep: set[str]) -> int:
        """Remove the kept bases of a file that no active or pending change derives from (call with the file's
        lock). Returns how many were removed."""
        folder = self.rules_dir / STATE_DIR / "bases" / module_name
        removed = 0
        for base in folder.glob("*.base") if folder.is_dir() else ():
            if base.stem not in keep:
                with contextlib.suppress(OSError):
                    base.unlink()
                    removed += 1
        return removed

    def backup_dir(self, module_name: str) -> Path:
        return self.rules_dir / STATE_DIR / "backups" / module_name

    def write(self, module_name: str, content: bytes, previous: bytes, label: str) -> str:
        """Back up `previous`, then replace the file with `content` atomically. Returns the backup path.

        Call with the file's lock held. On failure the old file is left as it was.
        """
        self.path_for(module_name)  # an unknown file is refused before anything is written
        try:
            backup = self._backup(module_name, previous, label)
        except OSError as exc:
            raise RuleFileWriteFailed(
                N_("could not write {module} ({reason}); the file was left unchanged"),
                module=module_name,
                reason=exc.strerror or exc,
            ) from exc
        self.replace(module_name, content)
        self._prune_backups(module_name)
        return str(backup)

    def replace(self, module_name: str, content: bytes) -> None:
        """Replace the file with `content` atomically (temp file, fsync, rename, the folder fsynced), no backup.
        On failure the old file is left as it was."""
        path = self.path_for(module_name)
        try:
            self.rules_dir.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                # a symlinked rule file: its target is replaced (the link stays a link), from the target's folder
                path = path.resolve()
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
            fd, tmp_name = tempfile.mkstemp(prefix=f".{module_name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(content)
                    tmp.flush()
                    os.fsync(tmp.fileno())
                os.chmod(tmp_name, mode)
                os.replace(tmp_name, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise RuleFileWriteFailed(
                N_("could not write {module} ({reason}); the file was left unchanged"),
                module=module_name,
                reason=exc.strerror or exc,
            ) from exc

    def keep_hand_edit(self, module_name: str, content: bytes) -> Path:
        """Keep a copy of a file edited by hand before it is replaced (never pruned): its path."""
        self.path_for(module_name)
        folder = self.rules_dir / STATE_DIR / "hand-edits" / module_name
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"{datetime.now().strftime('%Y%m%dT%H%M%S%f')}.bak"
        with open(kept, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        return kept

    def _backup(self, module_name: str, previous: bytes, label: str) -> Path:
        folder = self.backup_dir(module_name)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
        backup = folder / f"{stamp}-{label}.bak"
        with open(backup, "wb") as handle:
            handle.write(previous)
            handle.flush()
            os.fsync(handle.fileno())
        return backup

    def tidy(self, *, stale_after_seconds: float = 600) -> int:
        """At start: remove temporary files a killed writer left (old enough not to be anyone's write in
        progress) and prune backups to the retention. Returns how many temporary files were removed."""
        removed = 0
        cutoff = time.time() - stale_after_seconds
        for module_name in self.allowed_modules:
            for leftover in self.rules_dir.glob(f".{module_name}.*.tmp"):
                with contextlib.suppress(OSError):
                    if leftover.stat().st_mtime < cutoff:
                        leftover.unlink()
                        removed += 1
            if self.backup_dir(module_name).is_dir():
                self._prune_backups(module_name)
        return removed

    def _prune_backups(self, module_name: str) -> None:
        backups = sorted(self.backup_dir(module_name).glob("*.bak"))
        for old in backups[: max(0, len(backups) - self.backup_keep)]:
            with contextlib.suppress(OSError):
                old.unlink()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
