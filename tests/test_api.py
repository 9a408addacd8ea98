"""The REST API over HTTP: the cookbook's checklist, refused transitions, auth, validation, pagination,
rule-file safety and the chatbot reload hook. Every call goes through the real ASGI app, a real SQLite
file and real rule files in a temp folder."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from autotrain.policy import Role
from bot.api import create_app
from tests.conftest import (
    HEIGHT_FEEDBACK,
    JWT_SECRET,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    WEATHER_FEEDBACK,
    ReloadServer,
    bearer,
    make_settings,
    read_rule_lines,
)

pytestmark = pytest.mark.both_backends  # the REST API on SQLite and on PostgreSQL

PRAISE_FEEDBACK = {
    "query": "gợi ý áo sơ mi đi làm",
    "ai_response": "Bạn thử áo sơ mi trắng này nhé",
    "feedback_text": "Tư vấn rất hay, cảm ơn!",
    "feedback_type": "praise",
}
NEW_HEIGHT_RULE = "- Dưới 1m55: gợi ý đầm ngắn (midi, knee-length)"
OLD_HEIGHT_RULE = "- Gợi ý đầm maxi cho mọi khách"

Headers = dict[str, str]


# ---------------------------------------------------------------------- helpers


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response has the given status and the error shape {"error": {"code", "message"}}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]


def rules_file(rules_dir: Path) -> Path:
    return rules_dir / "fashion_rules.json"


async def submit(client: httpx.AsyncClient, headers: Headers, payload: dict[str, Any] | None = None) -> str:
    response = await client.post("/autotrain/feedback", json=payload or WEATHER_FEEDBACK, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["feedback_id"]


async def pending_rule(client: httpx.AsyncClient, headers: Headers, payload: dict[str, Any] | None = None) -> str:
    feedback_id = await submit(client, headers, payload)
    response = await client.post(f"/autotrain/generate/{feedback_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["rule_id"]


async def approved_rule(client: httpx.AsyncClient, headers: Headers, payload: dict[str, Any] | None = None) -> str:
    rule_id = await pending_rule(client, headers, payload)
    response = await client.post(f"/autotrain/rules/{rule_id}/approve", headers=headers)
    assert response.status_code == 200, response.text
    return rule_id


async def deployed_rule(client: httpx.AsyncClient, headers: Headers, payload: dict[str, Any] | None = None) -> str:
    rule_id = await approved_rule(client, headers, payload)
    response = await client.post(f"/autotrain/rules/{rule_id}/deploy", headers=headers)
    assert response.status_code == 200, response.text
    return rule_id


async def get_rule(client: httpx.AsyncClient, headers: Headers, rule_id: str) -> dict[str, Any]:
    response = await client.get(f"/autotrain/rules/{rule_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def get_feedback(client: httpx.AsyncClient, headers: Headers, feedback_id: str) -> dict[str, Any]:
    response = await client.get(f"/autotrain/feedback/{feedback_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def deployments(client: httpx.AsyncClient, headers: Headers) -> dict[str, Any]:
    response = await client.get("/autotrain/deployments", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


@asynccontextmanager
async def custom_client(tmp_path: Path, rules_dir: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The real app built from custom settings, with its lifespan run, like the `client` fixture."""
    app = create_app(make_settings(tmp_path, rules_dir, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            yield http


def token_with(claims: dict[str, Any], secret: str = JWT_SECRET) -> Headers:
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}


def valid_claims(**changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": "U_ADMIN", "role": "admin", "iss": "autotrain", "iat": now}
    claims["exp"] = now + timedelta(hours=1)
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


# ---------------------------------------------------------------------- the cookbook's testing checklist


async def test_submit_feedback_stores_every_field(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    payload = {**WEATHER_FEEDBACK, "metadata": {"conversation_id": "conv-7", "locale": "vi-VN"}}
    response = await client.post("/autotrain/feedback", json=payload, headers=admin_headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["feedback_id"] == "FB-1001"
    assert created["status"] == "pending"
    assert created["user_id"] == "U_ADMIN"
    assert created["source"] == "api"
    assert created["rule_id"] is None
    assert created["error_count"] == 0
    for field, value in payload.items():
        assert created[field] == value, field

    fetched = await get_feedback(client, admin_headers, "FB-1001")
    assert fetched == created

    second = await client.post("/autotrain/feedback", json=HEIGHT_FEEDBACK, headers=admin_headers)
    assert second.status_code == 201
    assert second.json()["feedback_id"] == "FB-1002"


async def test_generate_produces_the_weather_rule(client: httpx.AsyncClient, reporter_headers: Headers) -> None:
    await submit(client, reporter_headers)
    response = await client.post("/autotrain/generate/FB-1001", headers=reporter_headers)
    assert response.status_code == 200, response.text
    rule = response.json()
    assert rule["rule_id"] == "RUL-1001"
    assert rule["feedback_id"] == "FB-1001"
    assert rule["module_name"] == "fashion_rules.json"
    assert rule["old_rule"] == OLD_WEATHER_RULE
    assert rule["new_rule"] == NEW_WEATHER_RULE
    assert rule["confidence"] == 0.85
    assert rule["status"] == "pending"
    assert rule["warnings"] == []

    assert await get_rule(client, reporter_headers, "RUL-1001") == {**rule, "effect": None, "evaluation": None}
    feedback = await get_feedback(client, reporter_headers, "FB-1001")
    assert feedback["status"] == "processed"
    assert feedback["rule_id"] == "RUL-1001"


async def test_generate_is_idempotent(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    await submit(client, admin_headers)
    first = await client.post("/autotrain/generate/FB-1001", headers=admin_headers)
    second = await client.post("/autotrain/generate/FB-1001", headers=admin_headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.json()["rule_id"] == "RUL-1001"

    listed = (await client.get("/autotrain/rules", headers=admin_headers)).json()
    assert listed["total"] == 1
    assert [rule["rule_id"] for rule in listed["items"]] == ["RUL-1001"]
    assert_error(await client.get("/autotrain/rules/RUL-1002", headers=admin_headers), 404, "not_found")


async def test_approve_sets_status_and_approver(client: httpx.AsyncClient) -> None:
    reviewer = bearer(Role.ADMIN, "U_REVIEWER_42")
    rule_id = await pending_rule(client, reviewer)
    response = await client.post(f"/autotrain/rules/{rule_id}/approve", headers=reviewer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "approved"
    assert body["approved_by"] == "U_REVIEWER_42"
    assert body["approved_at"] is not None
    stored = await get_rule(client, reviewer, rule_id)
    assert stored["status"] == "approved"
    assert stored["approved_by"] == "U_REVIEWER_42"


async def test_deploy_writes_the_rule_file_and_records_a_deployment(client: httpx.AsyncClient, rules_dir: Path) -> None:
    deployer = bearer(Role.ADMIN, "U_DEPLOYER")
    rule_id = await approved_rule(client, deployer)
    assert OLD_WEATHER_RULE in read_rule_lines(rules_dir)

    response = await client.post(f"/autotrain/rules/{rule_id}/deploy", headers=deployer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rule_id"] == rule_id
    assert body["status"] == "deployed"
    assert body["deployed_by"] == "U_DEPLOYER"
    assert body["deployment"]["rule_id"] == rule_id
    assert body["deployment"]["deployed_by"] == "U_DEPLOYER"
    assert body["deployment"]["module_name"] == "fashion_rules.json"
    assert body["deployment"]["outcome"] == "replaced"
    assert body["deployment"]["rollback_of"] is None
    assert body["deployment"]["version_before"] != body["deployment"]["version_after"]

    assert (await get_rule(client, deployer, rule_id))["status"] == "deployed"
    listed = await deployments(client, deployer)
    assert listed["total"] == 1
    assert listed["items"][0]["deployment_id"] == body["deployment"]["deployment_id"]
    assert listed["items"][0]["rule_id"] == rule_id

    lines = read_rule_lines(rules_dir)
    assert NEW_WEATHER_RULE in lines
    assert OLD_WEATHER_RULE not in lines
    assert lines.count(NEW_WEATHER_RULE) == 1
    entries = json.loads(rules_file(rules_dir).read_text(encoding="utf-8"))["rules"]
    entry = next(e for e in entries if e["rule"] == NEW_WEATHER_RULE)
    assert entry["rule_id"] == rule_id
    assert entry["added_from"] == "FB-1001"
    assert entry["confidence"] == 0.85


async def test_run_all_processes_every_pending_feedback(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    ids = [await submit(client, admin_headers, payload) for payload in (WEATHER_FEEDBACK, HEIGHT_FEEDBACK)]
    response = await client.post("/autotrain/run-all", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "total": 2,
        "processed": 2,
        "rules_created": ["RUL-1001", "RUL-1002"],
        "skipped": [],
        "errors": [],
        "clusters": [],
    }
    for feedback_id in ids:
        assert (await get_feedback(client, admin_headers, feedback_id))["status"] == "processed"
    rules = (await client.get("/autotrain/rules", headers=admin_headers)).json()
    assert {rule["new_rule"] for rule in rules["items"]} == {NEW_WEATHER_RULE, NEW_HEIGHT_RULE}

    again = await client.post("/autotrain/run-all", headers=admin_headers)
    assert again.status_code == 200
    assert again.json() == {
        "total": 0,
        "processed": 0,
        "rules_created": [],
        "skipped": [],
        "errors": [],
        "clusters": [],
    }


async def test_run_all_skips_praise_and_leaves_processed_feedback_alone(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await pending_rule(client, admin_headers)  # FB-1001 already has RUL-1001
    praise_id = await submit(client, admin_headers, PRAISE_FEEDBACK)  # processed at once: never in the backlog
    assert (await get_feedback(client, admin_headers, praise_id))["status"] == "processed"
    height_id = await submit(client, admin_headers, HEIGHT_FEEDBACK)
    response = await client.post("/autotrain/run-all", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "total": 1,
        "processed": 1,
        "rules_created": ["RUL-1002"],
        "skipped": [],
        "errors": [],
        "clusters": [],
    }
    assert (await get_feedback(client, admin_headers, praise_id))["status"] == "processed"
    assert (await get_feedback(client, admin_headers, praise_id))["rule_id"] is None
    assert (await get_feedback(client, admin_headers, height_id))["rule_id"] == "RUL-1002"


async def test_generate_from_praise_is_refused(client: httpx.AsyncClient, reporter_headers: Headers) -> None:
    praise_id = await submit(client, reporter_headers, PRAISE_FEEDBACK)
    assert_error(
        await client.post(f"/autotrain/generate/{praise_id}", headers=reporter_headers), 409, "transition_refused"
    )
    # asked again, still refused, and no rule exists
    assert_error(
        await client.post(f"/autotrain/generate/{praise_id}", headers=reporter_headers), 409, "transition_refused"
    )
    assert (await client.get("/autotrain/rules", headers=reporter_headers)).json()["total"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/autotrain/rules/RUL-9999"),
        ("POST", "/autotrain/rules/RUL-9999/approve"),
        ("POST", "/autotrain/rules/RUL-9999/deploy"),
        ("POST", "/autotrain/rules/RUL-9999/reject"),
        ("POST", "/autotrain/rules/RUL-9999/rollback"),
        ("POST", "/autotrain/rules/not-a-rule/approve"),
        ("GET", "/autotrain/feedback/FB-9999"),
        ("POST", "/autotrain/generate/FB-9999"),
        ("GET", "/autotrain/feedback/garbage"),
    ],
)
async def test_unknown_ids_answer_404(
    client: httpx.AsyncClient, admin_headers: Headers, method: str, path: str
) -> None:
    await pending_rule(client, admin_headers)  # RUL-1001 / FB-1001 exist; the asked ids do not
    error = assert_error(await client.request(method, path, headers=admin_headers), 404, "not_found")
    assert path.split("/")[3] in error["message"]
    assert (await get_rule(client, admin_headers, "RUL-1001"))["status"] == "pending"


async def test_unknown_route_answers_404_in_error_shape(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    assert_error(await client.get("/autotrain/nope", headers=admin_headers), 404, "not_found")
    assert_error(await client.get("/no/such/route"), 404, "not_found")


# ---------------------------------------------------------------------- refused transitions


async def assert_refused_and_unchanged(
    client: httpx.AsyncClient, headers: Headers, rules_dir: Path, rule_id: str, action: str
) -> dict[str, Any]:
    before_rule = await get_rule(client, headers, rule_id)
    before_file = rules_file(rules_dir).read_bytes()
    before_deployments = await deployments(client, headers)
    error = assert_error(
        await client.post(f"/autotrain/rules/{rule_id}/{action}", headers=headers), 409, "transition_refused"
    )
    assert rule_id in error["message"]
    assert await get_rule(client, headers, rule_id) == before_rule
    assert rules_file(rules_dir).read_bytes() == before_file
    assert await deployments(client, headers) == before_deployments
    return error


async def test_deploy_before_approve_is_refused(
    client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path
) -> None:
    rule_id = await pending_rule(client, admin_headers)
    await assert_refused_and_unchanged(client, admin_headers, rules_dir, rule_id, "deploy")
    assert OLD_WEATHER_RULE in read_rule_lines(rules_dir)
    assert NEW_WEATHER_RULE not in read_rule_lines(rules_dir)


async def test_approve_twice_is_refused(client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path) -> None:
    rule_id = await approved_rule(client, admin_headers)
    await assert_refused_and_unchanged(client, admin_headers, rules_dir, rule_id, "approve")
    assert (await get_rule(client, admin_headers, rule_id))["status"] == "approved"


@pytest.mark.parametrize("state", ["pending", "approved"])
async def test_rollback_of_a_never_deployed_rule_is_refused(
    client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path, state: str
) -> None:
    make = pending_rule if state == "pending" else approved_rule
    rule_id = await make(client, admin_headers)
    await assert_refused_and_unchanged(client, admin_headers, rules_dir, rule_id, "rollback")
    assert (await get_rule(client, admin_headers, rule_id))["status"] == state


async def test_reject_after_deploy_is_refused(
    client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path
) -> None:
    rule_id = await deployed_rule(client, admin_headers)
    await assert_refused_and_unchanged(client, admin_headers, rules_dir, rule_id, "reject")
    assert (await get_rule(client, admin_headers, rule_id))["status"] == "deployed"
    assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)


async def test_deploy_twice_is_refused(client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path) -> None:
    rule_id = await deployed_rule(client, admin_headers)
    await assert_refused_and_unchanged(client, admin_headers, rules_dir, rule_id, "deploy")
    assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1


async def test_a_rejected_rule_cannot_be_approved_or_deployed(
    client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path
) -> None:
    rule_id = await pending_rule(client, admin_headers)
    assert (await client.post(f"/autotrain/rules/{rule_id}/reject", headers=admin_headers)).status_code == 200
    for action in ("approve", "deploy", "reject", "rollback"):
        await assert_refused_and_unchanged(client, admin_headers, rules_dir, rule_id, action)


# ---------------------------------------------------------------------- reject and rollback


async def test_reject_with_reason(client: httpx.AsyncClient, rules_dir: Path) -> None:
    admin = bearer(Role.ADMIN, "U_CRITIC")
    rule_id = await pending_rule(client, admin)
    before = rules_file(rules_dir).read_bytes()
    response = await client.post(
        f"/autotrain/rules/{rule_id}/reject", json={"reason": "quá chung chung"}, headers=admin
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "rejected"
    assert body["reject_reason"] == "quá chung chung"
    assert body["rejected_by"] == "U_CRITIC"
    assert body["rejected_at"] is not None
    assert await get_rule(client, admin, rule_id) == {**body, "effect": None, "evaluation": None}
    feedback = await get_feedback(client, admin, body["feedback_id"])
    assert feedback["status"] == "rejected"
    assert rules_file(rules_dir).read_bytes() == before


async def test_reject_without_body_and_from_approved(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    rule_id = await approved_rule(client, admin_headers)
    response = await client.post(f"/autotrain/rules/{rule_id}/reject", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "rejected"
    assert response.json()["reject_reason"] is None
    assert (await get_feedback(client, admin_headers, "FB-1001"))["status"] == "rejected"


@pytest.mark.parametrize(
    "body",
    [{"reason": "x" * 501}, {"reason": "ok", "extra": 1}, {"reason": 5}, ["reason"]],
    ids=["reason-too-long", "unknown-field", "wrong-type", "not-an-object"],
)
async def test_reject_with_invalid_body_is_422(client: httpx.AsyncClient, admin_headers: Headers, body: Any) -> None:
    rule_id = await pending_rule(client, admin_headers)
    response = await client.post(f"/autotrain/rules/{rule_id}/reject", json=body, headers=admin_headers)
    assert_error(response, 422, "invalid_input")
    assert (await get_rule(client, admin_headers, rule_id))["status"] == "pending"


async def test_rollback_restores_the_old_rule(client: httpx.AsyncClient, rules_dir: Path) -> None:
    admin = bearer(Role.ADMIN, "U_ROLLER")
    rule_id = await deployed_rule(client, admin)
    deployed = await deployments(client, admin)
    original_id = deployed["items"][0]["deployment_id"]

    response = await client.post(f"/autotrain/rules/{rule_id}/rollback", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "rolled_back"
    assert body["rolled_back_by"] == "U_ROLLER"
    assert body["deployment"]["rollback_of"] == original_id
    assert body["deployment"]["outcome"] == "reverted"
    assert (await get_rule(client, admin, rule_id))["status"] == "rolled_back"

    lines = read_rule_lines(rules_dir)
    assert OLD_WEATHER_RULE in lines
    assert NEW_WEATHER_RULE not in lines

    listed = await deployments(client, admin)
    assert listed["total"] == 2
    rollback_rows = [row for row in listed["items"] if row["rollback_of"] is not None]
    assert len(rollback_rows) == 1
    assert rollback_rows[0]["rollback_of"] == original_id
    assert rollback_rows[0]["rule_id"] == rule_id
    assert rollback_rows[0]["deployment_id"] == body["deployment"]["deployment_id"]

    # a second rollback is refused and changes nothing
    await assert_refused_and_unchanged(client, admin, rules_dir, rule_id, "rollback")


async def test_rollback_keeps_later_deploys(client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path) -> None:
    weather = await deployed_rule(client, admin_headers, WEATHER_FEEDBACK)
    height = await deployed_rule(client, admin_headers, HEIGHT_FEEDBACK)
    response = await client.post(f"/autotrain/rules/{weather}/rollback", headers=admin_headers)
    assert response.status_code == 200, response.text
    lines = read_rule_lines(rules_dir)
    assert OLD_WEATHER_RULE in lines
    assert NEW_WEATHER_RULE not in lines
    assert NEW_HEIGHT_RULE in lines
    assert OLD_HEIGHT_RULE not in lines
    assert (await get_rule(client, admin_headers, height))["status"] == "deployed"


# ---------------------------------------------------------------------- auth


async def test_no_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/autotrain/status")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(await client.post("/autotrain/feedback", json=WEATHER_FEEDBACK), 401, "unauthorized")


def hs512_token() -> Headers:
    with warnings.catch_warnings():  # PyJWT warns that the test secret is short for SHA-512
        warnings.simplefilter("ignore")
        return {"Authorization": f"Bearer {jwt.encode(valid_claims(), JWT_SECRET, algorithm='HS512')}"}


BAD_TOKENS: dict[str, Callable[[], Headers]] = {
    "garbage": lambda: {"Authorization": "Bearer not-a-jwt"},
    "empty": lambda: {"Authorization": "Bearer "},
    "basic-scheme": lambda: {"Authorization": "Basic dXNlcjpwYXNz"},
    "no-scheme": lambda: {"Authorization": "U_ADMIN"},
    "expired": lambda: token_with(valid_claims(exp=datetime.now(UTC) - timedelta(minutes=5))),
    "wrong-issuer": lambda: token_with(valid_claims(iss="someone-else")),
    "no-issuer": lambda: token_with(valid_claims(iss=None)),
    "wrong-secret": lambda: token_with(valid_claims(), secret="a-different-secret-of-sufficient-length-000"),
    "unknown-role": lambda: token_with(valid_claims(role="superuser")),
    "no-role": lambda: token_with(valid_claims(role=None)),
    "no-sub": lambda: token_with(valid_claims(sub=None)),
    "no-exp": lambda: token_with(valid_claims(exp=None)),
    "empty-sub": lambda: token_with(valid_claims(sub="")),
    "wrong-algorithm": hs512_token,
}


@pytest.mark.parametrize("make_headers", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
async def test_bad_tokens_are_401(client: httpx.AsyncClient, make_headers: Callable[[], Headers]) -> None:
    headers = make_headers()
    assert_error(await client.get("/autotrain/feedback", headers=headers), 401, "unauthorized")
    assert_error(await client.post("/autotrain/feedback", json=WEATHER_FEEDBACK, headers=headers), 401, "unauthorized")
    admin = bearer(Role.ADMIN, "U_ADMIN")
    assert (await client.get("/autotrain/feedback", headers=admin)).json()["total"] == 0


async def test_expired_token_message(client: httpx.AsyncClient) -> None:
    expired = token_with(valid_claims(exp=datetime.now(UTC) - timedelta(seconds=60)))
    error = assert_error(await client.get("/autotrain/status", headers=expired), 401, "unauthorized")
    assert "expired" in error["message"]


async def test_a_token_minted_by_hand_with_the_secret_works(client: httpx.AsyncClient) -> None:
    headers = token_with(valid_claims(sub="hand-made", role="reporter"))
    response = await client.post("/autotrain/feedback", json=WEATHER_FEEDBACK, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == "hand-made"


@pytest.mark.parametrize(
    ("state", "action"),
    [("pending", "approve"), ("approved", "deploy"), ("pending", "reject"), ("deployed", "rollback")],
)
async def test_reporter_cannot_use_admin_actions(
    client: httpx.AsyncClient,
    admin_headers: Headers,
    reporter_headers: Headers,
    rules_dir: Path,
    state: str,
    action: str,
) -> None:
    make = {"pending": pending_rule, "approved": approved_rule, "deployed": deployed_rule}[state]
    rule_id = await make(client, admin_headers)
    before_rule = await get_rule(client, admin_headers, rule_id)
    before_file = rules_file(rules_dir).read_bytes()
    before_deployments = await deployments(client, admin_headers)

    response = await client.post(f"/autotrain/rules/{rule_id}/{action}", headers=reporter_headers)
    error = assert_error(response, 403, "forbidden")
    assert "chatbot" in error["message"]

    assert await get_rule(client, admin_headers, rule_id) == before_rule
    assert rules_file(rules_dir).read_bytes() == before_file
    assert await deployments(client, admin_headers) == before_deployments
    # and an admin may still do it: the refusal was about the role, not the state
    assert (await client.post(f"/autotrain/rules/{rule_id}/{action}", headers=admin_headers)).status_code == 200


async def test_reporter_cannot_run_all(
    client: httpx.AsyncClient, admin_headers: Headers, reporter_headers: Headers
) -> None:
    feedback_id = await submit(client, reporter_headers)
    assert_error(await client.post("/autotrain/run-all", headers=reporter_headers), 403, "forbidden")
    assert (await get_feedback(client, admin_headers, feedback_id))["status"] == "pending"
    assert (await client.get("/autotrain/rules", headers=admin_headers)).json()["total"] == 0


async def test_reporter_may_submit_list_read_and_generate(client: httpx.AsyncClient, reporter_headers: Headers) -> None:
    feedback_id = await submit(client, reporter_headers)
    listed = await client.get("/autotrain/feedback", headers=reporter_headers)
    assert listed.status_code == 200
    assert [item["feedback_id"] for item in listed.json()["items"]] == [feedback_id]
    generated = await client.post(f"/autotrain/generate/{feedback_id}", headers=reporter_headers)
    assert generated.status_code == 200
    assert generated.json()["new_rule"] == NEW_WEATHER_RULE
    for path in ("/autotrain/rules", "/autotrain/rules/RUL-1001", "/autotrain/deployments", "/autotrain/status"):
        assert (await client.get(path, headers=reporter_headers)).status_code == 200, path


async def test_audit_of_actor_uses_token_subjects(client: httpx.AsyncClient) -> None:
    reporter = bearer(Role.REPORTER, "chatbot-prod")
    approver = bearer(Role.ADMIN, "U_APPROVER")
    deployer = bearer(Role.ADMIN, "U_DEPLOYER")
    rule_id = await pending_rule(client, reporter)
    assert (await get_feedback(client, approver, "FB-1001"))["user_id"] == "chatbot-prod"
    approved = await client.post(f"/autotrain/rules/{rule_id}/approve", headers=approver)
    assert approved.json()["approved_by"] == "U_APPROVER"
    deployed = await client.post(f"/autotrain/rules/{rule_id}/deploy", headers=deployer)
    assert deployed.json()["approved_by"] == "U_APPROVER"
    assert deployed.json()["deployed_by"] == "U_DEPLOYER"
    assert (await deployments(client, approver))["items"][0]["deployed_by"] == "U_DEPLOYER"


# ---------------------------------------------------------------------- validation


def without(field: str) -> dict[str, Any]:
    return {key: value for key, value in WEATHER_FEEDBACK.items() if key != field}


def with_(**changes: Any) -> dict[str, Any]:
    return {**WEATHER_FEEDBACK, **changes}


INVALID_FEEDBACK = {
    "missing-query": without("query"),
    "missing-feedback_text": without("feedback_text"),
    "missing-feedback_type": without("feedback_type"),
    "empty-object": {},
    "empty-feedback_text": with_(feedback_text=""),
    "blank-feedback_text": with_(feedback_text="   "),
    "empty-query": with_(query=""),
    "feedback_text-4001": with_(feedback_text="x" * 4001),
    "query-2001": with_(query="q" * 2001),
    "ai_response-8001": with_(ai_response="a" * 8001),
    "bad-feedback_type": with_(feedback_type="complaint"),
    "unknown-field": with_(rating=5),
    "metadata-over-4KiB": with_(metadata={"note": "m" * 4100}),
    "metadata-not-object": with_(metadata=["a", "b"]),
    "user_id-129": with_(user_id="u" * 129),
    "user_id-empty": with_(user_id=""),
    "query-int": with_(query=123),
    "feedback_text-list": with_(feedback_text=["Trời nóng"]),
    "feedback_type-int": with_(feedback_type=1),
    "ai_response-null-object": with_(ai_response={"text": "x"}),
    "user_id-int": with_(user_id=42),
    "body-is-list": [WEATHER_FEEDBACK],
    "body-is-string": "feedback",
}


@pytest.mark.parametrize("payload", list(INVALID_FEEDBACK.values()), ids=list(INVALID_FEEDBACK))
async def test_invalid_feedback_is_422(client: httpx.AsyncClient, admin_headers: Headers, payload: Any) -> None:
    response = await client.post("/autotrain/feedback", json=payload, headers=admin_headers)
    assert_error(response, 422, "invalid_input")
    assert (await client.get("/autotrain/feedback", headers=admin_headers)).json()["total"] == 0


async def test_validation_message_names_the_field(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    error = assert_error(
        await client.post("/autotrain/feedback", json=with_(feedback_text="x" * 4001), headers=admin_headers),
        422,
        "invalid_input",
    )
    assert "feedback_text" in error["message"]


@pytest.mark.parametrize(
    "content",
    [b"not json at all", b'{"query": "x",', b"", '{"query": "\u00e1o"}'.encode("utf-16")],
    ids=["text", "truncated", "empty", "utf16"],
)
async def test_non_json_body_is_422(client: httpx.AsyncClient, admin_headers: Headers, content: bytes) -> None:
    headers = {**admin_headers, "Content-Type": "application/json"}
    response = await client.post("/autotrain/feedback", content=content, headers=headers)
    assert_error(response, 422, "invalid_input")
    assert (await client.get("/autotrain/feedback", headers=admin_headers)).json()["total"] == 0


@pytest.mark.parametrize(
    "content",
    [
        '{"query": "q", "feedback_text": "f", "feedback_type": "bug", "metadata": {"a": '
        + "[" * 20000
        + "]" * 20000
        + "}}",
        '{"query": "q", "feedback_text": "f", "feedback_type": "bug", "metadata": {"a": ' + "9" * 5000 + "}}",
    ],
    ids=["nested-20000-deep", "integer-5000-digits"],
)
async def test_json_the_parser_cannot_handle_is_422(
    client: httpx.AsyncClient, admin_headers: Headers, content: str
) -> None:
    """Valid JSON under 64 KiB that Python's parser refuses (recursion, int digits) is invalid input too."""
    headers = {**admin_headers, "Content-Type": "application/json"}
    response = await client.post("/autotrain/feedback", content=content.encode(), headers=headers)
    assert_error(response, 422, "invalid_input")
    assert (await client.get("/autotrain/feedback", headers=admin_headers)).json()["total"] == 0


@pytest.mark.parametrize(
    "payload",
    [with_(feedback_text="\x00\x01\x02"), with_(query=" \x00 "), with_(feedback_text="\x7f \x1b")],
    ids=["feedback_text-control-only", "query-control-only", "feedback_text-del-esc"],
)
async def test_text_that_is_only_control_characters_is_422(
    client: httpx.AsyncClient, admin_headers: Headers, payload: dict[str, Any]
) -> None:
    """Control characters are dropped; what is left must still meet the 1-char minimum (never stored empty)."""
    response = await client.post("/autotrain/feedback", json=payload, headers=admin_headers)
    assert_error(response, 422, "invalid_input")
    assert (await client.get("/autotrain/feedback", headers=admin_headers)).json()["total"] == 0


async def test_feedback_bounds_are_inclusive(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    payload = {
        "query": "q" * 2000,
        "ai_response": "a" * 8000,
        "feedback_text": "f" * 4000,
        "feedback_type": "suggestion",
        "user_id": "u" * 128,
        "metadata": {"note": "m" * 4000},
    }
    response = await client.post("/autotrain/feedback", json=payload, headers=admin_headers)
    assert response.status_code == 201, response.text
    stored = await get_feedback(client, admin_headers, response.json()["feedback_id"])
    for field, value in payload.items():
        assert stored[field] == value, field


async def test_ai_response_is_optional(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    response = await client.post("/autotrain/feedback", json=without("ai_response"), headers=admin_headers)
    assert response.status_code == 201, response.text
    assert response.json()["ai_response"] == ""


async def test_user_id_defaults_to_subject_and_body_value_is_kept(
    client: httpx.AsyncClient, reporter_headers: Headers
) -> None:
    defaulted = await client.post("/autotrain/feedback", json=WEATHER_FEEDBACK, headers=reporter_headers)
    assert defaulted.status_code == 201
    assert defaulted.json()["user_id"] == "chatbot"
    kept = await client.post("/autotrain/feedback", json=with_(user_id="end-user-42"), headers=reporter_headers)
    assert kept.status_code == 201
    assert kept.json()["user_id"] == "end-user-42"
    assert (await get_feedback(client, reporter_headers, kept.json()["feedback_id"]))["user_id"] == "end-user-42"


async def test_body_over_64_kib_is_413(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    payload = with_(feedback_text="x" * (65 * 1024))
    response = await client.post("/autotrain/feedback", json=payload, headers=admin_headers)
    assert_error(response, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must count the bytes read
        body = json.dumps(payload).encode()
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = await client.post(
        "/autotrain/feedback", content=chunks(), headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert_error(streamed, 413, "payload_too_large")
    assert (await client.get("/autotrain/feedback", headers=admin_headers)).json()["total"] == 0


async def test_body_just_under_64_kib_is_not_413(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    # fits the byte limit, but the text is over 4,000 chars: validation (422) answers, not the size limit
    payload = with_(feedback_text="x" * (60 * 1024))
    response = await client.post("/autotrain/feedback", json=payload, headers=admin_headers)
    assert_error(response, 422, "invalid_input")


@pytest.mark.parametrize("path", ["/autotrain/feedback", "/autotrain/rules", "/autotrain/deployments"])
async def test_list_paging_out_of_range_is_422(client: httpx.AsyncClient, admin_headers: Headers, path: str) -> None:
    for query in ("limit=0", "limit=201", "offset=-1", "limit=abc", "offset=x", "limit=-5"):
        error = assert_error(await client.get(f"{path}?{query}", headers=admin_headers), 422, "invalid_input")
        assert query.split("=")[0] in error["message"], query


@pytest.mark.parametrize("path", ["/autotrain/feedback", "/autotrain/rules", "/autotrain/deployments"])
async def test_list_paging_bounds_accepted(client: httpx.AsyncClient, admin_headers: Headers, path: str) -> None:
    default = await client.get(path, headers=admin_headers)
    assert default.status_code == 200
    assert default.json() == {"items": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": None}
    for query, limit in (("limit=1", 1), ("limit=200", 200)):
        response = await client.get(f"{path}?{query}", headers=admin_headers)
        assert response.status_code == 200, response.text
        assert response.json()["limit"] == limit


async def test_bad_list_filters_are_422(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    assert_error(await client.get("/autotrain/feedback?status=done", headers=admin_headers), 422, "invalid_input")
    assert_error(await client.get("/autotrain/feedback?feedback_type=x", headers=admin_headers), 422, "invalid_input")
    assert_error(await client.get("/autotrain/rules?status=live", headers=admin_headers), 422, "invalid_input")


# ---------------------------------------------------------------------- pagination and filters


async def test_feedback_pagination(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    ids = [await submit(client, admin_headers, with_(feedback_text=f"feedback {n}")) for n in range(1, 6)]
    assert ids == ["FB-1001", "FB-1002", "FB-1003", "FB-1004", "FB-1005"]
    response = await client.get("/autotrain/feedback?limit=2&offset=2", headers=admin_headers)
    assert response.status_code == 200
    page = response.json()  # newest first
    assert [item["feedback_id"] for item in page["items"]] == ["FB-1003", "FB-1002"]
    assert [item["feedback_text"] for item in page["items"]] == ["feedback 3", "feedback 2"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)

    tail = (await client.get("/autotrain/feedback?limit=2&offset=4", headers=admin_headers)).json()
    assert [item["feedback_id"] for item in tail["items"]] == ["FB-1001"]
    assert tail["next_cursor"] is None
    oldest = (await client.get("/autotrain/feedback?limit=2&offset=4&order=oldest", headers=admin_headers)).json()
    assert [item["feedback_id"] for item in oldest["items"]] == ["FB-1005"]
    past = (await client.get("/autotrain/feedback?limit=2&offset=10", headers=admin_headers)).json()
    assert past == {"items": [], "total": 5, "limit": 2, "offset": 10, "next_cursor": None}


async def test_feedback_filters(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    await submit(client, admin_headers, WEATHER_FEEDBACK)  # FB-1001, bug → processed
    await submit(client, admin_headers, HEIGHT_FEEDBACK)  # FB-1002, bug, pending
    await submit(client, admin_headers, PRAISE_FEEDBACK)  # FB-1003, praise, processed at once
    await submit(client, admin_headers, with_(feedback_type="suggestion"))  # FB-1004
    await submit(client, admin_headers, with_(feedback_type="suggestion", feedback_text="Thêm gợi ý phụ kiện"))
    assert (await client.post("/autotrain/generate/FB-1001", headers=admin_headers)).status_code == 200

    async def ids(query: str) -> tuple[list[str], int]:
        response = await client.get(f"/autotrain/feedback?{query}", headers=admin_headers)
        assert response.status_code == 200, response.text
        body = response.json()
        return [item["feedback_id"] for item in body["items"]], body["total"]

    assert await ids("status=processed") == (["FB-1003", "FB-1001"], 2)
    assert await ids("status=pending") == (["FB-1005", "FB-1004", "FB-1002"], 3)
    assert await ids("status=rejected") == ([], 0)
    assert await ids("feedback_type=bug") == (["FB-1002", "FB-1001"], 2)
    assert await ids("feedback_type=praise") == (["FB-1003"], 1)
    assert await ids("feedback_type=suggestion") == (["FB-1005", "FB-1004"], 2)
    assert await ids("status=pending&feedback_type=bug") == (["FB-1002"], 1)
    assert await ids("status=pending&limit=1&offset=1") == (["FB-1004"], 3)


async def test_rule_filters(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    first = await approved_rule(client, admin_headers, WEATHER_FEEDBACK)
    second = await pending_rule(client, admin_headers, HEIGHT_FEEDBACK)
    approved = (await client.get("/autotrain/rules?status=approved", headers=admin_headers)).json()
    assert [rule["rule_id"] for rule in approved["items"]] == [first]
    assert approved["total"] == 1
    pending = (await client.get("/autotrain/rules?status=pending", headers=admin_headers)).json()
    assert [rule["rule_id"] for rule in pending["items"]] == [second]
    by_module = (await client.get("/autotrain/rules?module_name=prompt_v2.txt", headers=admin_headers)).json()
    assert by_module["total"] == 0


# ---------------------------------------------------------------------- rule-file safety


async def test_corrupt_rule_file_is_never_overwritten(
    client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path, database_backend: str
) -> None:
    rule_id = await approved_rule(client, admin_headers)
    original = rules_file(rules_dir).read_bytes()
    corrupt = b'{"version": 1, "rules": [ {"rule": "- broken'
    rules_file(rules_dir).write_bytes(corrupt)
    if database_backend == "postgres":
        # the database is the truth (stored at start from this folder): a corrupt copy is a hand edit, kept aside
        # while the deploy changes the stored version and the folder is written from it (README, Several instances)
        response = await client.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin_headers)
        assert response.status_code == 200, response.text
        assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)
        [kept] = (rules_dir / ".autotrain" / "hand-edits" / "fashion_rules.json").iterdir()
        assert kept.read_bytes() == corrupt
        return

    response = await client.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin_headers)
    assert_error(response, 409, "rule_file_invalid")
    assert rules_file(rules_dir).read_bytes() == corrupt
    assert (await get_rule(client, admin_headers, rule_id))["status"] == "approved"
    assert (await deployments(client, admin_headers))["total"] == 0

    # once the file is repaired, the same rule deploys normally: the failed attempt left nothing stuck
    rules_file(rules_dir).write_bytes(original)
    retried = await client.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin_headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "deployed"
    assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)
    assert (await deployments(client, admin_headers))["total"] == 1


async def test_the_same_complaint_after_a_deploy_strengthens_the_line(
    client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path
) -> None:
    """Not a copy of the deployed line (a no-op): that line, made more explicit, replacing it."""
    first = await deployed_rule(client, admin_headers, WEATHER_FEEDBACK)
    second = await approved_rule(client, admin_headers, with_(feedback_text="Nóng thế mà còn gợi ý áo khoác"))
    assert second != first
    rule = await get_rule(client, admin_headers, second)
    assert rule["old_rule"] == NEW_WEATHER_RULE
    assert rule["new_rule"] != NEW_WEATHER_RULE and NEW_WEATHER_RULE[2:] in rule["new_rule"]
    assert "existing_rule_not_followed" in rule["warnings"] and "duplicate" not in rule["warnings"]
    response = await client.post(f"/autotrain/rules/{second}/deploy", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["deployment"]["outcome"] == "replaced"
    lines = read_rule_lines(rules_dir)
    assert NEW_WEATHER_RULE not in lines and lines.count(rule["new_rule"]) == 1


# ---------------------------------------------------------------------- chatbot reload hook


async def test_deploy_posts_to_the_reload_url(tmp_path: Path, rules_dir: Path, reload_server: ReloadServer) -> None:
    admin = bearer(Role.ADMIN, "U_ADMIN")
    async with custom_client(tmp_path, rules_dir, reload_url=reload_server.url) as http:
        rule_id = await approved_rule(http, admin)
        assert reload_server.requests == []
        response = await http.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin)
        assert response.status_code == 200, response.text
        deployment = response.json()["deployment"]
        assert deployment["reload_status"] == "ok"
        assert deployment["reload_error"] is None

        assert len(reload_server.requests) == 1
        request = reload_server.requests[0]
        assert request["path"] == "/reload"
        assert request["json"]["module_name"] == "fashion_rules.json"
        assert request["json"]["rule_id"] == rule_id
        assert request["json"]["version"] == deployment["version_after"]

        listed = (await http.get("/autotrain/deployments", headers=admin)).json()
        assert listed["items"][0]["reload_status"] == "ok"

        rolled = await http.post(f"/autotrain/rules/{rule_id}/rollback", headers=admin)
        assert rolled.status_code == 200
        assert rolled.json()["deployment"]["reload_status"] == "ok"
        assert len(reload_server.requests) == 2
        assert reload_server.requests[1]["json"]["rule_id"] == rule_id


async def test_failed_reload_is_recorded_not_raised(
    tmp_path: Path, rules_dir: Path, reload_server: ReloadServer
) -> None:
    reload_server.status = 500
    admin = bearer(Role.ADMIN, "U_ADMIN")
    async with custom_client(tmp_path, rules_dir, reload_url=reload_server.url) as http:
        rule_id = await approved_rule(http, admin)
        response = await http.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "deployed"
        deployment = response.json()["deployment"]
        assert deployment["reload_status"] == "failed"
        assert "500" in deployment["reload_error"]
        assert len(reload_server.requests) == 1

        listed = (await http.get("/autotrain/deployments", headers=admin)).json()
        assert listed["items"][0]["reload_status"] == "failed"
        assert "500" in listed["items"][0]["reload_error"]
        assert (await http.get(f"/autotrain/rules/{rule_id}", headers=admin)).json()["status"] == "deployed"
    assert NEW_WEATHER_RULE in read_rule_lines(rules_dir)


async def test_unreachable_reload_url_is_recorded(tmp_path: Path, rules_dir: Path) -> None:
    admin = bearer(Role.ADMIN, "U_ADMIN")
    async with custom_client(tmp_path, rules_dir, reload_url="http://127.0.0.1:9/reload") as http:
        rule_id = await approved_rule(http, admin)
        response = await http.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["deployment"]["reload_status"] == "failed"
        assert response.json()["deployment"]["reload_error"]


async def test_without_reload_url_the_reload_is_skipped(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    rule_id = await approved_rule(client, admin_headers)
    response = await client.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin_headers)
    assert response.json()["deployment"]["reload_status"] == "skipped"


# ---------------------------------------------------------------------- auto-generate on submit


async def test_auto_generate_on_submit(tmp_path: Path, rules_dir: Path) -> None:
    reporter = bearer(Role.REPORTER, "chatbot")
    async with custom_client(tmp_path, rules_dir, auto_generate=True) as http:
        created = await http.post("/autotrain/feedback", json=WEATHER_FEEDBACK, headers=reporter)
        assert created.status_code == 201
        # generate waits for the background generation instead of starting a second one
        rule = await http.post("/autotrain/generate/FB-1001", headers=reporter)
        assert rule.status_code == 200, rule.text
        assert rule.json()["rule_id"] == "RUL-1001"
        assert rule.json()["new_rule"] == NEW_WEATHER_RULE
        rules = (await http.get("/autotrain/rules", headers=reporter)).json()
        assert rules["total"] == 1


# ---------------------------------------------------------------------- health, status, OpenAPI


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_status_counts(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    await deployed_rule(client, admin_headers)
    await submit(client, admin_headers, HEIGHT_FEEDBACK)
    response = await client.get("/autotrain/status", headers=admin_headers)
    assert response.status_code == 200
    status = response.json()
    assert status["rules_by_status"].get("deployed") == 1
    assert status["pending_feedback"] == 1
    assert status["deployments_total"] == 1
    assert status["deployed_today"] == 1
    assert status["rollbacks_total"] == 0
    assert len(status["last_deployments"]) == 1


async def test_openapi_lists_every_endpoint(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/autotrain/feedback": {"get", "post"},
        "/autotrain/feedback/{feedback_id}": {"get"},
        "/autotrain/generate/{feedback_id}": {"post"},
        "/autotrain/rules": {"get"},
        "/autotrain/rules/{rule_id}": {"get"},
        "/autotrain/rules/{rule_id}/approve": {"post"},
        "/autotrain/rules/{rule_id}/reject": {"post"},
        "/autotrain/rules/{rule_id}/deploy": {"post"},
        "/autotrain/rules/{rule_id}/rollback": {"post"},
        "/autotrain/deployments": {"get"},
        "/autotrain/status": {"get"},
        "/autotrain/run-all": {"post"},
        "/healthz": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    assert "201" in paths["/autotrain/feedback"]["post"]["responses"]


async def test_wrong_method_is_405_in_error_shape(client: httpx.AsyncClient, admin_headers: Headers) -> None:
    assert_error(await client.delete("/autotrain/feedback", headers=admin_headers), 405, "method_not_allowed")
