"""The README's default start (issue 16): `autotrain serve` with no settings at all, in a fresh folder, logs no
warning and no error, copies the shipped rule files into its own rules/ once, says so in one line, and says
what the database and the git history are in one line each. Also: a rules folder that is given, or already
there, is used as it is, and a working folder Auto-Train deployed into config/ before keeps using it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from autotrain.settings import Settings
from bot.runtime import describe, open_runtime
from storage.migrations import SCHEMA_VERSION
from tests.conftest import REPO_ROOT, SHIPPED_RULES
from tests.serve_process import serving
from tests.serving_logs import info_lines, problems_in

RULE_FILES = ("fashion_rules.json", "prompt_v2.txt", "stylist_guidelines.md")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="the git binary is not installed")


def no_settings() -> dict[str, str]:
    """The environment of someone who just installed it: none of our settings (not even the tests' own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@needs_git
def test_the_readme_default_start_logs_no_warning_and_says_each_thing_once(tmp_path: Path) -> None:
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    env = no_settings()
    with serving(workdir, env):
        pass
    log = (workdir / "serve.log").read_text(errors="replace")
    assert problems_in(log) == [], log

    said = info_lines(log, "autotrain")
    [seeded] = [line for line in said if line.startswith("rules folder ")]
    assert seeded.startswith(f"rules folder {workdir / 'rules'} created on first start: ")
    assert ", ".join(RULE_FILES) in seeded and str(SHIPPED_RULES) in seeded
    for name in RULE_FILES:
        assert (workdir / "rules" / name).read_bytes() == (SHIPPED_RULES / name).read_bytes()
    described = info_lines(log, "autotrain.api")
    [folder] = [line for line in described if line.startswith("rules folder:")]
    assert folder == f"rules folder: {workdir / 'rules'} (files: {', '.join(RULE_FILES)})"  # nothing "missing"
    [history] = [line for line in described if line.startswith("git history")]
    assert history.startswith("git history: on")
    assert (workdir / "rules" / ".git").is_dir()  # a history of its own
    assert info_lines(log, "storage.sqlite") == [f"database created at schema version {SCHEMA_VERSION}"]
    assert "apscheduler" not in log  # "Adding job tentatively", "Added job", "Scheduler started": gone

    # the second start finds everything in place: nothing copied, nothing migrated, still nothing to warn about
    inode = (workdir / "rules" / "fashion_rules.json").stat().st_ino
    with serving(workdir, env):
        pass
    again = (workdir / "serve.log").read_text(errors="replace")
    assert problems_in(again) == [], again
    assert [line for line in info_lines(again, "autotrain") if line.startswith("rules folder ")] == []
    assert info_lines(again, "storage.sqlite") == []
    assert (workdir / "rules" / "fashion_rules.json").stat().st_ino == inode


@needs_git
def test_a_rules_folder_inside_a_clone_says_in_one_info_line_how_to_get_history(tmp_path: Path) -> None:
    """AUTOTRAIN_RULES_DIR=config in a git checkout: history is off by design, said once, at INFO."""
    project = tmp_path / "project"
    shutil.copytree(SHIPPED_RULES, project / "config")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    env = no_settings()
    env["AUTOTRAIN_RULES_DIR"] = "config"
    with serving(project, env):
        pass
    log = (project / "serve.log").read_text(errors="replace")
    assert problems_in(log) == [], log
    mentions = [line for line in log.splitlines() if "git history" in line]
    assert len(mentions) == 1, mentions
    [line] = [m for m in info_lines(log, "autotrain.api") if m.startswith("git history")]
    assert line.startswith(f"git history: off, {project / 'config'} is inside another git repository")
    assert "AUTOTRAIN_RULES_DIR" in line
    assert not (project / "rules").exists()  # a folder that is given is never filled from the seed


def settings_here(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'autotrain.db'}", git_history=False, **values)


async def test_a_given_rules_folder_is_used_as_it_is(tmp_path: Path) -> None:
    """Only the default is filled from the seed: a folder named in AUTOTRAIN_RULES_DIR that does not exist
    stays empty (each file is created by its first deploy, as before)."""
    settings = settings_here(tmp_path, rules_dir=tmp_path / "elsewhere")
    runtime = await open_runtime(settings)
    await runtime.close()
    assert not (tmp_path / "elsewhere").exists() or list((tmp_path / "elsewhere").iterdir()) == []
    assert not (tmp_path / "rules").exists()


async def test_an_existing_default_rules_folder_is_never_copied_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "prompt_v2.txt").write_text("- our own rule\n", encoding="utf-8")
    caplog.set_level(logging.INFO)
    runtime = await open_runtime(settings_here(tmp_path))
    await runtime.close()
    assert (tmp_path / "rules" / "prompt_v2.txt").read_text(encoding="utf-8") == "- our own rule\n"
    assert not (tmp_path / "rules" / "fashion_rules.json").exists()
    assert [r for r in caplog.records if "created on first start" in r.getMessage()] == []


async def test_a_working_folder_deployed_into_config_before_keeps_it_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrading from the old default (config/): its deploys (config/.autotrain) are not left behind."""
    shutil.copytree(SHIPPED_RULES, tmp_path / "config")
    (tmp_path / "config" / ".autotrain" / "bases").mkdir(parents=True)
    caplog.set_level(logging.INFO)
    settings = settings_here(tmp_path)
    assert settings.rules_dir == Path("config") and settings.rules_dir_is_legacy
    runtime = await open_runtime(settings)
    await runtime.close()
    assert not (tmp_path / "rules").exists()
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "AUTOTRAIN_RULES_DIR=config" in warning.getMessage()
    assert any(line.startswith(f"rules folder: {tmp_path / 'config'}") for line in describe(settings))

    # a fresh working folder with a config/ that Auto-Train never deployed into gets rules/ (a clone)
    shutil.rmtree(tmp_path / "config" / ".autotrain")
    assert settings_here(tmp_path).rules_dir == Path("rules")
