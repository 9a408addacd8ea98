"""Replay before deploy (issue 14), without Claude: the evaluation is `skipped` and says why, on the card and
in the API; the gate (AUTOTRAIN_REQUIRE_EVALUATION) refuses a rule without a passed replay and lets an admin
override it, audited, over REST and from the card; a contradiction with a deployed line is found offline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from autotrain.evaluation import contradictions
from autotrain.policy import Role
from bot.api import create_app
from tests.conftest import WEATHER_FEEDBACK, bearer, read_rule_lines
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import ADMIN_USER, SlackSimulator, block_texts, ok, slack_settings
from tests.test_slack_actions import new_card, wait_for_ephemerals

ADMIN = bearer()
REPORTER = bearer(Role.REPORTER, "chatbot")


@pytest.fixture
async def server(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> AsyncIterator[SlackSimulator]:
    settings = slack_settings(tmp_path, rules_dir, slack_api, evaluate="auto", require_evaluation=True)
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://autotrain.test") as http:
            yield SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)


async def test_offline_the_evaluation_is_skipped_and_says_why(server: SlackSimulator) -> None:
    rule_id, _ = await new_card(server)
    await server.service.drain()
    rule = (await server.http.get(f"/autotrain/rules/{rule_id}", headers=REPORTER)).json()
    evaluation = rule["evaluation"]
    assert evaluation["status"] == "skipped"
    assert evaluation["summary"].startswith("Not replayed: no chatbot to replay with and no judge")
    assert "ANTHROPIC_API_KEY" in evaluation["summary"]
    full = (await server.http.get(f"/autotrain/rules/{rule_id}/evaluation", headers=REPORTER)).json()
    assert full["detail"] == [] and full["cases"] == 0

    updates = [c for c in server.api.calls_to("chat.update") if ok(c) and rule_id in c.params["text"]]
    assert "🧪 Not replayed: no chatbot to replay with and no judge" in block_texts(updates[-1].params["blocks"])
    assert server.api.violations == []
    # asked again, it is tried again (a skipped replay is not a result to keep), and still says why
    again = await server.http.post(f"/autotrain/rules/{rule_id}/evaluate", headers=ADMIN)
    assert again.status_code == 200 and again.json()["status"] == "skipped"
    assert (await server.http.post(f"/autotrain/rules/{rule_id}/evaluate", headers=REPORTER)).status_code == 403


async def test_the_gate_refuses_and_an_audited_override_passes_over_rest(
    server: SlackSimulator, rules_dir: Path
) -> None:
    rule_id, _ = await new_card(server)
    assert (await server.http.post(f"/autotrain/rules/{rule_id}/approve", headers=ADMIN)).status_code == 200
    before = (rules_dir / "fashion_rules.json").read_bytes()
    refused = await server.http.post(f"/autotrain/rules/{rule_id}/deploy", headers=ADMIN)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "evaluation_required"
    assert "has not passed its replay (skipped)" in refused.json()["error"]["message"]
    assert (rules_dir / "fashion_rules.json").read_bytes() == before  # nothing changed

    forced = await server.http.post(
        f"/autotrain/rules/{rule_id}/deploy", json={"override_evaluation": True}, headers=ADMIN
    )
    assert forced.status_code == 200, forced.text
    audit = await server.store.list_audit(subject_id=rule_id, limit=50, offset=0)
    [refusal] = [e for e in audit.items if e.action == "deploy_refused_evaluation"]
    [override] = [e for e in audit.items if e.action == "evaluation_overridden"]
    assert (refusal.actor, refusal.detail) == ("U_ADMIN", {"evaluation": "skipped"})
    assert (override.actor, override.detail) == ("U_ADMIN", {"evaluation": "skipped"})


async def test_from_the_card_the_deploy_button_gives_way_to_a_confirmed_override(
    server: SlackSimulator, rules_dir: Path
) -> None:
    rule_id, _ = await new_card(server)
    await server.click("rule_approve", rule_id)

    def newest_buttons() -> dict[str, Any]:
        updates = [c for c in server.api.calls_to("chat.update") if ok(c) and rule_id in c.params["text"]]
        return {
            el["action_id"]: el
            for b in (updates[-1].params["blocks"] if updates else [])
            if b["type"] == "actions"
            for el in b["elements"]
        }

    buttons: dict[str, Any] = {}
    for _ in range(250):  # the click's approval runs after its ack; its card update follows (longer under load)
        await server.service.drain()
        if (await server.service.get_rule(rule_id)).status.value == "approved" and "rule_approve" not in (
            buttons := newest_buttons()
        ):
            break
        await asyncio.sleep(0.02)
    assert "rule_deploy" not in buttons and "rule_deploy_canary" not in buttons
    override = buttons["rule_deploy_override"]
    assert override["style"] == "danger" and "without a passed replay" in override["confirm"]["title"]["text"]

    await server.click("rule_deploy_override", rule_id)
    notes = await wait_for_ephemerals(server, ADMIN_USER, 1)
    assert f"{rule_id} deployed to `fashion_rules.json` without a passed replay" in notes[-1]
    audit = await server.store.list_audit(subject_id=rule_id, limit=50, offset=0)
    assert [e.actor for e in audit.items if e.action == "evaluation_overridden"] == [ADMIN_USER]
    rule = await server.service.get_rule(rule_id)
    assert rule.new_rule in read_rule_lines(rules_dir)


def test_a_negated_rule_and_a_plain_one_sharing_their_words_contradict() -> None:
    deployed = ["- Luôn ưu tiên áo khoác/dày", "- Luôn hỏi dịp mặc (đi làm, đi chơi, dự tiệc) trước khi gợi ý"]
    assert contradictions("- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày", deployed) == [deployed[0]]
    assert contradictions("- Khi trời nóng: gợi ý áo thun cotton", deployed) == []
    assert contradictions("- Don't recommend heavy jackets", ["- Always recommend heavy jackets first"]) == [
        "- Always recommend heavy jackets first"
    ]


async def test_a_contradiction_is_a_warning_on_the_rule(server: SlackSimulator) -> None:
    rule_id, _ = await new_card(server, {**WEATHER_FEEDBACK})
    await server.service.drain()
    detail: dict[str, Any] = (await server.http.get(f"/autotrain/rules/{rule_id}", headers=REPORTER)).json()
    # the weather rule replaces "- Luôn ưu tiên áo khoác/dày" itself, so nothing it leaves in the file contradicts it
    assert detail["evaluation"]["conflicts"] == []
    assert "conflicts_with_rule" not in detail["warnings"]


async def test_replays_are_counted_apart_from_generation(server: SlackSimulator) -> None:
    await new_card(server)
    await server.service.drain()
    status = (await server.http.get("/autotrain/status", headers=REPORTER)).json()
    assert status["evaluation"]["runs"] >= 1 and status["evaluation"]["skipped"] == status["evaluation"]["runs"]
    assert status["generation"]["attempts"] == 1  # the replay is not a generation
    metrics = (await server.http.get("/metrics", headers=ADMIN)).text
    assert 'autotrain_evaluations{status="skipped"}' in metrics and "autotrain_evaluation_tokens 0.0" in metrics
