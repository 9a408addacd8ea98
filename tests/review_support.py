"""Helpers for the review tests over HTTP (edit, flags, warning details): the real app on a real SQLite file
and real rule files in a temp folder, as the `app` and `client` fixtures of tests/conftest.py build it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from autotrain.models import AuditEntry, Feedback, GenerationInfo, Rule, RuleProposal
from autotrain.policy import Role
from autotrain.ports import GenerationResult, RuleGenerator
from autotrain.settings import Settings
from bot.api import create_app
from bot.runtime import open_runtime
from tests.conftest import bearer

ADMIN = bearer(Role.ADMIN, "U_ADMIN")
REVIEWER = bearer(Role.ADMIN, "U_REVIEWER")
REPORTER = bearer(Role.REPORTER, "chatbot")

Headers = dict[str, str]


class ProposingGenerator:
    """A rule generator (the outside service Claude is) that proposes one given rule for any feedback."""

    name = "proposing"
    quotes_feedback = False

    def __init__(self, proposal: RuleProposal) -> None:
        self.proposal = proposal

    async def generate(
        self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]], *, recurrence: Rule | None = None
    ) -> GenerationResult:
        return GenerationResult(proposal=self.proposal, info=GenerationInfo(generator=self.name))


@asynccontextmanager
async def serving(
    settings: Settings, generator: RuleGenerator | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app over HTTP, its lifespan run (the store opened, then closed: a restart is a second `serving`);
    with `generator`, that one instead of the offline generator."""

    async def opened(given: Settings) -> Any:
        return await open_runtime(given, reconcile=True, generator=generator)

    app = create_app(settings, open_runtime_fn=opened if generator is not None else None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as client:
            yield app, client


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """The response is the API's error of that status and code; its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


async def submit(client: httpx.AsyncClient, payload: dict[str, Any], headers: Headers = REPORTER) -> str:
    response = await client.post("/autotrain/feedback", json=payload, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["feedback_id"]


async def pending_rule(client: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    feedback_id = await submit(client, payload)
    response = await client.post(f"/autotrain/generate/{feedback_id}", headers=REPORTER)
    assert response.status_code == 200, response.text
    return response.json()


async def rule_now(client: httpx.AsyncClient, rule_id: str) -> dict[str, Any]:
    """The rule as GET answers it, without the parts only GET has (effect, evaluation)."""
    response = await client.get(f"/autotrain/rules/{rule_id}", headers=REPORTER)
    assert response.status_code == 200, response.text
    body = response.json()
    body.pop("effect")
    body.pop("evaluation")
    return body


async def audit_of(app: FastAPI, subject_id: str) -> list[AuditEntry]:
    page = await app.state.runtime.store.list_audit(subject_id=subject_id, limit=200, offset=0)
    return list(page.items)


async def edit(client: httpx.AsyncClient, rule_id: str, body: Any, headers: Headers = ADMIN) -> httpx.Response:
    return await client.patch(f"/autotrain/rules/{rule_id}", json=body, headers=headers)
