"""Load (issue 6, "Concurrency"): many concurrent callers over HTTP (the real ASGI app, a real SQLite file,
real rule files): nothing lost, nothing duplicated, counts exact, refusals are 409 and never 500.

Two processes deploying to one file at once is tests/test_concurrency.py::test_two_processes_deploying_to_one_file,
and concurrent deploys inside the service layer are in that file too; these tests add the HTTP edge and volume.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from autotrain.policy import Role
from bot.api import create_app
from tests.conftest import bearer, make_settings, read_rule_lines

Headers = dict[str, str]
FEEDBACKS = 200
RULES = 20
CALLERS = 50


def feedback_payload(n: int) -> dict[str, Any]:
    return {
        "user_id": f"load-user-{n}",
        "query": f"gợi ý quần jean size {n}",
        "ai_response": "Bạn thử mẫu này nhé",
        "feedback_text": f"Sản phẩm tải số {n} không còn size",
        "feedback_type": "bug",
    }


async def test_200_concurrent_feedback_submissions_are_all_stored_once(
    client: httpx.AsyncClient, reporter_headers: Headers
) -> None:
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(
            client.post("/autotrain/feedback", json=feedback_payload(n), headers=reporter_headers)
            for n in range(FEEDBACKS)
        )
    )
    elapsed = time.perf_counter() - started
    figures = f"{FEEDBACKS} concurrent submissions in {elapsed:.2f} s"

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: FEEDBACKS}, f"{figures}: statuses {dict(statuses)}"
    bodies = [response.json() for response in responses]
    ids = [body["feedback_id"] for body in bodies]
    assert len(set(ids)) == FEEDBACKS, f"{figures}: {FEEDBACKS - len(set(ids))} duplicated ids"
    assert set(ids) == {f"FB-{1001 + n}" for n in range(FEEDBACKS)}, figures
    for n, body in enumerate(bodies):  # each answer is the record of its own request
        assert (body["user_id"], body["feedback_text"]) == (f"load-user-{n}", feedback_payload(n)["feedback_text"])

    admin = bearer(Role.ADMIN, "U_ADMIN")
    listed = (await client.get("/autotrain/feedback", params={"limit": 200}, headers=admin)).json()
    assert listed["total"] == FEEDBACKS, f"{figures}: {listed['total']} stored"
    assert sorted(item["feedback_id"] for item in listed["items"]) == sorted(ids)
    assert Counter(item["feedback_text"] for item in listed["items"]) == Counter(
        feedback_payload(n)["feedback_text"] for n in range(FEEDBACKS)
    )
    status = (await client.get("/autotrain/status", headers=admin)).json()
    assert status["feedback_by_status"]["pending"] == FEEDBACKS, figures
    print(figures)


async def test_200_concurrent_submissions_with_auto_generate_make_one_rule_each(
    tmp_path: Path, rules_dir: Path
) -> None:
    """As `autotrain serve` runs by default: each submission starts a generation in the background."""
    app = create_app(make_settings(tmp_path, rules_dir, auto_generate=True))
    reporter = bearer(Role.REPORTER, "chatbot")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(
                    http.post("/autotrain/feedback", json=feedback_payload(n), headers=reporter)
                    for n in range(FEEDBACKS)
                )
            )
            answered = time.perf_counter() - started
            await app.state.runtime.service.drain()
            elapsed = time.perf_counter() - started
            figures = f"{FEEDBACKS} submissions answered in {answered:.2f} s, all generated in {elapsed:.2f} s"
            assert Counter(r.status_code for r in responses) == {201: FEEDBACKS}, figures

            admin = bearer(Role.ADMIN, "U_ADMIN")
            rules = (await http.get("/autotrain/rules", params={"limit": 200}, headers=admin)).json()
            assert rules["total"] == FEEDBACKS, f"{figures}: {rules['total']} rules"
            assert Counter(rule["feedback_id"] for rule in rules["items"]) == {
                r.json()["feedback_id"]: 1 for r in responses
            }, figures
            status = (await http.get("/autotrain/status", headers=admin)).json()
            assert status["feedback_by_status"] == {"pending": 0, "processing": 0, "processed": 200, "rejected": 0}
            generation = status["generation"]
            assert (generation["attempts"], generation["succeeded"], generation["failed"]) == (200, 200, 0), figures
    print(figures)


async def pending_rule(client: httpx.AsyncClient, headers: Headers, n: int) -> dict[str, Any]:
    submitted = await client.post("/autotrain/feedback", json=feedback_payload(n), headers=headers)
    assert submitted.status_code == 201, submitted.text
    generated = await client.post(f"/autotrain/generate/{submitted.json()['feedback_id']}", headers=headers)
    assert generated.status_code == 200, generated.text
    return generated.json()


async def test_50_concurrent_approve_and_deploy_callers_across_20_rules_deploy_each_once(
    client: httpx.AsyncClient, admin_headers: Headers, rules_dir: Path
) -> None:
    rules = [await pending_rule(client, admin_headers, n) for n in range(RULES)]
    assert {rule["module_name"] for rule in rules} == {"fashion_rules.json"}
    assert len({rule["new_rule"] for rule in rules}) == RULES
    path = rules_dir / "fashion_rules.json"
    version_before = json.loads(path.read_text(encoding="utf-8"))["version"]
    lines_before = read_rule_lines(rules_dir)

    # Each caller works on one rule (2 or 3 callers per rule) with one of three request sequences; every
    # sequence ends with a deploy after an approve, so every rule must end up deployed, exactly once.
    patterns = (("approve", "deploy"), ("deploy", "approve", "deploy"), ("approve", "approve", "deploy"))
    callers = [(rules[k % RULES]["rule_id"], patterns[k % len(patterns)]) for k in range(CALLERS)]
    random.Random(6).shuffle(callers)
    answers: list[tuple[str, str, int, str | None]] = []

    async def caller(rule_id: str, steps: tuple[str, ...]) -> None:
        for step in steps:
            response = await client.post(f"/autotrain/rules/{rule_id}/{step}", headers=admin_headers)
            code = response.json().get("error", {}).get("code") if response.status_code != 200 else None
            answers.append((rule_id, step, response.status_code, code))

    started = time.perf_counter()
    await asyncio.gather(*(caller(rule_id, steps) for rule_id, steps in callers))
    elapsed = time.perf_counter() - started

    statuses = Counter((step, status) for _, step, status, _ in answers)
    figures = f"{CALLERS} callers, {len(answers)} requests in {elapsed:.2f} s: {dict(statuses)}"
    assert {status for _, _, status, _ in answers} <= {200, 409}, figures  # never 500 (nor anything else)
    assert {code for _, _, status, code in answers if status == 409} <= {"transition_refused"}, figures
    assert statuses[("approve", 200)] == RULES, figures
    assert statuses[("deploy", 200)] == RULES, figures
    deployed_by_rule = Counter(rule_id for rule_id, step, status, _ in answers if (step, status) == ("deploy", 200))
    assert deployed_by_rule == {rule["rule_id"]: 1 for rule in rules}, figures
    assert len(answers) == sum(len(steps) for _, steps in callers)

    lines = read_rule_lines(rules_dir)
    for rule in rules:
        assert lines.count(rule["new_rule"]) == 1, f"{figures}: {rule['rule_id']} held {lines.count(rule['new_rule'])}x"
    assert len(lines) == len(set(lines)) == len(lines_before) + RULES, figures
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == version_before + RULES, figures

    listed = (await client.get("/autotrain/deployments", params={"limit": 200}, headers=admin_headers)).json()
    assert listed["total"] == RULES, f"{figures}: {listed['total']} deployments"
    assert sorted(d["rule_id"] for d in listed["items"]) == sorted(rule["rule_id"] for rule in rules)
    for rule in rules:
        current = (await client.get(f"/autotrain/rules/{rule['rule_id']}", headers=admin_headers)).json()
        assert current["status"] == "deployed", figures
    status = (await client.get("/autotrain/status", headers=admin_headers)).json()
    assert (status["deployments_total"], status["rules_by_status"]["deployed"]) == (RULES, RULES), figures
    print(figures)
