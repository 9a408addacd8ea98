"""`RuleBook`: the rule files as the chatbot sees them, from a folder or from Auto-Train over HTTP.

From a folder (`RuleBook(path)`): a file is re-read when it changed on disk (inode, size or mtime), so a deploy
— an atomic rename — is seen without a restart. A file that stops parsing keeps its last good version (with a
warning); a missing file has no rules.

Over HTTP (`RuleBook.from_url(...)`): a daemon thread fetches `GET /autotrain/rulesets` and the rule sets
whose ETag changed (conditional GETs, `If-None-Match`), every `refresh_seconds`. The last good copy of each
rule set is kept on disk in `cache_dir` (written atomically), so a chatbot restarted while Auto-Train is down
still has its rules. The request path (`rules_for`, `render`, ...) only reads memory: a failed fetch is
logged and the last copy kept, nothing is raised into the chatbot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autotrain_client import rules as _rules
from autotrain_client.rules import CompiledRules, RuleFileInvalid

__all__ = ["RuleBook"]

logger = logging.getLogger("autotrain_client")

CACHE_SUFFIX = ".ruleset.json"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


def check_module_name(module_name: Any, where: object) -> str:
    """A rule file name, never a path: refuses "..", "sub/x", hidden names (locks, temporary files)."""
    if (
        not isinstance(module_name, str)
        or not module_name
        or module_name.startswith(".")  # "..", ".autotrain" (locks and backups), temporary files
        or "\x00" in module_name
        or "/" in module_name
        or "\\" in module_name
        or Path(module_name).name != module_name
    ):
        raise ValueError(f"{module_name!r} is not a rule file name inside {where}")
    return module_name


# ---------------------------------------------------------------------- from a folder


@dataclass
class _Cached:
    key: tuple[int, int, int] | None  # (inode, size, mtime_ns) of the version last read, good or bad
    compiled: CompiledRules | None  # the last version that parsed (None: none did)
    problem: str = ""  # why the version last read was not used ("" when it was)


class _FolderSource:
    def __init__(self, rules_dir: Path) -> None:
        self.rules_dir = rules_dir
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}

    def __str__(self) -> str:
        return str(self.rules_dir)

    def get(self, module_name: str) -> CompiledRules | None:
        path = self.rules_dir / module_name
        try:
            # One open file for both the version key and the content: a rename in between cannot pair the
            # key of one version with the content of another.
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
                with self._lock:
                    cached = self._cache.get(module_name)
                    if cached is not None and cached.key == key:
                        return cached.compiled
                content = handle.read()
        except FileNotFoundError:
            with self._lock:
                self._cache.pop(module_name, None)
            return None
        except OSError as exc:
            return self._keep_last_good(module_name, None, f"cannot be read ({exc.strerror or exc})")
        try:
            compiled = _rules.compile_rules(module_name, content)
        except RuleFileInvalid as exc:
            return self._keep_last_good(module_name, key, f"does not parse ({exc})")
        with self._lock:
            self._cache[module_name] = _Cached(key, compiled)
        return compiled

    def _keep_last_good(self, module_name: str, key: tuple[int, int, int] | None, reason: str) -> CompiledRules | None:
        with self._lock:
            cached = self._cache.setdefault(module_name, _Cached(None, None))
            if cached.problem != reason or (key is not None and cached.key != key):  # once per bad version
                if cached.compiled is not None:
                    logger.warning("rule file %s %s; keeping the last good version", module_name, reason)
                else:
                    logger.warning("rule file %s %s; no version of it parsed yet, so no rules", module_name, reason)
            if key is not None:
                cached.key = key
            cached.problem = reason
            return cached.compiled

    def refresh(self) -> bool:
        return True  # every call already reads a file that changed

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------- over HTTP


class FetchFailed(Exception):
    pass


@dataclass(frozen=True)
class _Held:
    compiled: CompiledRules  # its `version` is the server's
    etag: str | None


class _HttpSource:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        cache_dir: Path,
        refresh_seconds: float,
        timeout_seconds: float,
        modules: Iterable[str] | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.cache_dir = cache_dir
        self.refresh_seconds = max(0.05, float(refresh_seconds))
        self.timeout_seconds = float(timeout_seconds)
        self.modules = None if modules is None else tuple(check_module_name(m, base_url) for m in modules)
        self._lock = threading.Lock()  # guards _held
        self._fetching = threading.Lock()  # one fetch at a time (background thread or refresh_now)
        self._held: dict[str, _Held] = {}
        self._problem = ""  # the last fetch's failure ("" when it worked): each new one is logged once
        self._stop = threading.Event()
        self._load_cache()
        fetched_first = False
        if not self._held:
            # Nothing on disk (a first start): one bounded attempt now, so the first answers have rules.
            self.refresh()
            fetched_first = True
        self._thread = threading.Thread(
            target=self._run, args=(fetched_first,), name=f"autotrain-client {self.base_url}", daemon=True
        )
        self._thread.start()

    def __str__(self) -> str:
        return self.base_url

    def get(self, module_name: str) -> CompiledRules | None:
        with self._lock:
            held = self._held.get(module_name)
        return held.compiled if held is not None else None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout_seconds + 1)

    def _run(self, fetched_first: bool) -> None:
        wait = self.refresh_seconds if fetched_first else 0.0
        while not self._stop.wait(wait):
            self.refresh()
            wait = self.refresh_seconds

    # .................................................................. fetching

    def refresh(self) -> bool:
        """Fetch what changed. Never raises: a failure is logged (once per new failure), the last copy kept."""
        with self._fetching:
            try:
                problems = self._refresh()
            except Exception as exc:  # the chatbot must keep running, whatever went wrong here
                problems = [str(exc) if isinstance(exc, FetchFailed) else f"{type(exc).__name__}: {exc}"]
            problem = "; ".join(problems)
            if problem and problem != self._problem:
                logger.warning("cannot refresh the rules from %s: %s; keeping the last copy", self.base_url, problem)
            elif problem:
                logger.debug("cannot refresh the rules from %s: %s", self.base_url, problem)
            elif self._problem:
                logger.info("rules from %s refreshed again", self.base_url)
            self._problem = problem
            return not problem

    def _refresh(self) -> list[str]:
        listed: dict[str, str | None] = {}
        if self.modules is None:
            _, _, body = self._get("/autotrain/rulesets", etag=None)
            items = json.loads(body)["items"]
            for item in items:
                listed[str(item["module_name"])] = item.get("etag")
            with self._lock:
                gone = sorted(set(self._held) - set(listed))
            if gone:
                logger.debug("rule sets no longer listed by %s, last copy kept: %s", self.base_url, gone)
        else:
            listed = dict.fromkeys(self.modules)
        problems: list[str] = []
        for module_name, listed_etag in listed.items():
            try:
                check_module_name(module_name, self.base_url)
                self._refresh_one(module_name, listed_etag)
            except (FetchFailed, RuleFileInvalid) as exc:  # one bad rule set does not stop the others
                problems.append(f"{module_name}: {exc}")
            except Exception as exc:
                problems.append(f"{module_name}: {type(exc).__name__}: {exc}")
        return problems

    def _refresh_one(self, module_name: str, listed_etag: str | None) -> None:
        with self._lock:
            held = self._held.get(module_name)
        if held is not None and listed_etag is not None and held.etag == listed_etag:
            return  # unchanged, as the list says
        path = "/autotrain/rulesets/" + urllib.parse.quote(module_name, safe="")
        status, headers, body = self._get(path, etag=held.etag if held is not None else None)
        if status == 304:
            return
        data = json.loads(body)
        content = data["content"]
        version = data["version"]
        if not isinstance(content, str) or not isinstance(version, str):
            raise FetchFailed("the answer has no text content and version")
        etag = headers.get("ETag") or data.get("etag")
        if held is not None and held.compiled.version == version and held.etag == etag:
            return
        compiled = replace(_rules.compile_rules(module_name, content.encode("utf-8")), version=version)
        self._save(module_name, {"module_name": module_name, "version": version, "etag": etag, "content": content})
        with self._lock:
            self._held[module_name] = _Held(compiled, etag)
        if held is None or held.compiled.version != version:
            logger.info("rule set %s: version %s from %s", module_name, version, self.base_url)

    def _get(self, path: str, *, etag: str | None) -> tuple[int, Any, bytes]:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if etag:
            headers["If-None-Match"] = etag
        request = urllib.request.Request(self.base_url + path, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                body = response.read(MAX_RESPONSE_BYTES + 1)
                if len(body) > MAX_RESPONSE_BYTES:
                    raise FetchFailed(f"GET {path}: the answer is over {MAX_RESPONSE_BYTES} bytes")
                return response.status, response.headers, body
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return 304, exc.headers, b""
            raise FetchFailed(f"GET {path}: HTTP {exc.code}{_error_message(exc)}") from exc
        except urllib.error.URLError as exc:
            raise FetchFailed(f"GET {path}: {exc.reason}") from exc
        except TimeoutError as exc:
            raise FetchFailed(f"GET {path}: no answer within {self.timeout_seconds:g} s") from exc
        except OSError as exc:
            raise FetchFailed(f"GET {path}: {type(exc).__name__}: {exc}") from exc

    # .................................................................. the copy on disk

    def _cache_path(self, module_name: str) -> Path:
        return self.cache_dir / (module_name + CACHE_SUFFIX)

    def _save(self, module_name: str, record: dict[str, Any]) -> None:
        """Atomically (a temporary file in the same folder, fsync, rename). A failure is logged: the copy in
        memory is still used, the one on disk stays the previous one."""
        data = json.dumps({**record, "saved_at": time.time()}, ensure_ascii=False).encode("utf-8")
        tmp_name = None
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{module_name}.", suffix=".tmp", dir=self.cache_dir)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self._cache_path(module_name))
            tmp_name = None
            with contextlib.suppress(OSError):
                dir_fd = os.open(self.cache_dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            logger.warning("cannot keep a copy of rule set %s in %s: %s", module_name, self.cache_dir, exc)
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def _load_cache(self) -> None:
        try:
            paths = sorted(self.cache_dir.glob("*" + CACHE_SUFFIX))
        except OSError as exc:
            logger.warning("cannot read the rules copy in %s: %s", self.cache_dir, exc)
            return
        for path in paths:
            module_name = path.name[: -len(CACHE_SUFFIX)]
            if self.modules is not None and module_name not in self.modules:
                continue
            try:
                check_module_name(module_name, self.cache_dir)
                record = json.loads(path.read_bytes())
                if record.get("module_name") != module_name:
                    raise ValueError("it is the copy of another rule set")
                content, version, etag = record["content"], record["version"], record.get("etag")
                compiled = replace(_rules.compile_rules(module_name, content.encode("utf-8")), version=version)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                logger.warning("ignoring the rules copy %s: %s", path, exc)
                continue
            self._held[module_name] = _Held(compiled, etag if isinstance(etag, str) else None)


def _error_message(exc: urllib.error.HTTPError) -> str:
    """`: <message>` from Auto-Train's `{"error": {"code", "message"}}`, or "" when the body has none."""
    try:
        error = json.loads(exc.read(64 * 1024))["error"]
        return f" {error['code']}: {error['message']}"
    except Exception:
        return ""


# ---------------------------------------------------------------------- the chatbot's view


class RuleBook:
    """The rule files, as the chatbot sees them. Safe to share between threads.

    `RuleBook(folder)` / `RuleBook.from_folder(folder)` reads a folder; `RuleBook.from_url(...)` reads Auto-Train
    over HTTP. Both answer the same questions the same way."""

    def __init__(self, rules_dir: str | os.PathLike[str]) -> None:
        self.rules_dir: Path | None = Path(rules_dir)
        self._source: _FolderSource | _HttpSource = _FolderSource(self.rules_dir)

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str]) -> RuleBook:
        """The rule files in a folder (the one Auto-Train deploys to, or a copy of it)."""
        return cls(path)

    @classmethod
    def from_url(
        cls,
        base_url: str,
        token: str,
        *,
        cache_dir: str | os.PathLike[str],
        refresh_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        modules: Iterable[str] | None = None,
    ) -> RuleBook:
        """The rule sets of the Auto-Train at `base_url` (e.g. "https://autotrain.internal"), read with a
        `reporter` token, refreshed every `refresh_seconds` in a daemon thread, the last good copy kept in
        `cache_dir`. `modules`: fetch only these rule files (default: every rule set Auto-Train lists).

        Starts from the copy in `cache_dir` when there is one (and fetches at once in the background);
        with none, it makes one fetch before returning (at most about `timeout_seconds` when Auto-Train does
        not answer). Never raises for a fetch that fails."""
        book = cls.__new__(cls)
        book.rules_dir = None
        book._source = _HttpSource(
            base_url,
            token,
            cache_dir=Path(cache_dir),
            refresh_seconds=refresh_seconds,
            timeout_seconds=timeout_seconds,
            modules=modules,
        )
        return book

    def __repr__(self) -> str:
        return f"RuleBook({str(self._source)!r})"

    def __enter__(self) -> RuleBook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _compiled(self, module_name: str) -> CompiledRules | None:
        return self._source.get(check_module_name(module_name, self._source))

    def rules_for(self, module_name: str, user_id: str) -> list[str]:
        """The rule lines ("- ...") of that file that apply to this user, in file order (canary buckets
        applied). From a folder, a file that changed since the last read is read again. A file that does not
        parse keeps its last good version; an unknown or missing file gives []."""
        compiled = self._compiled(module_name)
        return compiled.rules_for(str(user_id)) if compiled is not None else []

    def all_rules(self, module_name: str) -> list[str]:
        """Every line as for a user inside every rollout: all canary lines, without the lines they replace."""
        compiled = self._compiled(module_name)
        return compiled.rules_for(None) if compiled is not None else []

    def version(self, module_name: str) -> str | None:
        """The version of the file the answers come from (the first 16 hex digits of its SHA-256, as
        Auto-Train's deployments and reload calls name it); None when there is no such file yet."""
        compiled = self._compiled(module_name)
        return compiled.version if compiled is not None else None

    def render(self, module_name: str, user_id: str) -> str:
        """The whole file as this user's chatbot should use it: a text or Markdown file with its headers,
        blank lines and prose as they are and only the rule lines that apply; for a JSON file, the rule lines
        that apply, joined by newlines. "" when there is no such file."""
        compiled = self._compiled(module_name)
        return compiled.render(str(user_id)) if compiled is not None else ""

    def refresh_now(self) -> bool:
        """Fetch now what changed (for the chatbot's reload endpoint); True when the fetch worked. Never
        raises. From a folder there is nothing to fetch: True."""
        return self._source.refresh()

    def close(self) -> None:
        """Stop the background refresh (over HTTP); the rules already read stay readable."""
        self._source.close()
