"""Rule sets over HTTP (issue 13): a chatbot that runs elsewhere reads its rule files from Auto-Train with its
reporter token — the content, the version and an ETag (304 when unchanged), and with `?user_id=` the rules
that apply to that user, canary buckets applied on the server with the client's own implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from autotrain.policy import Role
from tests.conftest import ADMIN as ADMIN_ACTOR
from tests.conftest import OLD_WEATHER_RULE, WEATHER_FEEDBACK, bearer

REPORTER = bearer(Role.REPORTER, "chatbot")
ADMIN = bearer()
RULES = "fashion_rules.json"


async def ruleset(client: httpx.AsyncClient, module: str = RULES, **params: str) -> httpx.Response:
    return await client.get(f"/autotrain/rulesets/{module}", params=params, headers=REPORTER)


async def approved(client: httpx.AsyncClient, app: FastAPI, n: int, new_rule: str, old_rule: str = "") -> str:
    """An approved rule of fashion_rules.json (the edit is Slack's, done here through the same service)."""
    feedback = {**WEATHER_FEEDBACK, "feedback_text": f"Góp ý {n}: trời nóng mà vẫn gợi ý áo khoác"}
    response = await client.post("/autotrain/feedback", json=feedback, headers=REPORTER)
    feedback_id = response.json()["feedback_id"]
    rule_id = (await client.post(f"/autotrain/generate/{feedback_id}", headers=ADMIN)).json()["rule_id"]
    await app.state.runtime.service.edit(rule_id, ADMIN_ACTOR, new_rule=new_rule, old_rule=old_rule, module_name=RULES)
    assert (await client.post(f"/autotrain/rules/{rule_id}/approve", headers=ADMIN)).status_code == 200
    return rule_id


async def test_the_list_names_every_rule_file_with_its_version_and_etag(client: httpx.AsyncClient) -> None:
    response = await client.get("/autotrain/rulesets", headers=REPORTER)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["module_name"] for i in items] == ["fashion_rules.json", "prompt_v2.txt", "stylist_guidelines.md"]
    for item in items:
        assert item["etag"] == f'"{item["version"]}"' and item["updated_at"]
        one = await ruleset(client, item["module_name"])
        assert one.json()["version"] == item["version"] and one.headers["etag"] == item["etag"]


async def test_a_rule_file_its_etag_and_304(client: httpx.AsyncClient, rules_dir: Path) -> None:
    response = await ruleset(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "json" and body["module_name"] == RULES
    assert body["content"] == (rules_dir / RULES).read_text(encoding="utf-8")
    assert response.headers["etag"] == body["etag"] == f'"{body["version"]}"'
    assert OLD_WEATHER_RULE in [r["rule"] for r in body["rules"]]
    assert all(set(r) == {"rule", "rule_id", "rollout_percent", "replaces"} for r in body["rules"])

    etag = response.headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}'):
        unchanged = await client.get(f"/autotrain/rulesets/{RULES}", headers={**REPORTER, "If-None-Match": header})
        assert unchanged.status_code == 304, header
        assert unchanged.content == b"" and unchanged.headers["etag"] == etag
    stale = await client.get(f"/autotrain/rulesets/{RULES}", headers={**REPORTER, "If-None-Match": '"old"'})
    assert stale.status_code == 200

    text = (await ruleset(client, "prompt_v2.txt")).json()
    assert text["format"] == "text" and text["content"] == (rules_dir / "prompt_v2.txt").read_text(encoding="utf-8")
    assert all(r["rule"].startswith("- ") and r["rule_id"] is None for r in text["rules"])
    assert (await ruleset(client, "stylist_guidelines.md")).json()["format"] == "markdown"


async def test_deploy_canary_promote_and_rollback_each_change_the_version(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seen = [(await ruleset(client)).headers["etag"]]

    async def changed() -> dict[str, Any]:
        response = await ruleset(client)
        assert response.headers["etag"] not in seen
        seen.append(response.headers["etag"])
        return response.json()

    full = await approved(client, app, 1, "- Khi trời nóng: gợi ý áo thun cotton", OLD_WEATHER_RULE)
    assert (await client.post(f"/autotrain/rules/{full}/deploy", headers=ADMIN)).status_code == 200
    body = await changed()
    assert {"rule": "- Khi trời nóng: gợi ý áo thun cotton", "rule_id": full}.items() <= next(
        r for r in body["rules"] if r["rule_id"] == full
    ).items()

    canary = await approved(client, app, 2, "- Gợi ý thêm mũ rộng vành khi trời nắng")
    deployed = await client.post(f"/autotrain/rules/{canary}/deploy", json={"rollout_percent": 10}, headers=ADMIN)
    assert deployed.status_code == 200, deployed.text
    body = await changed()
    assert next(r for r in body["rules"] if r["rule_id"] == canary)["rollout_percent"] == 10

    assert (await client.post(f"/autotrain/rules/{canary}/promote", headers=ADMIN)).status_code == 200
    body = await changed()
    assert next(r for r in body["rules"] if r["rule_id"] == canary)["rollout_percent"] is None

    assert (await client.post(f"/autotrain/rules/{full}/rollback", headers=ADMIN)).status_code == 200
    body = await changed()
    assert full not in [r["rule_id"] for r in body["rules"]]
    assert OLD_WEATHER_RULE in [r["rule"] for r in body["rules"]]


async def test_the_user_view_matches_the_client_s_bucketing_for_10000_ids(
    client: httpx.AsyncClient, app: FastAPI, rules_dir: Path
) -> None:
    from autotrain_client import RuleBook

    line = "- Gợi ý thêm mũ rộng vành khi trời nắng"
    replacing = "- Khi trời nóng: gợi ý áo thun cotton"
    a = await approved(client, app, 1, line)
    b = await approved(client, app, 2, replacing, OLD_WEATHER_RULE)
    for rule_id in (a, b):
        deployed = await client.post(f"/autotrain/rules/{rule_id}/deploy", json={"rollout_percent": 30}, headers=ADMIN)
        assert deployed.status_code == 200, deployed.text
    book = RuleBook(rules_dir)
    inside = 0
    for n in range(10_000):
        user = f"user-{n}"
        view = (await ruleset(client, user_id=user)).json()
        assert view["user_id"] == user
        assert [r["rule"] for r in view["rules"]] == book.rules_for(RULES, user), user
        inside += line in book.rules_for(RULES, user)
    assert 2_800 <= inside <= 3_200  # the buckets really split the users (30 %)


@pytest.mark.parametrize("module", ["nope.json", "..%2Fautotrain.db", ".autotrain", "fashion_rules.json.bak"])
async def test_an_unknown_rule_file_is_404(client: httpx.AsyncClient, module: str) -> None:
    response = await ruleset(client, module)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


async def test_a_reporter_token_is_enough_and_none_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get("/autotrain/rulesets", headers=REPORTER)).status_code == 200
    for path in ("/autotrain/rulesets", f"/autotrain/rulesets/{RULES}"):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers={"Authorization": "Bearer nonsense"})).status_code == 401
