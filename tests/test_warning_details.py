"""Warnings that name what they are about: `warning_details`, by warning — the rule a duplicate repeats (its
id when Auto-Train deployed that line, else the file's line quoted) and in which file, the line a near
duplicate is close to, the old rule that was not found, the deployed line a rule contradicts. Computed by the
proposal checks, kept in the store (migration 17), returned by the REST API, and still there after a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from autotrain.models import RuleProposal, RuleStatus
from autotrain.proposals import deployed_rule_ids, validate_proposal
from autotrain.settings import DEFAULT_ALLOWED_MODULES
from tests.conftest import HEIGHT_FEEDBACK, NEW_WEATHER_RULE, OLD_WEATHER_RULE, WEATHER_FEEDBACK, a_rule, make_settings
from tests.review_support import ADMIN, ProposingGenerator, edit, pending_rule, rule_now, serving

SHIPPED_MAXI = "- Gợi ý đầm maxi cho mọi khách"
SHIPPED_SOLD_OUT = "- Không gợi ý sản phẩm đã hết hàng"
SHIPPED_ASK_AGAIN = "- Khi chưa rõ nhu cầu, hỏi lại một câu thay vì đoán"  # a line of prompt_v2.txt


async def deployed_weather_rule(client: httpx.AsyncClient) -> str:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    for step in ("approve", "deploy"):
        response = await client.post(f"/autotrain/rules/{rule['rule_id']}/{step}", headers=ADMIN)
        assert response.status_code == 200, response.text
    return rule["rule_id"]


async def edited(client: httpx.AsyncClient, rule_id: str, **fields: str) -> dict:
    response = await edit(client, rule_id, fields)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_edit_names_the_deployed_rule_it_duplicates_and_the_file(client: httpx.AsyncClient) -> None:
    weather_id = await deployed_weather_rule(client)
    other = await pending_rule(client, HEIGHT_FEEDBACK)
    rule = await edited(client, other["rule_id"], new_rule=NEW_WEATHER_RULE.lower(), old_rule="")
    assert rule["warnings"] == ["duplicate"]
    assert rule["warning_details"] == {"duplicate": f"{weather_id} — fashion_rules.json"}


@pytest.mark.parametrize(
    ("new_rule", "warning", "detail"),
    [
        pytest.param(
            "- khi chua ro nhu cau, hoi lai mot cau thay vi doan",
            "duplicate",
            f"“{SHIPPED_ASK_AGAIN}” — prompt_v2.txt",
            id="duplicate-of-a-line-no-rule-made",
        ),
        pytest.param(
            "- Không gợi ý sản phẩm hết hàng",
            "near_duplicate",
            f"“{SHIPPED_SOLD_OUT}” — fashion_rules.json",
            id="near-duplicate",
        ),
    ],
)
async def test_an_edit_quotes_the_line_it_repeats(
    client: httpx.AsyncClient, new_rule: str, warning: str, detail: str
) -> None:
    rule = await pending_rule(client, WEATHER_FEEDBACK)
    changed = await edited(client, rule["rule_id"], new_rule=new_rule, old_rule="")
    assert changed["warnings"] == [warning]
    assert changed["warning_details"] == {warning: detail}

    # an edit recomputes them: a clean line has no warning and so no detail
    clean = await edited(client, rule["rule_id"], new_rule="- Khi trời trên 32 độ: gợi ý áo thun", old_rule="")
    assert (clean["warnings"], clean["warning_details"]) == ([], {})


async def test_a_generated_rule_names_the_old_rule_it_did_not_find_and_persists_across_a_restart(
    tmp_path: Path, rules_dir: Path
) -> None:
    settings = make_settings(tmp_path, rules_dir)
    proposal = RuleProposal(
        module_name="fashion_rules.json",
        old_rule="- Luôn gợi ý áo len dày",  # not in the file: appended, with the warning
        new_rule=SHIPPED_MAXI,  # already in the file (a shipped line, no rule of ours)
        reasoning="test",
        confidence=0.9,
    )
    async with serving(settings, ProposingGenerator(proposal)) as (_, client):
        rule = await pending_rule(client, WEATHER_FEEDBACK)
        assert rule["old_rule"] is None
        assert rule["warnings"] == ["old_rule_not_found", "duplicate"]
        assert rule["warning_details"] == {
            "old_rule_not_found": "“- Luôn gợi ý áo len dày”",
            "duplicate": f"“{SHIPPED_MAXI}” — fashion_rules.json",
        }
        seen = await rule_now(client, rule["rule_id"])
        assert seen["warning_details"] == rule["warning_details"]
        listed = (await client.get("/autotrain/rules", headers=ADMIN)).json()["items"]
        assert listed[0]["warning_details"] == rule["warning_details"]

    async with serving(settings) as (_, client):  # the store closed and opened again
        assert await rule_now(client, rule["rule_id"]) == seen


async def test_a_replay_names_the_deployed_line_the_rule_contradicts(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir)
    async with serving(settings) as (_, client):
        rule = await pending_rule(client, WEATHER_FEEDBACK)
        # appended instead of replacing: "- Luôn ưu tiên áo khoác/dày" stays, and the new line contradicts it
        await edited(client, rule["rule_id"], new_rule=NEW_WEATHER_RULE, old_rule="")
        replay = await client.post(f"/autotrain/rules/{rule['rule_id']}/evaluate", headers=ADMIN)
        assert replay.status_code == 200, replay.text
        assert replay.json()["conflicts"] == [OLD_WEATHER_RULE]
        seen = await rule_now(client, rule["rule_id"])
        assert seen["warnings"] == ["conflicts_with_rule"]
        assert seen["warning_details"] == {"conflicts_with_rule": f"“{OLD_WEATHER_RULE}”"}

    async with serving(settings) as (_, client):
        assert (await rule_now(client, rule["rule_id"]))["warning_details"] == seen["warning_details"]
        # an edit recomputes the warnings: the replay's goes with its detail until the next replay
        again = await edited(client, rule["rule_id"], new_rule=NEW_WEATHER_RULE, old_rule=OLD_WEATHER_RULE)
        assert (again["warnings"], again["warning_details"]) == ([], {})


def test_the_checks_name_a_duplicate_by_the_rule_deployed_with_that_line() -> None:
    deployed = a_rule(RuleStatus.DEPLOYED).model_copy(update={"rule_id": "RUL-1007", "new_rule": NEW_WEATHER_RULE})
    current = {"fashion_rules.json": [NEW_WEATHER_RULE, SHIPPED_MAXI], "prompt_v2.txt": [], "stylist_guidelines.md": []}
    ids = deployed_rule_ids([deployed])
    assert ids == {"fashion_rules.json": {NEW_WEATHER_RULE: "RUL-1007"}}

    def details(new_rule: str) -> dict[str, str]:
        proposal = RuleProposal(module_name="prompt_v2.txt", new_rule=new_rule, reasoning="r", confidence=0.9)
        return validate_proposal(proposal, current, DEFAULT_ALLOWED_MODULES, rule_ids=ids).warning_details

    assert details(NEW_WEATHER_RULE) == {"duplicate": "RUL-1007 — fashion_rules.json"}
    assert details(SHIPPED_MAXI) == {"duplicate": f"“{SHIPPED_MAXI}” — fashion_rules.json"}
    # a near duplicate is named by its line, whoever made it
    assert details(NEW_WEATHER_RULE.replace("dày", "")) == {
        "near_duplicate": f"“{NEW_WEATHER_RULE}” — fashion_rules.json"
    }


async def test_a_generated_duplicate_names_the_deployed_rule_whose_line_it_is(tmp_path: Path, rules_dir: Path) -> None:
    """A generator proposing a line a rule of ours deployed: the warning names that rule, as an edit's does."""
    settings = make_settings(tmp_path, rules_dir)
    async with serving(settings) as (_, client):
        weather_id = await deployed_weather_rule(client)
    proposal = RuleProposal(module_name="fashion_rules.json", new_rule=NEW_WEATHER_RULE, reasoning="t", confidence=0.9)
    async with serving(settings, ProposingGenerator(proposal)) as (_, client):
        rule = await pending_rule(client, HEIGHT_FEEDBACK)
    assert rule["warnings"] == ["duplicate"]
    assert rule["warning_details"] == {"duplicate": f"{weather_id} — fashion_rules.json"}
