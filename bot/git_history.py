"""Git history of the rule files: every deploy and rollback becomes a commit whose author is the admin.

Decision: the git binary, run through `subprocess`, rather than dulwich. Every machine that has git can then
read the history with the usual tools (`git log`, `git show`, a GUI, a hosting service) in exactly the format
they expect, and Auto-Train needs no extra Python dependency. The functions here are synchronous; the caller
runs them in a thread.

A user's git setup must never change what happens, so each git call:

- runs with `core.hooksPath` set to the null device (no hook of the user, the repository or a template runs)
  and `commit.gpgsign=false`, plus a few settings that would otherwise change output (colour, paths quoting,
  log encoding, `log.follow`, fsmonitor);
- ignores the system config (GIT_CONFIG_NOSYSTEM=1) and drops inherited GIT_* variables that would point git
  at another repository, index or identity (GIT_DIR, GIT_INDEX_FILE, GIT_AUTHOR_NAME, GIT_CONFIG_PARAMETERS,
  ...). HOME and the user's global config are left as they are (they may hold `safe.directory` and the like);
  what matters is overridden on the command line, which wins over every config file;
- names the committer explicitly (`-c user.name=... -c user.email=...` and GIT_COMMITTER_*) and the author of
  each commit (GIT_AUTHOR_*), so neither comes from the user's config. The author is the person who made the
  change: a Slack user's real name and e-mail when Slack gives them (users.info, through the
  PeopleDirectory), else the actor id as it is (`cli-admin <cli-admin@autotrain.invalid>`);
- never prompts (GIT_TERMINAL_PROMPT=0, stdin closed) and has a timeout;
- treats paths literally (GIT_LITERAL_PATHSPECS=1), so a rule file name is never a glob or a pathspec magic;
- runs in a session of its own, so it can never ask on the terminal (ssh included), and a timeout kills
  the whole process group (ssh, git-remote-https), not only git.

Pushing (AUTOTRAIN_GIT_REMOTE): after each commit the branch head is pushed as `git push -- <remote>
<sha>:refs/heads/<branch>` — the remote is a URL or a path given on the command line, not a named remote, so
the repository's config is never changed and a new setting takes effect at the next start. It never forces:
a remote branch that has moved on (someone else pushed) is refused, and said so. The transport's own
settings are kept (GIT_SSH_COMMAND, GIT_ASKPASS, credential helpers in the global config, SSH_AUTH_SOCK);
credentials in a URL never reach an error message.

The rules folder is either its own repository (created by `ensure_repo` with a `.gitignore` that keeps
`.autotrain/` — locks and backups — and `*.tmp` out) or a folder inside a larger work tree, such as a clone of
this project. In both cases a commit records one rule file and nothing else: whatever else is staged or
modified in that work tree stays as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from autotrain.ports import PeopleDirectory

log = logging.getLogger("autotrain.git")

GITIGNORE_LINES = (".autotrain/", "*.tmp")
INITIAL_MESSAGE = "Auto-Train: track the rule files"
LOCAL_HISTORY_REF = "refs/autotrain/local-history"  # a folder's own history, from before it shared one
REMOTE_REF = "refs/autotrain/remote"  # the remote branch, as last fetched (bot/shared_history.py)
IGNORE_MESSAGE = "Auto-Train: ignore its working files (.autotrain/, *.tmp)"
DEFAULT_BRANCH = "main"
GIT_TIMEOUT_SECONDS = 60.0
PUSH_TIMEOUT_SECONDS = 10.0  # a push runs after each commit, inside the deploy: short, and it never fails one
MAX_HISTORY = 10_000

# Inherited GIT_* variables that are kept: where the user's own global config lives, where git finds its
# helpers, how far repository discovery may go, and how a push reaches the remote (ssh, credentials, proxy,
# certificates). Every other GIT_* variable is dropped.
_KEPT_GIT_VARIABLES = frozenset(
    {
        "GIT_CONFIG_GLOBAL",
        "GIT_EXEC_PATH",
        "GIT_CEILING_DIRECTORIES",
        "GIT_DISCOVERY_ACROSS_FILESYSTEM",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSH_VARIANT",
        "GIT_ASKPASS",
        "GIT_PROXY_COMMAND",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
    }
)
_FIXED_CONFIG = (
    f"core.hooksPath={os.devnull}",
    "commit.gpgsign=false",
    "tag.gpgsign=false",
    "core.fsmonitor=false",
    "core.quotePath=false",
    "color.ui=false",
    "i18n.commitEncoding=UTF-8",
    "i18n.logOutputEncoding=UTF-8",
    "log.follow=false",
    "log.showSignature=false",
    "diff.noprefix=false",
    "diff.mnemonicPrefix=false",
    "push.gpgSign=false",
)
_HEX_REVISION = re.compile(r"[0-9a-fA-F]{4,64}")
_AUTHOR_LINE = re.compile(rb"author (.*)<([^<>]*)> (\d+) ([+-])(\d{2})(\d{2})")
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_SCP_LIKE = re.compile(r"[^/]+:")  # host:path or user@host:path (a colon before any slash), as git reads it
_SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")  # U0123ABCD (W…: Enterprise Grid); never a token subject
_PLAIN_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+")
AUTHOR_LOOKUP_SECONDS = 3.0  # a commit waits at most this long for users.info, then uses the id

_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def _lock_for(folder: Path) -> threading.Lock:
    key = str(folder.resolve())
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


@contextlib.contextmanager
def _folder_lock(rules_dir: Path) -> Iterator[None]:
    """flock on a file in the (ignored) .autotrain folder: one process at a time sets the repository up."""
    folder = rules_dir / ".autotrain"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "git-setup.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class GitHistoryError(RuntimeError):
    """A git command failed; the message carries git's stderr."""


class RulesFolderInsideRepository(GitHistoryError):
    """The rules folder is inside another repository (a clone of this project's config/): history stays off,
    by design, which is a setting to change, not a failure."""


@dataclass(frozen=True)
class Commit:
    sha: str  # full
    short: str  # 10 chars
    author_name: str
    author_email: str
    at: datetime  # author date, tz-aware
    message: str  # full message
    files: tuple[str, ...]  # paths relative to the rules folder


def _check_module_name(module_name: str) -> str:
    """A rule file name: one plain, visible file name in the rules folder — no folder part, no `..`, no hidden
    name (which would reach `.git`, `.gitignore` or `.autotrain`), no control character."""
    if not isinstance(module_name, str) or not module_name or len(module_name) > 255:
        raise ValueError(f"not a rule file name: {module_name!r}")
    if (
        module_name.startswith(".")
        or "/" in module_name
        or "\\" in module_name
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in module_name)
        or module_name != module_name.strip()
    ):
        raise ValueError(f"not a plain rule file name: {module_name!r}")
    return module_name


def _tree_path(path: str) -> str:
    """A path a commit made from content may set: a rule file, or Auto-Train's own .gitignore."""
    return path if path == ".gitignore" else _check_module_name(path)


def _check_identity(name: str, email: str, what: str) -> None:
    for label, value in (("name", name), ("email", email)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{what} {label} must not be empty")
        if any(ch in value for ch in "<>\n\r\0"):
            raise ValueError(f"{what} {label} must not contain <, > or a line break: {value!r}")


def _check_revision(sha: str) -> str:
    if not isinstance(sha, str) or not _HEX_REVISION.fullmatch(sha):
        raise ValueError(f"not a commit id: {sha!r}")
    return sha.lower()


def folder_state(folder: Path) -> str:
    """What `GitRuleHistory._work_tree_state` will say of `folder` once it exists ("own", "inside" or "none"),
    asked of its nearest existing ancestor when it does not exist yet (the start-up log is written before the
    rules folder is created)."""
    folder = Path(folder).absolute()
    if folder.is_dir():
        return GitRuleHistory(folder)._work_tree_state()
    ancestor = folder.parent
    while not ancestor.is_dir():
        if ancestor.parent == ancestor:
            return "none"
        ancestor = ancestor.parent
    probe = GitRuleHistory(ancestor)
    if probe._work_tree_state() == "none":
        return "none"  # no work tree there, or one that ignores the ancestor (and so the folder)
    relative = folder.relative_to(ancestor).as_posix()
    ignored = probe._run("check-ignore", "-q", "--", relative + "/", ok_codes=(0, 1), literal_paths=False)
    return "none" if ignored.returncode == 0 else "inside"


class GitRuleHistory:
    """Commits, history, diffs and old versions of the rule files in `rules_dir`, through the git binary."""

    def __init__(
        self, rules_dir: Path, *, committer: str = "Auto-Train", committer_email: str = "autotrain@localhost"
    ) -> None:
        _check_identity(committer, committer_email, "committer")
        self.rules_dir = Path(rules_dir)
        self.committer = committer
        self.committer_email = committer_email
        self._lock = _lock_for(self.rules_dir)

    # --- running git -------------------------------------------------------------------------------------

    def _environment(
        self, author: tuple[str, str] | None, literal_paths: bool, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEPT_GIT_VARIABLES}
        env.update(
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            GCM_INTERACTIVE="never",  # Git Credential Manager, when the user's config names it: no dialog
            GIT_COMMITTER_NAME=self.committer,
            GIT_COMMITTER_EMAIL=self.committer_email,
            LC_ALL="C",  # messages in English, whatever the locale; content is passed through as bytes
            LANGUAGE="C",
        )
        if literal_paths:
            env["GIT_LITERAL_PATHSPECS"] = "1"
        author_name, author_email = author or (self.committer, self.committer_email)
        env.update(GIT_AUTHOR_NAME=author_name, GIT_AUTHOR_EMAIL=author_email)
        env.update(extra or {})  # (our own GIT_INDEX_FILE and dates: build_commit)
        return env

    def _run(
        self,
        *args: str,
        input: bytes | None = None,
        author: tuple[str, str] | None = None,
        ok_codes: Sequence[int] = (0,),
        literal_paths: bool = True,
        timeout: float = GIT_TIMEOUT_SECONDS,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        command = ["git", "--no-pager"]
        for setting in (*_FIXED_CONFIG, f"user.name={self.committer}", f"user.email={self.committer_email}"):
            command += ["-c", setting]
        command += args
        try:
            result = _execute(
                command,
                cwd=self.rules_dir,
                env=self._environment(author, literal_paths, env),
                input=input,
                timeout=timeout,
            )
        except FileNotFoundError as exc:
            if not self.rules_dir.is_dir():
                raise GitHistoryError(f"the rules folder {self.rules_dir} does not exist") from exc
            raise GitHistoryError("the git binary was not found on PATH") from exc
        except subprocess.TimeoutExpired as exc:
            raise GitHistoryError(f"git {args[0]} took longer than {timeout:g} s") from exc
        if result.returncode not in ok_codes:
            stderr = redact(result.stderr.decode("utf-8", "replace").strip())
            raise GitHistoryError(f"git {args[0]} failed (exit {result.returncode}): {stderr}")
        return result

    def _text(self, *args: str) -> str:
        return self._run(*args).stdout.decode("utf-8", "replace").strip()

    # --- the repository ----------------------------------------------------------------------------------

    def _work_tree_state(self) -> str:
        """Where the folder stands: "own" (the top of a work tree), "inside" (a folder of a larger work tree
        that does not ignore it) or "none" (no work tree, or one that ignores the folder)."""
        probe = self._run("rev-parse", "--is-inside-work-tree", "--show-toplevel", ok_codes=(0, 128))
        if probe.returncode == 128:
            if b"not a git repository" in probe.stderr:
                return "none"
            raise GitHistoryError(f"git rev-parse failed: {probe.stderr.decode('utf-8', 'replace').strip()}")
        lines = probe.stdout.decode("utf-8", "replace").splitlines()
        if not lines or lines[0] != "true":
            raise GitHistoryError(f"{self.rules_dir} is inside a git directory, not a work tree")
        if Path(lines[1]).resolve() == self.rules_dir.resolve():
            return "own"
        # check-ignore refuses literal pathspecs; "." has nothing to expand anyway
        ignored = self._run("check-ignore", "-q", "--", ".", ok_codes=(0, 1), literal_paths=False)
        return "none" if ignored.returncode == 0 else "inside"

    def ensure_repo(self, *, initial_commit: bool = True) -> bool:
        """Create the repository if the folder is not one yet (git init, a .gitignore with `.autotrain/` and
        `*.tmp`, and an initial commit of the rule files as they are, authored by the committer). Returns True
        when it created it. A folder that is already a work tree (its own repo, or inside a larger repo such as
        a clone of this project) is used as it is: commits then touch only the given rule file paths. A folder
        that a larger work tree ignores gets its own repository (commits there would be refused)."""
        with self._lock, _folder_lock(self.rules_dir):  # two instances starting together: one creates it
            self.rules_dir.mkdir(parents=True, exist_ok=True)
            state = self._work_tree_state()
            if state == "own":
                self._ignore_own_files()
            if state != "none":
                return False
            self._run("init", "-q", "--template=", f"--initial-branch={DEFAULT_BRANCH}", ".")
            self._write_gitignore()
            if not initial_commit:  # the shared history (bot/shared_history.py) brings the first commit
                return True
            self._run("add", "-A", "--", ".")
            self._run("commit", "-q", "--no-verify", "--cleanup=whitespace", "-F", "-", input=INITIAL_MESSAGE.encode())
            return True

    def _ignore_own_files(self) -> None:
        """A repository that existed before Auto-Train gets the ignore rule for its working files too."""
        if not self._write_gitignore():
            return
        self._run("add", "--", ".gitignore")
        self._run(
            "commit",
            "-q",
            "--no-verify",
            "--cleanup=whitespace",
            "--only",
            "-F",
            "-",
            "--",
            ".gitignore",
            input=IGNORE_MESSAGE.encode(),
        )

    def _write_gitignore(self) -> bool:
        """Add the lines that keep Auto-Train's own files out of the history; True when the file changed."""
        path = self.rules_dir / ".gitignore"
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        present = {line.strip() for line in existing.splitlines()}
        missing = [line for line in GITIGNORE_LINES if line not in present]
        if not missing:
            return False
        if existing and not existing.endswith("\n"):
            existing += "\n"
        path.write_text(existing + "".join(f"{line}\n" for line in missing), encoding="utf-8")
        return True

    # --- writing -----------------------------------------------------------------------------------------

    def commit(self, module_name: str, *, author_name: str, author_email: str, message: str) -> Commit | None:
        """Commit that one file's current content (git add -- <file>; git commit --only -- <file>), with the
        author given. None when the file did not change (nothing to commit). Never commits other paths."""
        name = _check_module_name(module_name)
        _check_identity(author_name, author_email, "author")
        if not isinstance(message, str) or not message.strip() or "\0" in message:
            raise ValueError("a commit message must have text (and no NUL)")
        if not (self.rules_dir / name).is_file():
            raise FileNotFoundError(f"{name} is not a file in {self.rules_dir}")
        with self._lock:
            self._run("add", "--", name)
            staged = self._run(
                "diff", "--cached", "--quiet", "--no-ext-diff", "--no-textconv", "--", name, ok_codes=(0, 1)
            )
            if staged.returncode == 0:
                return None
            self._run(
                "commit",
                "-q",
                "--no-verify",
                "--no-edit",
                "--cleanup=whitespace",
                "-F",
                "-",
                "--only",
                "--",
                name,
                input=message.encode("utf-8"),
                author=(author_name, author_email),
            )
            sha = self._text("rev-parse", "--verify", "HEAD^{commit}")
        return self._commits([sha])[0]

    def push(self, remote: str, branch: str | None = None, *, timeout: float = PUSH_TIMEOUT_SECONDS) -> str:
        """Push the current commit to `branch` of `remote` (default: the branch checked out here), with every
        earlier commit the remote lacks; the sha pushed. Never forces: a remote branch that moved on elsewhere
        is refused. One push at a time per folder, each of the newest commit, so none rewinds another."""
        with _push_lock_for(self.rules_dir):
            with self._lock:  # a commit under way is finished first, and included
                head = self._text("rev-parse", "--verify", "HEAD^{commit}")
                target = branch or self._current_branch()
            where = f"{redact(remote)} ({target})"
            if self._run("check-ref-format", f"refs/heads/{target}", ok_codes=(0, 1)).returncode != 0:
                raise GitHistoryError(
                    f"git push to {where}: {target!r} is not a valid branch name (AUTOTRAIN_GIT_BRANCH)"
                )
            try:
                result = self._run(
                    "push",
                    "--porcelain",
                    "--no-verify",
                    "--no-follow-tags",
                    "--no-signed",
                    "--recurse-submodules=no",
                    "--",
                    remote,
                    f"{head}:refs/heads/{target}",
                    ok_codes=(0, 1, 128),
                    timeout=timeout,
                )
            except GitHistoryError as exc:
                raise GitHistoryError(f"git push to {where}: {exc}") from exc
        if result.returncode != 0:
            raise GitHistoryError(f"git push to {where} failed: {_push_failure(result)}")
        return head

    def reachable(self, tip: str, shas: Sequence[str]) -> set[str]:
        """Those of `shas` that are `tip` or one of its ancestors (one `git rev-list`, not a call per sha)."""
        wanted = {_check_revision(sha) for sha in shas}
        if not wanted:
            return set()
        listed = self._run("rev-list", _check_revision(tip)).stdout.decode("ascii", "replace").split()
        return wanted.intersection(listed)

    def branch_name(self) -> str | None:
        """The branch checked out (None: a detached HEAD)."""
        probe = self._run("symbolic-ref", "--quiet", "--short", "HEAD", ok_codes=(0, 1))
        return probe.stdout.decode("utf-8", "replace").strip() if probe.returncode == 0 else None

    def _current_branch(self) -> str:
        name = self.branch_name()
        if name is None:
            raise GitHistoryError(
                f"{self.rules_dir} has no branch checked out (a detached HEAD): set AUTOTRAIN_GIT_BRANCH to push"
            )
        return name

    # --- commits made from content (the shared history: bot/shared_history.py) ----------------------------

    def tip(self) -> str | None:
        """The commit checked out (None: no commit yet)."""
        probe = self._run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", ok_codes=(0, 1, 128))
        return probe.stdout.decode("ascii").strip() if probe.returncode == 0 else None

    def present(self, shas: Sequence[str]) -> set[str]:
        """Those of `shas` whose commit this repository has."""
        wanted = [_check_revision(sha) for sha in shas]
        if not wanted:
            return set()
        out = self._run("cat-file", "--batch-check", input="".join(f"{sha}\n" for sha in wanted).encode()).stdout
        return {
            fields[0]
            for fields in map(str.split, out.decode("ascii", "replace").splitlines())
            if fields[1:2] == ["commit"]
        }

    def build_commit(
        self,
        parent: str | None,
        files: dict[str, bytes],
        *,
        author: tuple[str, str],
        at: datetime,
        message: str,
    ) -> str | None:
        """Write the commit whose tree is `parent`'s with `files` set, and return its sha (None: that tree is
        the parent's, nothing changed), touching neither the branch, the index nor the work tree. The same
        arguments give the same sha in every repository: the committer is fixed, both dates are `at` (whole
        seconds, UTC), the message is taken as it is. The rules folder is flat, so the tree is one level: the
        parent's entries (`ls-tree`), the files' blobs put in, `mktree`."""
        _check_identity(*author, "author")
        entries: dict[bytes, bytes] = {}
        if parent is not None:
            listed = self._run("ls-tree", "-z", "--full-tree", _check_revision(parent), literal_paths=False).stdout
            for entry in filter(None, listed.split(b"\0")):
                entries[entry.partition(b"\t")[2]] = entry
        changed = False
        for path, content in sorted(files.items()):
            name = _tree_path(path).encode("utf-8")
            blob = self._run("hash-object", "-w", "--stdin", input=content).stdout.strip()
            entry = b"100644 blob " + blob + b"\t" + name
            changed |= entries.get(name) != entry
            entries[name] = entry
        if parent is not None and not changed:
            return None
        tree = self._run("mktree", "-z", input=b"".join(e + b"\0" for e in entries.values())).stdout.strip()
        stamp = f"@{int(at.timestamp())} +0000"
        made = self._run(
            "commit-tree",
            tree.decode("ascii"),
            *(["-p", parent] if parent else []),
            "-F",
            "-",
            input=message.encode("utf-8"),
            author=author,
            env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        )
        return made.stdout.decode("ascii").strip()

    def move_to(self, sha: str, *, expected: str | None = None, keep_as: str = LOCAL_HISTORY_REF) -> None:
        """Make `sha` the branch's commit, and the index its tree (the work tree is left as it is: the rules
        folder's files are written from the database). `expected`: the branch's commit now, which `sha`
        descends from (git checks it is, nothing is looked up). Otherwise a branch commit `sha` does not descend
        from (this folder's own history, from before it shared one) is kept as `keep_as`, never lost."""
        commit = _check_revision(sha)
        with self._lock:
            if expected is None:
                old = self.tip()
                if old == commit:
                    return
                if old is not None and not self._descends(commit, old):
                    self._run("update-ref", keep_as, old)
                    log.warning(
                        "%s: the rules folder's own git history (up to %s) is kept as %s; the branch now follows"
                        " the history every instance shares",
                        self.rules_dir,
                        old[:10],
                        keep_as,
                    )
            else:
                old = _check_revision(expected)
            self._run("update-ref", "-m", "autotrain: the shared history", "HEAD", commit, *([old] if old else []))
            self._run("read-tree", commit)

    def _descends(self, commit: str, ancestor: str) -> bool:
        return self._run("merge-base", "--is-ancestor", ancestor, commit, ok_codes=(0, 1)).returncode == 0

    def fetch(self, remote: str, branch: str, *, timeout: float = PUSH_TIMEOUT_SECONDS) -> str | None:
        """The commit of `branch` on `remote`, fetched into this repository (None: the remote has no such
        branch). Only a ref of Auto-Train's own is written (refs/autotrain/remote)."""
        if self._run("check-ref-format", f"refs/heads/{branch}", ok_codes=(0, 1)).returncode != 0:
            raise GitHistoryError(f"{branch!r} is not a valid branch name (AUTOTRAIN_GIT_BRANCH)")
        listed = self._run("ls-remote", "--", remote, f"refs/heads/{branch}", timeout=timeout).stdout.split()
        if not listed:
            return None
        self._run(
            "fetch",
            "-q",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
            remote,
            f"+refs/heads/{branch}:{REMOTE_REF}",
            timeout=timeout,
        )
        return self._text("rev-parse", "--verify", f"{REMOTE_REF}^{{commit}}")

    # --- reading -----------------------------------------------------------------------------------------

    def history(self, module_name: str, limit: int = 50) -> list[Commit]:
        """Commits that touched the file, newest first (at most `limit`)."""
        name = _check_module_name(module_name)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY:
            raise ValueError(f"limit must be between 1 and {MAX_HISTORY}")
        if self._run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", ok_codes=(0, 1)).returncode != 0:
            return []  # no commit yet
        shas = self._text("log", "--format=%H", f"--max-count={limit}", "--", name).split()
        return self._commits(shas)

    def diff(self, sha: str, module_name: str | None = None) -> str:
        """The unified diff of that commit against its first parent (for one file when given). Paths are
        relative to the rules folder; in a larger work tree, changes outside the folder are left out."""
        revision = self._resolve(sha)
        args = [
            "diff-tree",
            "-p",
            "-r",
            "--root",
            "--no-commit-id",
            "--relative",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--unified=3",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            revision,
        ]
        if module_name is not None:
            args += ["--", _check_module_name(module_name)]
        return self._run(*args).stdout.decode("utf-8", "replace")

    def show(self, sha: str, module_name: str) -> str:
        """The file's content at that commit."""
        name = _check_module_name(module_name)
        revision = self._resolve(sha)
        data = self._run("cat-file", "blob", f"{revision}:./{name}").stdout
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GitHistoryError(f"{name} at {revision[:10]} is not UTF-8 text") from exc

    def _resolve(self, sha: str) -> str:
        revision = _check_revision(sha)
        return self._text("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")

    def _commits(self, shas: list[str]) -> list[Commit]:
        """Commit records for full ids, in the order given: metadata from the raw commit objects (no format
        string for a message to break), changed files from `git log --name-only -z`."""
        if not shas:
            return []
        files = self._files(shas)
        raw = self._run("cat-file", "--batch", input="".join(f"{sha}\n" for sha in shas).encode()).stdout
        commits: list[Commit] = []
        position = 0
        for sha in shas:
            end_of_header = raw.index(b"\n", position)
            header = raw[position:end_of_header].split()
            if len(header) != 3 or header[1] != b"commit":
                raise GitHistoryError(f"unexpected git cat-file answer for {sha}: {header!r}")
            size = int(header[2])
            body = raw[end_of_header + 1 : end_of_header + 1 + size]
            position = end_of_header + 1 + size + 1
            commits.append(_parse_commit(sha, body, files.get(sha, ())))
        return commits

    def _files(self, shas: list[str]) -> dict[str, tuple[str, ...]]:
        out = self._run(
            "log", "--no-walk=unsorted", "--format=%H", "--name-only", "-z", "--relative", "--no-renames", *shas
        ).stdout
        expected = iter(shas)
        files: dict[str, list[str]] = {}
        current: list[str] | None = None
        upcoming = next(expected, None)
        for token in out.split(b"\0"):
            if upcoming is not None and token == upcoming.encode():
                current = files.setdefault(upcoming, [])
                upcoming = next(expected, None)
            elif token and current is not None:
                current.append(token.removeprefix(b"\n").decode("utf-8", "surrogateescape"))
        return {sha: tuple(names) for sha, names in files.items()}


def _parse_commit(sha: str, body: bytes, files: tuple[str, ...]) -> Commit:
    head, _, message = body.partition(b"\n\n")
    encoding = "utf-8"
    author: re.Match[bytes] | None = None
    for line in head.split(b"\n"):
        if line.startswith(b"author "):
            author = _AUTHOR_LINE.fullmatch(line)
        elif line.startswith(b"encoding "):
            encoding = line[len(b"encoding ") :].decode("ascii", "replace").strip()
    if author is None:
        raise GitHistoryError(f"commit {sha} has no readable author line")
    try:
        text = message.decode(encoding, "replace")
        name = author.group(1).decode(encoding, "replace").strip()
        email = author.group(2).decode(encoding, "replace")
    except LookupError:
        text = message.decode("utf-8", "replace")
        name = author.group(1).decode("utf-8", "replace").strip()
        email = author.group(2).decode("utf-8", "replace")
    offset = timedelta(hours=int(author.group(5)), minutes=int(author.group(6)))
    zone = timezone(-offset if author.group(4) == b"-" else offset)
    at = datetime.fromtimestamp(int(author.group(3)), UTC).astimezone(zone)
    return Commit(
        sha=sha,
        short=sha[:10],
        author_name=name,
        author_email=email,
        at=at,
        message=text.rstrip("\n"),
        files=files,
    )


def _execute(
    command: list[str], *, cwd: Path, env: dict[str, str], input: bytes | None, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run, but in a session of its own: no controlling terminal for git or ssh to prompt on, and
    a timeout kills the whole group — a helper (ssh, git-remote-https) still holding the pipes would otherwise
    keep the call waiting past its timeout."""
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


_push_locks_guard = threading.Lock()
_push_locks: dict[str, threading.Lock] = {}


def _push_lock_for(folder: Path) -> threading.Lock:
    """Pushes wait for each other, not for commits (a slow remote never holds a deploy's commit up)."""
    key = str(folder.resolve())
    with _push_locks_guard:
        return _push_locks.setdefault(key, threading.Lock())


def redact(text: str) -> str:
    """A URL's user and password (https://user:token@host/...) taken out, wherever git echoed it."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def push_destination(remote: str) -> str:
    """AUTOTRAIN_GIT_REMOTE as git is given it: a URL (scheme://, or scp-like host:path) as it is; a local
    path made absolute, since git runs in the rules folder and the path is meant from where Auto-Train starts."""
    remote = remote.strip()
    if not remote:
        raise ValueError("AUTOTRAIN_GIT_REMOTE is empty")
    if "://" in remote or _SCP_LIKE.match(remote):
        return remote
    return str(Path(remote).expanduser().absolute())


def _push_failure(result: subprocess.CompletedProcess[bytes]) -> str:
    """git's reason, on one line: its errors (no hints) and, for a refused ref, the porcelain status line."""
    lines = [
        line.strip()
        for line in result.stderr.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.lstrip().startswith("hint:")
    ]
    refused = [
        " ".join(line.split("\t")[1:]).strip()
        for line in result.stdout.decode("utf-8", "replace").splitlines()
        if line.startswith("!")
    ]
    return redact("; ".join([*refused, *lines]) or f"exit {result.returncode}")


INDEX_LOCK_RETRIES = 5
STALE_LOCK_SECONDS = 60.0


class AsyncGitHistory:
    """The RuleHistory port on top of GitRuleHistory: git runs in a thread, authors come from actor ids.

    Decision: history is kept when the rules folder is a repository of its own, or in no repository yet (one
    is created). A rules folder inside another repository — the `config/` of a clone of this project — is
    left alone (no commits in someone else's repository); point AUTOTRAIN_RULES_DIR at a folder of its own.
    """

    def __init__(
        self,
        history: GitRuleHistory,
        *,
        remote: str | None = None,
        branch: str | None = None,
        push_timeout: float = PUSH_TIMEOUT_SECONDS,
        people: PeopleDirectory | None = None,
    ) -> None:
        self.history = history
        self.remote = push_destination(remote) if remote else None  # None: commits stay in the rules folder
        self.branch = branch or None  # None: the branch checked out in the rules folder
        self.push_timeout = push_timeout
        self.people = people  # who a Slack user id is (Slack on); None: authors are the ids

    @classmethod
    def open(
        cls,
        rules_dir: Path,
        remote: str | None = None,
        branch: str | None = None,
        *,
        push_timeout: float = PUSH_TIMEOUT_SECONDS,
        people: PeopleDirectory | None = None,
        initial_commit: bool = True,
    ) -> AsyncGitHistory:
        """The history of the rules folder (created when it has none); with `remote`, every commit is pushed
        there (AUTOTRAIN_GIT_REMOTE), to `branch` (AUTOTRAIN_GIT_BRANCH, default the current branch); with
        `people`, a Slack user's commits carry their real name and e-mail."""
        history = GitRuleHistory(Path(rules_dir))
        Path(rules_dir).mkdir(parents=True, exist_ok=True)
        if history._work_tree_state() == "inside":
            raise RulesFolderInsideRepository(
                f"{Path(rules_dir).resolve()} is inside another git repository; set AUTOTRAIN_RULES_DIR to a folder"
                " of its own to keep the rules' history"
            )
        history.ensure_repo(initial_commit=initial_commit)
        return cls(history, remote=remote, branch=branch, push_timeout=push_timeout, people=people)

    async def author(self, actor: str) -> tuple[str, str]:
        """The git author (name, e-mail) of a change made by `actor`: the pipeline's own actors are Auto-Train;
        a Slack user is their real name and e-mail when Slack gives them; anything else, or a lookup that
        fails or is slow, is the id as it is. Never raises."""
        if actor in ("system", "auto-approve"):
            return self.history.committer, self.history.committer_email
        name, email = actor, f"{actor.lower()}@autotrain.invalid"
        if self.people is None or not _SLACK_USER_ID.fullmatch(actor):
            return name, email
        try:
            person = await asyncio.wait_for(self.people.person(actor), AUTHOR_LOOKUP_SECONDS)
        except Exception as exc:  # Slack down or slow, a bug in the lookup: the commit goes ahead with the id
            log.info("the git author of %s stays its id (users.info: %s)", actor, type(exc).__name__)
            return name, email
        if person is None:
            return name, email
        real_name = " ".join(re.sub(r"[<>\0]", " ", person.real_name or "").split())
        if real_name:
            name = real_name
        if person.email and _PLAIN_EMAIL.fullmatch(person.email):
            email = person.email
        return name, email

    async def commit(self, module_name: str, *, author: str, message: str) -> str | None:
        name, email = await self.author(author)
        for attempt in range(INDEX_LOCK_RETRIES):
            try:
                commit = await asyncio.to_thread(
                    self.history.commit, module_name, author_name=name, author_email=email, message=message
                )
                return commit.sha if commit else None
            except GitHistoryError as exc:
                # another process (the CLI, a second serve) is committing in this repository right now
                if "index.lock" not in str(exc):
                    raise
                if self._clear_stale_lock():
                    continue
                if attempt == INDEX_LOCK_RETRIES - 1:
                    raise GitHistoryError(self._lock_held()) from exc
                await asyncio.sleep(0.2 * (attempt + 1))
        return None

    async def push(self, commits: Sequence[str]) -> set[str]:
        """Push the branch (and every earlier commit the remote lacks); of `commits`, those the remote has now.
        Raises GitHistoryError (the reason, credentials removed) when the push fails or times out."""
        if self.remote is None:
            raise GitHistoryError("no git remote configured (AUTOTRAIN_GIT_REMOTE)")
        remote = self.remote

        def push() -> set[str]:
            pushed = self.history.push(remote, self.branch, timeout=self.push_timeout)
            return self.history.reachable(pushed, commits)

        return await asyncio.to_thread(push)

    def _lock_held(self) -> str:
        lock = self.history.rules_dir / ".git" / "index.lock"
        try:
            age = f"{time.time() - lock.stat().st_mtime:.0f} s old"
        except FileNotFoundError:
            age = "gone now"
        return (
            f"git is locked: {lock} exists ({age}). Another git process holds it, or one stopped without removing"
            f" it; Auto-Train removes it once it is {STALE_LOCK_SECONDS:.0f} s old and commits this change with"
            " the next change of the file (or at the next start)"
        )

    def _clear_stale_lock(self) -> bool:
        """A git process that died leaves .git/index.lock behind, and every later commit fails. A commit takes
        milliseconds: a lock older than STALE_LOCK_SECONDS belongs to no live process, and is removed."""
        lock = self.history.rules_dir / ".git" / "index.lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return False
        if age < STALE_LOCK_SECONDS:
            return False
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        log.warning("removed a stale git lock (%s, %.0f s old) left by a git process that stopped", lock, age)
        return True
