"""PATCH /autotrain/rules/{rule_id}: an admin edits a pending rule over REST, with the edit modal's fields and
the same checks and audit as Slack's edit (PipelineService.edit). An admin's wording carries no confidence
warning; the rule it replaces is found ignoring case and accents, and one that is not in the file is refused
(422, naming the closest line) rather than silently appended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from autotrain.errors import InvalidInput
from autotrain.policy import Actor, Role
from tests.conftest import NEW_WEATHER_RULE, OLD_WEATHER_RULE, WEATHER_FEEDBACK, read_rule_lines
from tests.review_support import ADMIN, REPORTER, audit_of, edit, error_of, pending_rule, rule_now

HOT_RULE = "- Khi trời trên 32 độ: gợi ý áo thun cotton, váy linen"
# no pattern of the offline generator knows it: a draft rule with a low confidence (and its warning)
DRAFT_FEEDBACK = {
    "query": "đi đám cưới buổi tối mặc gì",
    "ai_response": "Bạn thử bộ đầm đen dài này nhé",
    "feedback_text": "AI gợi ý màu đen đi đám cưới, không hợp chút nào",
    "feedback_type": "bug",
}


async def test_an_admin_edits_a_pending_rule_and_it_is_what_deploys(
    app: FastAPI, client: httpx.AsyncClient, rules_dir: Path
) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    assert rule["old_rule"] == OLD_WEATHER_RULE

    response = await edit(client, rule["rule_id"], {"new_rule": HOT_RULE.removeprefix("- ")})
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["new_rule"] == HOT_RULE  # normalised like Slack's edit: "- " added
    assert edited["old_rule"] == OLD_WEATHER_RULE  # omitted: the rule's own
    assert edited["module_name"] == "fashion_rules.json"
    assert (edited["status"], edited["edited_by"]) == ("pending", "U_ADMIN")
    assert edited["edited_at"] is not None
    assert await rule_now(client, rule["rule_id"]) == edited  # answered as the other rule endpoints do

    [entry] = [e for e in await audit_of(app, rule["rule_id"]) if e.action == "rule_edited"]
    assert entry.actor == "U_ADMIN"
    assert entry.detail is not None
    assert entry.detail["before"]["new_rule"] == NEW_WEATHER_RULE
    assert entry.detail["after"]["new_rule"] == HOT_RULE

    assert (await client.post(f"/autotrain/rules/{rule['rule_id']}/approve", headers=ADMIN)).status_code == 200
    assert (await client.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN)).status_code == 200
    lines = read_rule_lines(rules_dir)
    assert HOT_RULE in lines and OLD_WEATHER_RULE not in lines and NEW_WEATHER_RULE not in lines


@pytest.mark.parametrize("old_rule", [None, ""], ids=["null", "empty"])
async def test_an_empty_or_null_old_rule_appends_to_the_chosen_file(
    client: httpx.AsyncClient, old_rule: str | None
) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    response = await edit(
        client, rule["rule_id"], {"new_rule": HOT_RULE, "module_name": "prompt_v2.txt", "old_rule": old_rule}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["module_name"], response.json()["old_rule"]) == ("prompt_v2.txt", None)
    assert "old_rule_not_found" not in response.json()["warnings"]


async def test_the_old_rule_is_found_ignoring_case_and_accents(client: httpx.AsyncClient, rules_dir: Path) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    response = await edit(client, rule["rule_id"], {"new_rule": HOT_RULE, "old_rule": "- LUON uu tien ao khoac/day"})
    assert response.status_code == 200, response.text
    assert response.json()["old_rule"] == OLD_WEATHER_RULE  # the file's own line
    assert response.json()["warnings"] == []

    assert (await client.post(f"/autotrain/rules/{rule['rule_id']}/approve", headers=ADMIN)).status_code == 200
    deployed = await client.post(f"/autotrain/rules/{rule['rule_id']}/deploy", headers=ADMIN)
    assert deployed.json()["deployment"]["outcome"] == "replaced"
    assert OLD_WEATHER_RULE not in read_rule_lines(rules_dir)


async def test_an_old_rule_not_in_the_file_is_refused_naming_the_closest_line(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    before = await rule_now(client, rule["rule_id"])

    message = error_of(
        await edit(client, rule["rule_id"], {"new_rule": HOT_RULE, "old_rule": "- Luôn ưu tiên áo khoác"}),
        422,
        "invalid_input",
    )
    assert message == f"the rule to replace is not in fashion_rules.json; did you mean “{OLD_WEATHER_RULE}”?"
    assert await rule_now(client, rule["rule_id"]) == before  # nothing changed, no silent append

    # the carried-over old rule is not a line of the other file either
    moved = await edit(client, rule["rule_id"], {"new_rule": HOT_RULE, "module_name": "prompt_v2.txt"})
    assert "is not in prompt_v2.txt" in error_of(moved, 422, "invalid_input")
    assert await rule_now(client, rule["rule_id"]) == before
    assert [e for e in await audit_of(app, rule["rule_id"]) if e.action == "rule_edited"] == []

    # what the Slack edit modal shows on its old_rule field
    with pytest.raises(InvalidInput) as refused:
        await app.state.runtime.service.edit(
            rule["rule_id"], Actor("U_ADMIN", Role.ADMIN), new_rule=HOT_RULE, old_rule="- luon uu tien ao khoac"
        )
    assert refused.value.params["field"] == "old_rule"
    assert refused.value.params["closest"] == OLD_WEATHER_RULE


async def test_an_old_rule_like_no_line_is_refused_without_a_suggestion(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    response = await edit(client, rule["rule_id"], {"new_rule": HOT_RULE, "old_rule": "- Zzz qwerty xyz"})
    assert (
        error_of(response, 422, "invalid_input")
        == "the rule to replace, “- Zzz qwerty xyz”, is not in fashion_rules.json"
    )
    with pytest.raises(InvalidInput) as refused:
        await app.state.runtime.service.edit(
            rule["rule_id"], Actor("U_ADMIN", Role.ADMIN), new_rule=HOT_RULE, old_rule="- Zzz qwerty xyz"
        )
    assert refused.value.params["field"] == "old_rule"
    assert "closest" not in refused.value.params


async def test_an_old_rule_that_matches_two_lines_once_folded_is_refused(
    client: httpx.AsyncClient, rules_dir: Path
) -> None:
    path = rules_dir / "prompt_v2.txt"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("- Không bịa", "- Khong bia thong tin ve gia, chat lieu hay ton kho\n- Không bịa"),
        encoding="utf-8",
    )
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    response = await edit(
        client,
        rule["rule_id"],
        {
            "new_rule": HOT_RULE,
            "module_name": "prompt_v2.txt",
            "old_rule": "- KHÔNG BỊA THÔNG TIN VỀ GIÁ, CHẤT LIỆU HAY TỒN KHO",
        },
    )
    assert "matches 2 lines of prompt_v2.txt" in error_of(response, 422, "invalid_input")
    assert (await rule_now(client, rule["rule_id"]))["new_rule"] == NEW_WEATHER_RULE


async def test_an_admins_edit_drops_the_confidence_warning_and_recomputes_the_others(
    client: httpx.AsyncClient,
) -> None:
    rule = await pending_rule(client, DRAFT_FEEDBACK)
    assert rule["confidence"] < 0.6 and "low_confidence" in rule["warnings"]

    response = await edit(client, rule["rule_id"], {"new_rule": "- Đám cưới: không gợi ý trang phục màu đen"})
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == []  # the admin wrote this wording
    assert response.json()["confidence"] == rule["confidence"]

    linked = await edit(client, rule["rule_id"], {"new_rule": "- Đám cưới: xem bảng màu tại https://shop.example.com"})
    assert linked.json()["warnings"] == ["contains_url"]  # still checked, like every rule text


async def test_only_an_admin_may_edit(client: httpx.AsyncClient) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    before = await rule_now(client, rule["rule_id"])
    error_of(await edit(client, rule["rule_id"], {"new_rule": HOT_RULE}, headers=REPORTER), 403, "forbidden")
    error_of(await edit(client, rule["rule_id"], {"new_rule": HOT_RULE}, headers={}), 401, "unauthorized")
    assert await rule_now(client, rule["rule_id"]) == before


async def test_an_unknown_rule_is_404(client: httpx.AsyncClient) -> None:
    message = error_of(await edit(client, "RUL-4242", {"new_rule": HOT_RULE}), 404, "not_found")
    assert message == "no rule RUL-4242"
    listed = await client.get("/autotrain/rules", headers=ADMIN)
    assert listed.json()["total"] == 0  # nothing was made by the refused edit


@pytest.mark.parametrize("move", ["approve", "reject"])
async def test_a_rule_no_longer_pending_is_not_edited(app: FastAPI, client: httpx.AsyncClient, move: str) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    assert (await client.post(f"/autotrain/rules/{rule['rule_id']}/{move}", headers=ADMIN)).status_code == 200
    before = await rule_now(client, rule["rule_id"])
    message = error_of(await edit(client, rule["rule_id"], {"new_rule": HOT_RULE}), 409, "transition_refused")
    assert "only pending rules can be edited" in message
    assert await rule_now(client, rule["rule_id"]) == before
    assert [e for e in await audit_of(app, rule["rule_id"]) if e.action == "rule_edited"] == []


INVALID_EDITS: dict[str, Any] = {
    "blank-rule": {"new_rule": "   "},
    "only-a-dash": {"new_rule": "- "},
    "too-long": {"new_rule": "- " + "x" * 600},
    "unknown-module": {"new_rule": HOT_RULE, "module_name": "secrets.env"},
    "module-path": {"new_rule": HOT_RULE, "module_name": "../fashion_rules.json"},
    "empty-module": {"new_rule": HOT_RULE, "module_name": ""},
    "extra-field": {"new_rule": HOT_RULE, "confidence": 1.0},
    "no-new-rule": {"old_rule": OLD_WEATHER_RULE},
    "new-rule-not-text": {"new_rule": 42},
    "old-rule-not-text": {"new_rule": HOT_RULE, "old_rule": ["- a"]},
    "body-a-list": [HOT_RULE],
    "no-body": None,
}


@pytest.mark.parametrize("body", list(INVALID_EDITS.values()), ids=list(INVALID_EDITS))
async def test_invalid_edits_are_422_and_change_nothing(client: httpx.AsyncClient, body: Any) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    before = await rule_now(client, rule["rule_id"])
    error_of(await edit(client, rule["rule_id"], body), 422, "invalid_input")
    assert await rule_now(client, rule["rule_id"]) == before
