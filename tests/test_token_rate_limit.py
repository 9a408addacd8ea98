"""The per-token feedback rate limit (AUTOTRAIN_TOKEN_RATE_LIMIT, issue 11): one token cannot flood by naming
a new `user_id` in every feedback. Over HTTP, each test with its own server and a low limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from autotrain.policy import Role
from autotrain.settings import Settings
from bot.api import create_app
from tests.conftest import WEATHER_FEEDBACK, bearer, make_settings

Headers = dict[str, str]
CHATBOT = bearer(Role.REPORTER, "chatbot")
OTHER_CLIENT = bearer(Role.REPORTER, "other-chatbot")


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            yield http


async def post(http: httpx.AsyncClient, n: int, headers: Headers, **changes: Any) -> httpx.Response:
    body = {**WEATHER_FEEDBACK, "feedback_text": f"{WEATHER_FEEDBACK['feedback_text']} (#{n})", **changes}
    return await http.post("/autotrain/feedback", json=body, headers=headers)


async def stored_count(http: httpx.AsyncClient) -> int:
    response = await http.get("/autotrain/feedback?limit=200", headers=bearer(Role.ADMIN, "U_ADMIN"))
    assert response.status_code == 200
    return len(response.json()["items"])


async def test_a_token_is_limited_whatever_user_ids_it_names(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir, token_rate_limit="3/hour")
    async with served(settings) as http:
        for n in range(3):
            answer = await post(http, n, CHATBOT, user_id=f"end-user-{n}")
            assert answer.status_code == 201, answer.text
        refused = await post(http, 3, CHATBOT, user_id="end-user-3")
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert set(body) == {"error"} and body["error"]["code"] == "rate_limited"
        assert "chatbot" in body["error"]["message"]
        retry_after = refused.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit()
        assert 1 <= int(retry_after) <= 3600
        assert await stored_count(http) == 3  # the refused one was not stored

        # another token has its own budget
        answer = await post(http, 4, OTHER_CLIENT, user_id="end-user-3")
        assert answer.status_code == 201, answer.text


async def test_the_per_user_limit_still_applies_under_the_token_limit(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir, token_rate_limit="5/hour", feedback_rate_limit="2/hour")
    async with served(settings) as http:
        assert (await post(http, 0, CHATBOT, user_id="u1")).status_code == 201
        assert (await post(http, 1, CHATBOT, user_id="u1")).status_code == 201
        assert (await post(http, 2, CHATBOT, user_id="u1")).status_code == 429  # u1's own limit
        assert (await post(http, 3, CHATBOT, user_id="u2")).status_code == 201
        assert (await post(http, 4, CHATBOT, user_id="u3")).status_code == 201
        # five hits on the token now: the next is refused for the token, though u4 is new
        refused = await post(http, 5, CHATBOT, user_id="u4")
        assert refused.status_code == 429
        assert "token" in refused.json()["error"]["message"]
        assert await stored_count(http) == 4


def test_the_token_rate_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).token_rate_limit == "600/hour"
    monkeypatch.setenv("AUTOTRAIN_TOKEN_RATE_LIMIT", "100/minute")
    assert Settings(_env_file=None).token_rate_limit == "100/minute"
    monkeypatch.setenv("AUTOTRAIN_TOKEN_RATE_LIMIT", "ten per hour")
    with pytest.raises(ValidationError, match="AUTOTRAIN_TOKEN_RATE_LIMIT"):
        Settings(_env_file=None)
    monkeypatch.setenv("AUTOTRAIN_TOKEN_RATE_LIMIT", "0/hour")
    with pytest.raises(ValidationError, match="at least 1"):
        Settings(_env_file=None)
