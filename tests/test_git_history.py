"""The git history adapter against the real git binary, in temp folders: its own repository, a rules folder
inside a larger repository, and a user whose git config and environment try to interfere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from bot.git_history import Commit, GitHistoryError, GitRuleHistory
from tests.conftest import NEW_WEATHER_RULE, OLD_WEATHER_RULE, SHIPPED_RULES

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the git binary is not installed")

RULES = "fashion_rules.json"
DEPLOY_MESSAGE = "Deploy RUL-1001 (FB-1001): Khi trời nóng thì không gợi ý áo khoác dày"
OLD_LINE = f'    {{"rule": "{OLD_WEATHER_RULE}"}},'
NEW_LINE = f'    {{"rule": "{NEW_WEATHER_RULE}"}},'


@pytest.fixture(autouse=True)
def neutral_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The machine's own git config never reaches these tests (each test that wants a hostile one sets it)."""
    empty = tmp_path / "empty-global-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Plain git as a user would run it (identity given, so it works without a global config)."""
    return subprocess.run(
        ["git", "-c", "user.name=Someone", "-c", "user.email=someone@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=check,
    )


def rev_count(cwd: Path) -> int:
    return int(git(cwd, "rev-list", "--count", "HEAD").stdout)


def status(cwd: Path) -> list[str]:
    return git(cwd, "status", "--porcelain=v1", "--untracked-files=all").stdout.splitlines()


def copy_rules(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for source in SHIPPED_RULES.iterdir():
        if source.is_file():
            shutil.copy2(source, folder / source.name)
    state = folder / ".autotrain"
    (state / "locks").mkdir(parents=True)
    (state / "locks" / f"{RULES}.lock").write_text("")
    (state / "backups" / RULES).mkdir(parents=True)
    (state / "backups" / RULES / "20250101T000000-deploy.bak").write_bytes((folder / RULES).read_bytes())
    return folder


def change_weather_rule(folder: Path) -> str:
    path = folder / RULES
    text = path.read_text(encoding="utf-8")
    assert OLD_LINE in text.splitlines()
    changed = text.replace(OLD_WEATHER_RULE, NEW_WEATHER_RULE)
    path.write_text(changed, encoding="utf-8")
    return changed


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    lines = diff.splitlines()
    removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def deploy(history: GitRuleHistory) -> Commit | None:
    return history.commit(RULES, author_name="U123", author_email="u123@slack", message=DEPLOY_MESSAGE)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return copy_rules(tmp_path / "rules")


def test_ensure_repo_creates_the_repository_once(rules: Path) -> None:
    history = GitRuleHistory(rules)

    assert history.ensure_repo() is True

    assert (rules / ".git").is_dir()
    assert (rules / ".gitignore").read_text().splitlines() == [".autotrain/", "*.tmp"]
    assert rev_count(rules) == 1
    tracked = sorted(git(rules, "ls-files").stdout.splitlines())
    assert tracked == [".gitignore", RULES, "prompt_v2.txt", "stylist_guidelines.md"]
    log = git(rules, "log", "-1", "--format=%an <%ae>|%cn <%ce>").stdout.strip()
    assert log == "Auto-Train <autotrain@localhost>|Auto-Train <autotrain@localhost>"
    assert status(rules) == []  # .autotrain/ is ignored, everything else committed
    assert [c.files for c in history.history(RULES)] == [
        (".gitignore", RULES, "prompt_v2.txt", "stylist_guidelines.md")
    ]
    assert history.show(history.history(RULES)[0].sha, RULES) == (rules / RULES).read_text(encoding="utf-8")

    assert history.ensure_repo() is False
    assert rev_count(rules) == 1


def test_ensure_repo_keeps_an_existing_gitignore(rules: Path) -> None:
    (rules / ".gitignore").write_text("*.swp")
    assert GitRuleHistory(rules).ensure_repo() is True
    assert (rules / ".gitignore").read_text().splitlines() == ["*.swp", ".autotrain/", "*.tmp"]


def test_a_deploy_is_a_commit_by_the_admin_with_exactly_the_change(rules: Path) -> None:
    history = GitRuleHistory(rules)
    history.ensure_repo()
    before = (rules / RULES).read_text(encoding="utf-8")
    after = change_weather_rule(rules)

    made = deploy(history)

    assert made is not None
    newest = history.history(RULES)[0]
    assert newest == made
    assert (newest.author_name, newest.author_email) == ("U123", "u123@slack")
    assert newest.message == DEPLOY_MESSAGE
    assert newest.files == (RULES,)
    assert len(newest.sha) == 40 and newest.short == newest.sha[:10]
    assert isinstance(newest.at, datetime) and newest.at.utcoffset() is not None
    assert abs((datetime.now(newest.at.tzinfo) - newest.at).total_seconds()) < 120
    committer = git(rules, "log", "-1", "--format=%cn <%ce>").stdout.strip()
    assert committer == "Auto-Train <autotrain@localhost>"
    assert rev_count(rules) == 2

    assert changed_lines(history.diff(newest.sha, RULES)) == ([OLD_LINE], [NEW_LINE])
    assert changed_lines(history.diff(newest.sha)) == ([OLD_LINE], [NEW_LINE])
    assert f"--- a/{RULES}" in history.diff(newest.sha)
    assert history.diff(newest.short, "prompt_v2.txt") == ""

    assert history.show(newest.sha, RULES) == after
    assert history.show(newest.short, RULES) == after
    assert history.show(history.history(RULES)[1].sha, RULES) == before
    assert [c.sha for c in history.history(RULES, limit=1)] == [newest.sha]
    assert len(history.history(RULES)) == 2
    assert history.history("prompt_v2.txt")[0].sha != newest.sha  # only commits that touch the file


def test_a_rollback_restores_the_old_content_as_a_new_commit(rules: Path) -> None:
    history = GitRuleHistory(rules)
    history.ensure_repo()
    before = (rules / RULES).read_text(encoding="utf-8")
    change_weather_rule(rules)
    deployed = deploy(history)
    assert deployed is not None

    (rules / RULES).write_text(before, encoding="utf-8")
    rolled_back = history.commit(
        RULES, author_name="U_ADMIN", author_email="admin@slack", message="Rollback RUL-1001 (FB-1001)"
    )

    assert rolled_back is not None
    assert [c.sha for c in history.history(RULES)][:2] == [rolled_back.sha, deployed.sha]
    assert changed_lines(history.diff(rolled_back.sha, RULES)) == ([NEW_LINE], [OLD_LINE])
    assert history.show(rolled_back.sha, RULES) == before
    assert rolled_back.author_name == "U_ADMIN"


def test_no_change_means_no_commit(rules: Path) -> None:
    history = GitRuleHistory(rules)
    history.ensure_repo()
    head = git(rules, "rev-parse", "HEAD").stdout

    assert deploy(history) is None
    assert git(rules, "rev-parse", "HEAD").stdout == head
    assert len(history.history(RULES)) == 1


def test_other_changes_in_the_folder_are_not_committed(rules: Path) -> None:
    history = GitRuleHistory(rules)
    history.ensure_repo()
    (rules / "prompt_v2.txt").write_text("staged edit\n", encoding="utf-8")
    git(rules, "add", "prompt_v2.txt")
    with (rules / "stylist_guidelines.md").open("a", encoding="utf-8") as handle:
        handle.write("\nunstaged edit\n")
    (rules / "notes.txt").write_text("untracked\n")
    (rules / "half-written.json.tmp").write_text("{")
    (rules / ".autotrain" / "backups" / RULES / "20250102T000000-deploy.bak").write_text("x")
    others_before = status(rules)
    staged_before = git(rules, "diff", "--cached").stdout
    change_weather_rule(rules)

    made = deploy(history)

    assert made is not None and made.files == (RULES,)
    assert git(rules, "show", "--format=", "--name-only", "HEAD").stdout.split() == [RULES]
    assert status(rules) == others_before
    assert status(rules) == ["M  prompt_v2.txt", " M stylist_guidelines.md", "?? notes.txt"]
    assert git(rules, "diff", "--cached").stdout == staged_before


def test_files_under_autotrain_are_never_committed(rules: Path) -> None:
    history = GitRuleHistory(rules)
    history.ensure_repo()
    (rules / ".autotrain" / "locks" / f"{RULES}.lock").write_text("pid 1")
    change_weather_rule(rules)
    deploy(history)

    every_path = git(rules, "log", "--all", "--format=", "--name-only").stdout.split()
    assert every_path and not [p for p in every_path if p.startswith(".autotrain")]
    assert not [p for p in git(rules, "ls-files").stdout.split() if p.startswith(".autotrain")]
    with pytest.raises(ValueError):
        history.commit(".autotrain", author_name="U123", author_email="u123@slack", message="x")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A larger repository (like a clone of this project) whose `config/` is the rules folder."""
    root = tmp_path / "project"
    root.mkdir()
    copy_rules(root / "config")
    (root / "README.md").write_text("readme\n")
    (root / "app.py").write_text("print('v1')\n")
    (root / ".gitignore").write_text("config/.autotrain/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    return root


def test_inside_a_larger_repository_only_the_rule_file_is_committed(project: Path) -> None:
    rules = project / "config"
    history = GitRuleHistory(rules)
    assert history.ensure_repo() is False
    assert not (rules / ".git").exists()
    assert not (rules / ".gitignore").exists()
    assert rev_count(project) == 1

    (project / "README.md").write_text("readme, staged edit\n")
    git(project, "add", "README.md")
    (project / "app.py").write_text("print('v2, unstaged')\n")
    (project / "new_module.py").write_text("")
    (rules / "prompt_v2.txt").write_text("staged prompt\n")
    git(project, "add", "config/prompt_v2.txt")
    (rules / "stylist_guidelines.md").write_text("unstaged guidelines\n")
    before = status(project)
    staged_before = git(project, "diff", "--cached").stdout
    unstaged_before = git(project, "diff").stdout
    change_weather_rule(rules)

    made = deploy(history)

    assert made is not None
    assert made.files == (RULES,)
    assert (made.author_name, made.author_email, made.message) == ("U123", "u123@slack", DEPLOY_MESSAGE)
    assert rev_count(project) == 2
    assert git(project, "show", "--format=", "--name-only", "HEAD").stdout.split() == ["config/fashion_rules.json"]
    assert status(project) == before
    assert git(project, "diff", "--cached").stdout == staged_before
    assert git(project, "diff").stdout == unstaged_before
    assert changed_lines(history.diff(made.sha, RULES)) == ([OLD_LINE], [NEW_LINE])
    assert f"--- a/{RULES}" in history.diff(made.sha)  # paths relative to the rules folder
    assert history.show(made.sha, RULES) == (rules / RULES).read_text(encoding="utf-8")
    assert [c.sha for c in history.history(RULES)] == [made.sha, git(project, "rev-parse", "HEAD~1").stdout.strip()]
    assert deploy(history) is None and rev_count(project) == 2


def test_a_rule_file_new_to_the_larger_repository_is_added(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "README.md").write_text("readme\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    rules = copy_rules(root / "config")
    history = GitRuleHistory(rules)

    assert history.ensure_repo() is False
    made = deploy(history)

    assert made is not None and made.files == (RULES,)
    assert git(root, "show", "--format=", "--name-only", "HEAD").stdout.split() == ["config/fashion_rules.json"]
    assert "?? config/prompt_v2.txt" in status(root)  # the other rule files were left alone
    assert not [line for line in status(root) if ".autotrain" in line and not line.startswith("??")]


def test_a_folder_the_larger_repository_ignores_gets_its_own(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / ".gitignore").write_text("data/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    rules = copy_rules(root / "data" / "rules")
    history = GitRuleHistory(rules)

    assert history.ensure_repo() is True
    assert (rules / ".git").is_dir()
    assert rev_count(root) == 1 and rev_count(rules) == 1
    change_weather_rule(rules)
    assert deploy(history) is not None
    assert rev_count(rules) == 2 and rev_count(root) == 1


def test_a_users_git_config_hooks_and_environment_do_not_interfere(
    rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    marker = tmp_path / "post-commit-ran"
    (hooks / "pre-commit").write_text("#!/bin/sh\necho 'pre-commit hook refuses' >&2\nexit 1\n")
    (hooks / "commit-msg").write_text("#!/bin/sh\nexit 1\n")
    (hooks / "post-commit").write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    for hook in hooks.iterdir():
        hook.chmod(0o755)
    hostile = tmp_path / "hostile-gitconfig"
    hostile.write_text(
        f"[core]\n\thooksPath = {hooks}\n"
        "[commit]\n\tgpgsign = true\n\tcleanup = scissors\n"
        "[user]\n\tname = Global User\n\temail = global@example.com\n\tsigningkey = DOES-NOT-EXIST\n"
        "[diff]\n\tnoprefix = true\n\trelative = true\n"
        "[color]\n\tui = always\n"
        "[log]\n\tfollow = true\n\tshowSignature = true\n"
        "[i18n]\n\tlogOutputEncoding = ISO-8859-1\n"
        "[init]\n\tdefaultBranch = trunk\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(hostile))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Intruder")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "intruder@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Intruder")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere.git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "elsewhere.index"))
    history = GitRuleHistory(rules)

    assert history.ensure_repo() is True
    change_weather_rule(rules)
    made = deploy(history)

    assert made is not None
    assert not marker.exists()
    assert not (tmp_path / "elsewhere.git").exists()
    assert (made.author_name, made.author_email, made.message) == ("U123", "u123@slack", DEPLOY_MESSAGE)
    assert changed_lines(history.diff(made.sha, RULES)) == ([OLD_LINE], [NEW_LINE])
    assert f"--- a/{RULES}" in history.diff(made.sha, RULES)
    assert "\x1b[" not in history.diff(made.sha, RULES)
    assert [c.author_name for c in history.history(RULES)] == ["U123", "Auto-Train"]

    # the control: the same config does stop a plain commit, so the hooks above were live
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    plain_env = {**os.environ}
    (rules / "prompt_v2.txt").write_text("edited\n")
    plain = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "commit", "-am", "plain"],
        cwd=rules,
        env=plain_env,
        capture_output=True,
        text=True,
    )
    assert plain.returncode != 0
    assert "pre-commit hook refuses" in plain.stderr
    assert rev_count(rules) == 2
    assert git(rules, "symbolic-ref", "--short", "HEAD").stdout.strip() == "main"

    # and the commit our adapter makes out of that same edit goes through
    assert history.commit("prompt_v2.txt", author_name="U9", author_email="u9@slack", message="Edit prompt") is not None
    assert not marker.exists()


def test_concurrent_commits_from_threads_all_land(rules: Path) -> None:
    GitRuleHistory(rules).ensure_repo()
    names = [f"module_{i}.txt" for i in range(8)]
    for name in names:
        (rules / name).write_text(f"{name}\n")

    def commit_one(name: str) -> Commit | None:
        # a separate instance per thread, as separate requests would have
        return GitRuleHistory(rules).commit(name, author_name="U123", author_email="u123@slack", message=name)

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(commit_one, names))

    assert all(commit is not None for commit in made)
    assert [commit.files for commit in made if commit] == [(name,) for name in names]
    assert rev_count(rules) == 1 + len(names)
    assert status(rules) == []


@pytest.mark.parametrize(
    "name", ["../x", "..", ".", "", "sub/fashion_rules.json", "/etc/passwd", "a\\b", ".git", ".gitignore", "a\nb"]
)
def test_names_that_are_not_plain_file_names_are_refused(rules: Path, name: str) -> None:
    history = GitRuleHistory(rules)
    history.ensure_repo()
    head = git(rules, "rev-parse", "HEAD").stdout
    with pytest.raises(ValueError):
        history.commit(name, author_name="U123", author_email="u123@slack", message="x")
    with pytest.raises(ValueError):
        history.history(name)
    with pytest.raises(ValueError):
        history.show(head.strip(), name)
    with pytest.raises(ValueError):
        history.diff(head.strip(), name)
    assert git(rules, "rev-parse", "HEAD").stdout == head


def test_glob_characters_are_literal(rules: Path) -> None:
    history = GitRuleHistory(rules)
    history.ensure_repo()
    change_weather_rule(rules)
    (rules / "prompt_v2.txt").write_text("changed\n")
    with pytest.raises(FileNotFoundError):
        history.commit("*.json", author_name="U123", author_email="u123@slack", message="x")
    (rules / "*").write_text("a file named star\n")
    made = history.commit("*", author_name="U123", author_email="u123@slack", message="star")
    assert made is not None and made.files == ("*",)
    assert [line for line in status(rules) if RULES in line or "prompt" in line] == [
        f" M {RULES}",
        " M prompt_v2.txt",
    ]


def test_bad_input_and_git_errors(rules: Path) -> None:
    history = GitRuleHistory(rules)
    history.ensure_repo()
    change_weather_rule(rules)
    with pytest.raises(ValueError):
        history.commit(RULES, author_name="Evil <x@y>", author_email="u@slack", message="x")
    with pytest.raises(ValueError):
        history.commit(RULES, author_name="U123", author_email="", message="x")
    with pytest.raises(ValueError):
        history.commit(RULES, author_name="U123", author_email="u@slack", message="   ")
    with pytest.raises(ValueError):
        history.diff("--output=/tmp/x")
    with pytest.raises(ValueError):
        history.history(RULES, limit=0)
    with pytest.raises(FileNotFoundError):
        history.commit("missing.json", author_name="U123", author_email="u@slack", message="x")
    with pytest.raises(GitHistoryError, match="rev-parse"):
        history.show("0123456789abcdef", RULES)
    with pytest.raises(GitHistoryError, match="cat-file"):
        history.show(history.history(RULES)[0].sha, "missing.json")
    assert history.history("missing.json") == []


def test_history_of_a_folder_that_is_not_a_repository_fails_clearly(rules: Path) -> None:
    with pytest.raises(GitHistoryError, match="not a git repository"):
        GitRuleHistory(rules).history(RULES)


def test_instances_starting_together_on_a_fresh_folder_share_one_repository(tmp_path: Path) -> None:
    """Four processes open the history of one fresh folder at once: every one keeps history on, and the
    repository has exactly one initial commit (a `git init` race used to turn history off in one of them)."""
    folder = tmp_path / "fresh"
    shutil.copytree(SHIPPED_RULES, folder, ignore=shutil.ignore_patterns(".autotrain"))
    script = (
        "import sys; from pathlib import Path; from bot.git_history import AsyncGitHistory; "
        "AsyncGitHistory.open(Path(sys.argv[1])); print('history on')"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(folder)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outcomes = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [err.decode() for _, err in outcomes]
    assert all(out.decode().strip() == "history on" for out, _ in outcomes)
    assert rev_count(folder) == 1
    assert git(folder, "log", "-1", "--format=%s").stdout.strip() == "Auto-Train: track the rule files"
    assert status(folder) == []


def test_an_existing_repository_gets_the_ignore_rule(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    shutil.copytree(SHIPPED_RULES, folder, ignore=shutil.ignore_patterns(".autotrain"))
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "our own rules repository")
    history = GitRuleHistory(folder)
    assert history.ensure_repo() is False  # used as it is
    assert {".autotrain/", "*.tmp"} <= set((folder / ".gitignore").read_text().splitlines())
    assert git(folder, "log", "-1", "--format=%s").stdout.strip().startswith("Auto-Train: ignore its working files")
    (folder / ".autotrain").mkdir(exist_ok=True)
    (folder / ".autotrain" / "backup.json").write_text("{}")
    assert status(folder) == []  # Auto-Train's working files never show as changes
    history.ensure_repo()
    assert rev_count(folder) == 2  # a second start adds nothing


async def test_a_rules_folder_inside_another_repository_starts_without_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's own set-up (the config/ of a clone): history is off by design, said in one INFO line."""
    import logging

    from bot.runtime import describe, open_runtime
    from tests.conftest import make_settings

    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    folder = copy_rules(project / "config")
    caplog.set_level(logging.INFO)
    settings = make_settings(tmp_path, folder, git_history=True)
    runtime = await open_runtime(settings)
    try:
        assert runtime.history is None
    finally:
        await runtime.close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    [said] = [line for line in describe(settings) if line.startswith("git history")]  # the start-up log's line
    assert said.startswith("git history: off,") and "inside another git repository" in said
    assert "AUTOTRAIN_RULES_DIR" in said


def test_a_rules_folder_not_created_yet_is_judged_as_it_will_be(tmp_path: Path) -> None:
    """The start-up log is written before the default rules/ is created: it must already say what git history
    will be. Inside a clone that ignores it (the project's .gitignore has /rules/): a repository of its own;
    a folder the clone does not ignore: inside the clone, so no history; no repository around: its own."""
    from bot.git_history import AsyncGitHistory, folder_state
    from bot.runtime import git_description
    from tests.conftest import make_settings

    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q")
    (project / ".gitignore").write_text("/rules/\n")
    git(project, "add", ".gitignore")
    git(project, "commit", "-q", "-m", "ignore rules/")
    assert folder_state(project / "rules") == "none"
    assert folder_state(project / "rules" / "deeper") == "none"
    assert folder_state(project / "other") == "inside"
    assert folder_state(tmp_path / "elsewhere" / "rules") == "none"
    for name, history_on in (("rules", True), ("other", False)):
        settings = make_settings(tmp_path, project / name, git_history=True)
        assert git_description(settings).startswith("git history: on" if history_on else "git history: off")
        assert not (project / name).exists()  # judging it created nothing
    opened = AsyncGitHistory.open(project / "rules")  # and opening agrees: rules/ gets a repository of its own
    assert (project / "rules" / ".git").is_dir() and opened.history.rules_dir == project / "rules"
    assert status(project) == []  # the clone sees nothing: rules/ is ignored
