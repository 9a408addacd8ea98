"""Events API: the App Home dashboard, published on app_home_opened and refreshed after actions."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from autotrain.models import RuleStatus
from autotrain.settings import Settings
from tests.conftest import HEIGHT_FEEDBACK, WEATHER_FEEDBACK, submit
from tests.slack_support import ADMIN_USER, OTHER_USER, SlackSimulator


def home_opened(user: str, tab: str = "home") -> dict[str, Any]:
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": f"D{user}",
        "tab": tab,
        "event_ts": f"{time.time():.6f}",
    }


def view_of(params: dict[str, Any]) -> dict[str, Any]:
    view = params["view"]
    return json.loads(view) if isinstance(view, str) else view


def block_texts(view: dict[str, Any]) -> str:
    texts = []
    for block in view["blocks"]:
        if isinstance(block.get("text"), dict):
            texts.append(block["text"]["text"])
        for element in block.get("elements", []) + block.get("fields", []):
            if isinstance(element, dict) and isinstance(element.get("text"), str):
                texts.append(element["text"])
    return "\n".join(texts)


async def test_app_home_opened_publishes_the_dashboard(slack: SlackSimulator) -> None:
    await submit(slack.service, WEATHER_FEEDBACK)
    await submit(slack.service, HEIGHT_FEEDBACK)
    await slack.service.drain()
    response = await slack.event(home_opened(OTHER_USER))
    assert response.status_code == 200
    (call,) = await slack.api.wait_for("views.publish")
    assert call.response["ok"] is True
    assert call.params["user_id"] == OTHER_USER
    view = view_of(call.params)
    assert view["type"] == "home"
    text = block_texts(view)
    assert "Waiting for review (2)" in text
    assert "*RUL-1001*" in text and "*RUL-1002*" in text
    assert "*Alert thresholds*" in text
    assert "pending feedback > " in text
    assert "generation error rate > " in text
    assert "deploys per day > " in text
    assert "average approval time > " in text


async def test_home_shows_the_configured_thresholds(slack: SlackSimulator) -> None:
    await slack.event(home_opened(ADMIN_USER))
    (call,) = await slack.api.wait_for("views.publish")
    text = block_texts(view_of(call.params))
    defaults = Settings(_env_file=None)
    assert f"pending feedback > {defaults.alert_pending_max}" in text
    assert f"deploys per day > {defaults.alert_deploys_per_day_max}" in text
    assert "No rules waiting" in text


async def test_approve_click_refreshes_the_home_of_who_opened_it(slack: SlackSimulator) -> None:
    await submit(slack.service, WEATHER_FEEDBACK)
    await slack.service.drain()
    await slack.api.wait_for("chat.postMessage")  # the card
    await slack.event(home_opened(ADMIN_USER))
    (first,) = await slack.api.wait_for("views.publish")
    assert "*RUL-1001*" in block_texts(view_of(first.params))

    await slack.click("rule_approve", "RUL-1001")
    calls = await slack.api.wait_for("views.publish", 2)
    second = calls[1]
    assert second.params["user_id"] == ADMIN_USER
    assert second.response["ok"] is True
    text = block_texts(view_of(second.params))
    assert "Waiting for review (0)" in text
    assert "*RUL-1001*" not in text
    assert (await slack.service.get_rule("RUL-1001")).status is RuleStatus.APPROVED


async def test_messages_tab_publishes_nothing(slack: SlackSimulator) -> None:
    response = await slack.event(home_opened(OTHER_USER, tab="messages"))
    assert response.status_code == 200
    # a later home event is published; the messages one never is
    await slack.event(home_opened(ADMIN_USER))
    await slack.api.wait_for("views.publish")
    await asyncio.sleep(0.2)
    calls = slack.api.calls_to("views.publish")
    assert [call.params["user_id"] for call in calls] == [ADMIN_USER]
