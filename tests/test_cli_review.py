"""The review flow from a terminal: `autotrain feedback|rules list|show`, `approve`, `edit`, `reject`, `deploy`,
`promote`, `rollback`, each run as a subprocess against one `autotrain serve` subprocess (a real SQLite file and
rule files in its folder). What matters is checked in the human output, `--json` against the API's own answer,
and every exit code: 0 done, 2 usage, 3 not found, 4 refused, 5 permission denied, 6 invalid input, 7 unreachable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    HEIGHT_FEEDBACK,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    SHIPPED_RULES,
    WEATHER_FEEDBACK,
    read_rule_lines,
)
from tests.serve_process import free_port, serving, subprocess_environment

_serial = count(1)


@dataclass
class Server:
    base_url: str
    workdir: Path
    rules_dir: Path
    env: dict[str, str]
    admin: httpx.Client  # the REST API as an admin, to set up and to compare with
    reporter_token: str

    def cli(
        self, *args: str, cwd: Path | None = None, token: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """`autotrain …` in the server's folder (or `cwd`), pointed at the server by AUTOTRAIN_URL."""
        environment = self.env | {"AUTOTRAIN_URL": self.base_url} | env
        if token is not None:
            environment["AUTOTRAIN_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", *args],
            cwd=cwd or self.workdir,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def rule(self, rule_id: str) -> dict[str, Any]:
        answer = self.admin.get(f"/autotrain/rules/{rule_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def new_rule(self, feedback: dict[str, str] | None = None) -> dict[str, Any]:
        """A pending rule of its own: a complaint no other test sends (the offline generator drafts from it)."""
        if feedback is None:
            n = next(_serial)
            feedback = {
                "query": f"tư vấn giúp mình đơn hàng số {n}",
                "ai_response": "Dạ vâng ạ",
                "feedback_text": f"Bot trả lời quá dài dòng, lạc đề lần thứ {n} về mẫu váy số {n}",
                "feedback_type": "bug",
            }
        created = self.admin.post("/autotrain/feedback", json=feedback)
        assert created.status_code == 201, created.text
        rule = self.admin.post(f"/autotrain/generate/{created.json()['feedback_id']}")
        assert rule.status_code == 200, rule.text
        assert rule.json()["status"] == "pending"
        return rule.json()


def mint(workdir: Path, env: dict[str, str], role: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "token", "--role", role],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("served")
    rules_dir = workdir / "rules"
    shutil.copytree(SHIPPED_RULES, rules_dir, ignore=shutil.ignore_patterns(".autotrain"))
    env = subprocess_environment(
        AUTOTRAIN_RULES_DIR=str(rules_dir),
        AUTOTRAIN_CLUSTER_THRESHOLD="",  # every test's complaint gets a rule of its own
        AUTOTRAIN_SCHEDULER="false",
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="1000/hour",  # one admin submits every test's feedback
        AUTOTRAIN_TOKEN_RATE_LIMIT="10000/hour",
    )
    with serving(workdir, env) as (base_url, _):
        admin = mint(workdir, env, "admin")
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as http:
            yield Server(base_url, workdir, rules_dir, env, http, mint(workdir, env, "reporter"))


def assert_clean_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit `code`, one line on stderr naming `words`, no stack trace."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def endpoint_exists(server: Server, method: str, path: str) -> bool:
    return method in server.admin.get("/openapi.json").json()["paths"].get(path, {})


def needs_edit_endpoint(server: Server) -> None:
    if not endpoint_exists(server, "patch", "/autotrain/rules/{rule_id}"):
        pytest.skip("PATCH /autotrain/rules/{rule_id} is not in bot/api.py yet")


def needs_flag_acknowledgement(server: Server) -> None:
    approve = server.admin.get("/openapi.json").json()["paths"]["/autotrain/rules/{rule_id}/approve"]["post"]
    if "requestBody" not in approve:
        pytest.skip('the approve body {"acknowledge_flags": true} is not in bot/api.py yet')


# ---------------------------------------------------------------------- reading: lists and records


def test_feedback_list_pages_with_the_cursor_it_prints(server: Server) -> None:
    first, second = server.new_rule(), server.new_rule()
    listed = server.cli("feedback", "list", "--limit", "1")
    assert listed.returncode == 0, listed.stderr
    newest = server.admin.get("/autotrain/feedback", params={"limit": 1}).json()
    assert newest["items"][0]["feedback_id"] == second["feedback_id"]
    assert second["feedback_id"] in listed.stdout and "processed" in listed.stdout
    assert second["rule_id"] in listed.stdout  # the rule each feedback got
    assert first["feedback_id"] not in listed.stdout
    [next_page] = [line for line in listed.stdout.splitlines() if "next page:" in line]
    command = next_page.split("next page: ", 1)[1].split()
    assert command[:3] == ["autotrain", "feedback", "list"] and "--cursor" in command
    following = server.cli(*command[1:])
    assert following.returncode == 0, following.stderr
    assert first["feedback_id"] in following.stdout and second["feedback_id"] not in following.stdout

    as_json = server.cli("feedback", "list", "--limit", "1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == newest


def test_feedback_show(server: Server) -> None:
    rule = server.new_rule()
    shown = server.cli("feedback", "show", rule["feedback_id"])
    assert shown.returncode == 0, shown.stderr
    feedback = server.admin.get(f"/autotrain/feedback/{rule['feedback_id']}").json()
    for part in (
        feedback["feedback_id"],
        feedback["status"],
        feedback["query"],
        feedback["feedback_text"],
        rule["rule_id"],
    ):
        assert part in shown.stdout
    as_json = server.cli("feedback", "show", rule["feedback_id"], "--json")
    assert json.loads(as_json.stdout) == feedback

    missing = server.cli("feedback", "show", "FB-999999")
    assert_clean_error(missing, 3, "FB-999999")


def test_rules_list_filters_by_status(server: Server) -> None:
    pending = server.new_rule()
    rejected = server.new_rule()
    assert server.admin.post(f"/autotrain/rules/{rejected['rule_id']}/reject").status_code == 200
    listed = server.cli("rules", "list", "--status", "pending")
    assert listed.returncode == 0, listed.stderr
    assert pending["rule_id"] in listed.stdout and rejected["rule_id"] not in listed.stdout
    assert "with status pending" in listed.stdout

    as_json = server.cli("rules", "list", "--status", "rejected", "--limit", "200", "--json")
    api = server.admin.get("/autotrain/rules", params={"status": "rejected", "limit": 200}).json()
    assert json.loads(as_json.stdout) == api
    assert rejected["rule_id"] in [item["rule_id"] for item in api["items"]]

    unknown_status = server.cli("rules", "list", "--status", "bogus")
    assert unknown_status.returncode == 2  # argparse: the choices are listed
    assert "pending" in unknown_status.stderr


def test_rules_show_names_the_change_and_its_warnings(server: Server) -> None:
    rule = server.new_rule()
    shown = server.cli("rules", "show", rule["rule_id"])
    assert shown.returncode == 0, shown.stderr
    head = shown.stdout.splitlines()[0]
    assert rule["rule_id"] in head and "pending" in head and rule["module_name"] in head
    assert f"+ {rule['new_rule']}" in shown.stdout
    assert f"confidence {rule['confidence']:.2f}" in shown.stdout
    assert rule["warnings"], "a draft carries warnings (low confidence at least)"
    for warning in rule["warnings"]:
        assert warning in shown.stdout
    as_json = server.cli("rules", "show", rule["rule_id"], "--json")
    assert json.loads(as_json.stdout) == server.rule(rule["rule_id"])

    assert_clean_error(server.cli("rules", "show", "RUL-999999"), 3, "RUL-999999")


# ---------------------------------------------------------------------- the review flow


def test_approve_canary_promote_rollback_of_the_weather_rule(server: Server) -> None:
    rule = server.new_rule(WEATHER_FEEDBACK)
    rule_id = rule["rule_id"]
    assert rule["old_rule"] == OLD_WEATHER_RULE and rule["new_rule"] == NEW_WEATHER_RULE

    shown = server.cli("rules", "show", rule_id)
    assert f"− {OLD_WEATHER_RULE}" in shown.stdout and f"+ {NEW_WEATHER_RULE}" in shown.stdout

    approved = server.cli("approve", rule_id)  # no token: the local admin
    assert approved.returncode == 0, approved.stderr
    assert f"{rule_id} approved by cli-admin" in approved.stdout
    assert server.rule(rule_id)["approved_by"] == "cli-admin"

    again = server.cli("approve", rule_id)
    assert_clean_error(again, 4, rule_id, "transition_refused")
    assert server.rule(rule_id)["status"] == "approved"

    canary = server.cli("deploy", rule_id, "--canary", "20")
    assert canary.returncode == 0, canary.stderr
    assert "canary, 20 % of users" in canary.stdout and "by cli-admin" in canary.stdout
    entries = json.loads((server.rules_dir / "fashion_rules.json").read_text(encoding="utf-8"))["rules"]
    [new_entry] = [entry for entry in entries if entry["rule"] == NEW_WEATHER_RULE]
    assert new_entry["rollout_percent"] == 20
    assert OLD_WEATHER_RULE in read_rule_lines(server.rules_dir)  # kept for the other 80 %

    promoted = server.cli("promote", rule_id, "--json")
    assert promoted.returncode == 0, promoted.stderr
    body = json.loads(promoted.stdout)
    assert body["deployment"]["outcome"] == "promoted" and body["deployment"]["deployed_by"] == "cli-admin"
    lines = read_rule_lines(server.rules_dir)
    assert NEW_WEATHER_RULE in lines and OLD_WEATHER_RULE not in lines

    assert_clean_error(server.cli("promote", rule_id), 4, rule_id)  # not a canary any more

    rolled_back = server.cli("rollback", rule_id)
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert f"{rule_id} rolled back by cli-admin" in rolled_back.stdout
    lines = read_rule_lines(server.rules_dir)
    assert OLD_WEATHER_RULE in lines and NEW_WEATHER_RULE not in lines
    after = server.rule(rule_id)
    assert after["status"] == "rolled_back" and after["rolled_back_by"] == "cli-admin"
    assert "rolled back by cli-admin" in server.cli("rules", "show", rule_id).stdout

    assert_clean_error(server.cli("rollback", rule_id), 4, rule_id)
    assert_clean_error(server.cli("deploy", "RUL-999999"), 3, "RUL-999999")


def test_canary_without_a_percent_takes_the_canary_setting(server: Server) -> None:
    rule = server.new_rule(HEIGHT_FEEDBACK)
    assert rule["module_name"] == "fashion_rules.json"
    assert server.cli("approve", rule["rule_id"]).returncode == 0
    assert_clean_error(server.cli("deploy", rule["rule_id"], "--canary", "0"), 6, "rollout_percent")
    assert server.rule(rule["rule_id"])["status"] == "approved"
    canary = server.cli("deploy", rule["rule_id"], "--canary", "--json", AUTOTRAIN_CANARY_PERCENT="15")
    assert canary.returncode == 0, canary.stderr
    assert json.loads(canary.stdout)["rollout_percent"] == 15 == server.rule(rule["rule_id"])["rollout_percent"]
    assert server.cli("rollback", rule["rule_id"]).returncode == 0


def test_deploy_json_is_the_apis_answer(server: Server) -> None:
    rule = server.new_rule()
    assert server.cli("approve", rule["rule_id"]).returncode == 0
    deployed = server.cli("deploy", rule["rule_id"], "--json")
    assert deployed.returncode == 0, deployed.stderr
    body = json.loads(deployed.stdout)
    assert body["status"] == "deployed" and body["deployment"]["rule_id"] == rule["rule_id"]
    stored = server.rule(rule["rule_id"])
    assert {key: stored[key] for key in ("status", "deployed_by", "deployed_at", "rollout_percent")} == {
        key: body[key] for key in ("status", "deployed_by", "deployed_at", "rollout_percent")
    }
    listed = server.admin.get("/autotrain/deployments", params={"rule_id": rule["rule_id"]}).json()["items"]
    assert [d["deployment_id"] for d in listed] == [body["deployment"]["deployment_id"]]
    assert rule["new_rule"] in read_rule_lines(server.rules_dir, rule["module_name"])


def test_a_canary_of_a_text_file_is_refused_as_invalid(server: Server) -> None:
    rule = server.new_rule()
    assert not rule["module_name"].endswith(".json")  # drafts about long answers go to prompt_v2.txt
    assert server.cli("approve", rule["rule_id"]).returncode == 0
    before = (server.rules_dir / rule["module_name"]).read_bytes()
    refused = server.cli("deploy", rule["rule_id"], "--canary")
    assert_clean_error(refused, 6, "canary_unsupported")
    assert (server.rules_dir / rule["module_name"]).read_bytes() == before
    assert server.rule(rule["rule_id"])["status"] == "approved"


def test_reject_with_a_reason(server: Server) -> None:
    rule = server.new_rule()
    rejected = server.cli("reject", rule["rule_id"], "--reason", "quá chung chung")
    assert rejected.returncode == 0, rejected.stderr
    assert f"{rule['rule_id']} rejected by cli-admin" in rejected.stdout and "quá chung chung" in rejected.stdout
    stored = server.rule(rule["rule_id"])
    assert stored["status"] == "rejected" and stored["reject_reason"] == "quá chung chung"
    assert_clean_error(server.cli("reject", rule["rule_id"]), 4, rule["rule_id"])
    assert_clean_error(server.cli("approve", rule["rule_id"]), 4, rule["rule_id"])


def test_invalid_input_is_exit_6_and_changes_nothing(server: Server) -> None:
    rule = server.new_rule()
    assert_clean_error(server.cli("reject", rule["rule_id"], "--reason", "x" * 501), 6, "invalid_input")
    assert server.rule(rule["rule_id"])["status"] == "pending"
    assert_clean_error(server.cli("rules", "list", "--limit", "0"), 6, "limit")
    assert_clean_error(server.cli("feedback", "list", "--cursor", "not-a-cursor"), 6, "invalid_input")


def test_errors_with_json_print_the_apis_error_body(server: Server) -> None:
    missing = server.cli("rules", "show", "RUL-999999", "--json")
    assert missing.returncode == 3
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"


def test_deploy_with_override_evaluation(server: Server) -> None:
    rule = server.new_rule()
    assert server.cli("approve", rule["rule_id"]).returncode == 0
    deployed = server.cli("deploy", rule["rule_id"], "--override-evaluation", "--json")
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["status"] == "deployed"


def test_edit_then_approve(server: Server) -> None:
    needs_edit_endpoint(server)
    rule = server.new_rule()
    line = "- Trả lời ngắn gọn, tối đa 3 câu, đúng trọng tâm câu hỏi"
    edited = server.cli("edit", rule["rule_id"], "--new-rule", line, "--module", "prompt_v2.txt")
    assert edited.returncode == 0, edited.stderr
    assert f"{rule['rule_id']} edited by cli-admin" in edited.stdout and f"+ {line}" in edited.stdout
    stored = server.rule(rule["rule_id"])
    assert stored["new_rule"] == line and stored["module_name"] == "prompt_v2.txt"
    assert stored["edited_by"] == "cli-admin" and stored["status"] == "pending"

    as_json = server.cli("edit", rule["rule_id"], "--new-rule", line + ".", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["new_rule"] == line + "."

    assert_clean_error(server.cli("edit", rule["rule_id"], "--new-rule", line, "--module", "../etc/passwd"), 6)
    no_such_line = server.cli("edit", rule["rule_id"], "--new-rule", line, "--old-rule", "- không có dòng này")
    assert_clean_error(no_such_line, 6, "invalid_input")
    appending = server.cli("edit", rule["rule_id"], "--new-rule", line + ".", "--old-rule", "")
    assert appending.returncode == 0, appending.stderr
    assert "replaces no line" in appending.stdout and server.rule(rule["rule_id"])["old_rule"] is None
    assert_clean_error(server.cli("edit", "RUL-999999", "--new-rule", line), 3, "RUL-999999")
    assert server.cli("approve", rule["rule_id"]).returncode == 0
    assert server.cli("deploy", rule["rule_id"]).returncode == 0
    assert_clean_error(server.cli("edit", rule["rule_id"], "--new-rule", line), 4, rule["rule_id"])
    assert server.rule(rule["rule_id"])["new_rule"] == line + "."


def test_a_flagged_rule_needs_acknowledge_flags(server: Server) -> None:
    needs_edit_endpoint(server)
    needs_flag_acknowledgement(server)
    rule = server.new_rule()
    linked = "- Xem bảng size tại https://example.com/size trước khi tư vấn"
    edited = server.cli("edit", rule["rule_id"], "--new-rule", linked)
    assert edited.returncode == 0, edited.stderr
    assert "flags: contains_url" in edited.stdout and "--acknowledge-flags" in edited.stdout

    refused = server.cli("approve", rule["rule_id"])
    assert_clean_error(refused, 4, "flags_not_acknowledged", "--acknowledge-flags")
    assert server.rule(rule["rule_id"])["status"] == "pending"
    approved = server.cli("approve", rule["rule_id"], "--acknowledge-flags")
    assert approved.returncode == 0, approved.stderr
    assert server.rule(rule["rule_id"])["status"] == "approved"


# ---------------------------------------------------------------------- identity and reachability


def test_a_reporter_token_reads_but_is_refused_review(server: Server) -> None:
    rule = server.new_rule()
    listed = server.cli("rules", "list", token=server.reporter_token)
    assert listed.returncode == 0, listed.stderr
    assert rule["rule_id"] in listed.stdout
    for command in (["approve"], ["reject"], ["deploy"], ["rollback"], ["promote"]):
        refused = server.cli(*command, rule["rule_id"], token=server.reporter_token)
        assert_clean_error(refused, 5, "forbidden")
    by_option = server.cli("approve", rule["rule_id"], "--token", server.reporter_token)
    assert_clean_error(by_option, 5, "forbidden")
    assert server.rule(rule["rule_id"])["status"] == "pending"

    # --token wins over AUTOTRAIN_TOKEN, and neither falls back to the local admin
    assert server.cli("approve", rule["rule_id"], "--token", "not-a-jwt", token=server.reporter_token).returncode == 5
    assert server.rule(rule["rule_id"])["status"] == "pending"


def test_an_admin_token_is_the_actor(server: Server) -> None:
    rule = server.new_rule()
    ops = subprocess.run(
        [sys.executable, "-m", "bot.cli", "token", "--sub", "ops-lan"],
        cwd=server.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    approved = server.cli("approve", rule["rule_id"], token=ops)
    assert approved.returncode == 0, approved.stderr
    assert "approved by ops-lan" in approved.stdout
    assert server.rule(rule["rule_id"])["approved_by"] == "ops-lan"


def test_no_token_and_no_secret_here_is_denied(server: Server, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = server.cli("rules", "list", cwd=elsewhere)
    assert_clean_error(done, 5, "--token", "AUTOTRAIN_JWT_SECRET", str(elsewhere / "autotrain.db.jwt-secret"))
    assert list(elsewhere.iterdir()) == []  # no secret, no database made

    # the server's database named from elsewhere: the local admin works there too
    database = f"sqlite:///{server.workdir / 'autotrain.db'}"
    assert server.cli("rules", "list", cwd=elsewhere, AUTOTRAIN_DATABASE_URL=database).returncode == 0


def test_a_server_that_is_not_running(server: Server) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = server.cli("rules", "list", "--url", url)
    assert_clean_error(done, 7, url, "autotrain serve", "--url")
    by_env = server.cli("approve", "RUL-1001", token=server.reporter_token, AUTOTRAIN_URL=url)
    assert_clean_error(by_env, 7, url)


def test_help_documents_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "approve", "--help"],
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for line in ("3  not found", "4  refused", "5  permission denied", "6  invalid input", "7  server unreachable"):
        assert line in done.stdout
    assert "cli-admin" in done.stdout and "AUTOTRAIN_URL" in done.stdout
