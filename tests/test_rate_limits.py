"""The feedback rate limit (AUTOTRAIN_FEEDBACK_RATE_LIMIT), per end user, on the REST API and in Slack.

Each test builds its own server with a low limit (the shared fixtures set a very high one), runs its lifespan
like the `app` fixture, and talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
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
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import OTHER_USER, SlackSimulator, slack_settings

Headers = dict[str, str]
REPORTER = bearer(Role.REPORTER, "chatbot")


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            yield http, app


def feedback(n: int, **changes: Any) -> dict[str, Any]:
    return {**WEATHER_FEEDBACK, "feedback_text": f"{WEATHER_FEEDBACK['feedback_text']} (#{n})", **changes}


async def post(http: httpx.AsyncClient, body: dict[str, Any], headers: Headers = REPORTER) -> httpx.Response:
    return await http.post("/autotrain/feedback", json=body, headers=headers)


async def stored(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get("/autotrain/feedback?limit=200", headers=bearer(Role.ADMIN, "U_ADMIN"))
    assert response.status_code == 200
    return response.json()["items"]


def assert_rate_limited(response: httpx.Response, window_seconds: int) -> int:
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["message"]
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit(), retry_after  # integer seconds
    assert 0 < int(retry_after) <= window_seconds
    return int(retry_after)


# ---------------------------------------------------------------------- REST API


async def test_fourth_feedback_of_one_end_user_in_an_hour_is_429(tmp_path: Path, rules_dir: Path) -> None:
    async with served(make_settings(tmp_path, rules_dir, feedback_rate_limit="3/hour")) as (http, _):
        for n in range(3):
            assert (await post(http, feedback(n, user_id="end-user-1"))).status_code == 201
        refused = await post(http, feedback(4, user_id="end-user-1"))
        retry_after = assert_rate_limited(refused, 3600)
        assert retry_after > 3500  # the oldest of the three was seconds ago: about an hour to wait
        assert "try again" in refused.json()["error"]["message"]
        items = await stored(http)
        assert len(items) == 3
        assert all("(#4)" not in item["feedback_text"] for item in items)

        # another end user of the same chatbot (same token) is not held back
        other = await post(http, feedback(5, user_id="end-user-2"))
        assert other.status_code == 201, other.text
        assert other.json()["user_id"] == "end-user-2"
        # and the first one is still refused: a refusal does not reset or extend anything it should not
        assert_rate_limited(await post(http, feedback(6, user_id="end-user-1")), 3600)
        assert len(await stored(http)) == 4


async def test_without_user_id_the_token_subject_is_the_key(tmp_path: Path, rules_dir: Path) -> None:
    chatbot_a = bearer(Role.REPORTER, "chatbot-a")
    chatbot_b = bearer(Role.REPORTER, "chatbot-b")
    async with served(make_settings(tmp_path, rules_dir, feedback_rate_limit="3/hour")) as (http, _):
        for n in range(3):
            assert (await post(http, feedback(n), chatbot_a)).status_code == 201
        assert_rate_limited(await post(http, feedback(3), chatbot_a), 3600)
        # another subject has its own count, and so does a named end user sent by the limited subject
        assert (await post(http, feedback(4), chatbot_b)).status_code == 201
        named = await post(http, feedback(5, user_id="someone-else"), chatbot_a)
        assert named.status_code == 201, named.text
        users = sorted(item["user_id"] for item in await stored(http))
        assert users == ["chatbot-a"] * 3 + ["chatbot-b", "someone-else"]


async def test_invalid_feedback_does_not_use_up_the_limit(tmp_path: Path, rules_dir: Path) -> None:
    async with served(make_settings(tmp_path, rules_dir, feedback_rate_limit="3/hour")) as (http, _):
        for _ in range(5):
            bad = await post(http, feedback(0, user_id="end-user-1", feedback_text=""))
            assert bad.status_code == 422
        for n in range(3):
            assert (await post(http, feedback(n, user_id="end-user-1"))).status_code == 201


async def test_the_limit_resets_after_its_window(tmp_path: Path, rules_dir: Path) -> None:
    async with served(make_settings(tmp_path, rules_dir, feedback_rate_limit="2/second")) as (http, _):
        for n in range(2):
            assert (await post(http, feedback(n, user_id="end-user-1"))).status_code == 201
        assert_rate_limited(await post(http, feedback(2, user_id="end-user-1")), 1)
        await asyncio.sleep(1.1)  # the only real wait: one short window
        again = await post(http, feedback(3, user_id="end-user-1"))
        assert again.status_code == 201, again.text
        assert len(await stored(http)) == 3


# ---------------------------------------------------------------------- Slack


async def test_fourth_slack_feedback_gets_a_try_again_note_and_is_not_stored(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    settings = slack_settings(tmp_path, rules_dir, slack_api, feedback_rate_limit="3/hour", auto_generate=False)
    async with served(settings) as (http, app):
        slack = SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)
        for n in range(4):
            response = await slack.submit_feedback(
                query="áo khoác cho trời 35 độ", feedback_text=f"trời nóng mà gợi ý áo khoác #{n}", user=OTHER_USER
            )
            assert response.status_code == 200
            # the form closes (no field errors): the limit is told in a note, not on a form that is gone
            assert not response.content or "errors" not in response.json()
            await slack_api.wait_for("chat.postEphemeral", n + 1)
        notes = [call.params for call in slack_api.calls_to("chat.postEphemeral")]
        assert all(note["user"] == OTHER_USER for note in notes)
        assert all("FB-100" in note["text"] for note in notes[:3]), notes
        assert "try again" in notes[3]["text"].lower(), notes[3]
        assert "FB-" not in notes[3]["text"]
        feedbacks = (await slack.service.list_feedback()).items
        assert len(feedbacks) == 3
        assert all("#3" not in f.feedback_text for f in feedbacks)

        # another Slack user is not held back
        await slack.submit_feedback(query="áo", feedback_text="một người khác", user="UANOTHER")
        (*_, last) = await slack_api.wait_for("chat.postEphemeral", 5)
        assert last.params["user"] == "UANOTHER" and "FB-1004" in last.params["text"]
        assert (await slack.service.list_feedback()).total == 4


# ---------------------------------------------------------------------- settings


def test_invalid_rate_limit_setting_is_refused(tmp_path: Path, rules_dir: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(tmp_path, rules_dir, feedback_rate_limit="ten per hour")
    message = str(raised.value)
    assert "ten per hour" in message and "10/hour" in message  # what was wrong, and what it should look like


def test_invalid_rate_limit_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTRAIN_FEEDBACK_RATE_LIMIT", "ten per hour")
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)
    assert "ten per hour" in str(raised.value)
    monkeypatch.setenv("AUTOTRAIN_FEEDBACK_RATE_LIMIT", "5/minute")
    assert Settings(_env_file=None).feedback_rate_limit == "5/minute"


def test_default_is_ten_per_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOTRAIN_FEEDBACK_RATE_LIMIT", raising=False)
    assert Settings(_env_file=None).feedback_rate_limit == "10/hour"
