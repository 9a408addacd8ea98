"""The chatbot's reload call (issue 13): signed like the webhooks, carrying the version and ETag the rule-set
endpoint serves; a failed call is logged, retried with backoff, shown on the card, told to the deploying
admin, and alerted when it keeps failing. A receiver on loopback plays the chatbot; time is a FakeClock."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from autotrain.models import RuleStatus
from bot.runtime import Runtime
from bot.slack import blocks
from tests.conftest import ADMIN, WEATHER_FEEDBACK, make_settings, submit
from tests.fakes.clock import FakeClock
from tests.fakes.monitoring import Opener, RecordingSink
from tests.test_webhooks import Receiver, receivers, verifies  # noqa: F401  (fixture)

SECRET = "reload-secret-0123456789"


@pytest.fixture
async def chatbot(
    tmp_path: Path,
    rules_dir: Path,
    open_monitored: Opener,
    receivers: Callable[[], Receiver],  # noqa: F811
) -> AsyncIterator[tuple[Runtime, RecordingSink, FakeClock, Receiver]]:
    receiver = receivers()
    clock = FakeClock()
    settings = make_settings(tmp_path, rules_dir, reload_url=receiver.url, reload_secret=SECRET)
    runtime, sink = await open_monitored(settings, clock)
    yield runtime, sink, clock, receiver


async def deployed(runtime: Runtime, n: int = 1, **changes: Any) -> Any:
    feedback = await submit(runtime.service, {**WEATHER_FEEDBACK, "feedback_text": f"Góp ý {n}: nóng mà áo khoác"})
    rule = await runtime.service.generate(feedback.feedback_id, ADMIN)
    if changes:
        await runtime.service.edit(rule.rule_id, ADMIN, module_name="fashion_rules.json", **changes)
    await runtime.service.approve(rule.rule_id, ADMIN)
    return await runtime.service.deploy(rule.rule_id, ADMIN)


async def test_the_reload_is_signed_and_names_the_version_the_rule_sets_serve(chatbot: Any) -> None:
    runtime, _, _, receiver = chatbot
    result = await deployed(runtime)
    assert result.deployment.reload_status == "ok"
    [call] = receiver.requests
    assert verifies(call, SECRET)  # HMAC-SHA256 over "<timestamp>.<body>", the webhooks' headers
    assert call.headers["x-autotrain-event"] == "rules_changed"
    body = json.loads(call.body)
    ruleset = await runtime.service.ruleset("fashion_rules.json", ADMIN)
    assert body == {
        "event": "rules_changed",
        "module_name": "fashion_rules.json",
        "rule_id": result.rule.rule_id,
        "version": ruleset.version,
        "etag": ruleset.etag,
    }
    assert ruleset.version == result.deployment.version_after


async def test_a_failed_reload_is_retried_with_backoff_alerted_and_shown(
    chatbot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, sink, clock, receiver = chatbot
    receiver.status = 503
    caplog.set_level(logging.WARNING)
    result = await deployed(runtime)
    assert result.rule.status is RuleStatus.DEPLOYED  # the deploy stands
    assert result.deployment.reload_status == "failed" and "HTTP 503" in (result.deployment.reload_error or "")
    assert any("reload after" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)

    assert await runtime.reloads.retry_due() == 0 and len(receiver.requests) == 1  # not due before 30 s
    for wait, calls in ((30, 2), (60, 3)):  # 30 s, then 60 s: doubling
        clock.advance(wait - 1)
        await runtime.reloads.retry_due()
        assert len(receiver.requests) == calls - 1, wait
        clock.advance(1)
        await runtime.reloads.retry_due()
        assert len(receiver.requests) == calls, wait
    [stored] = (await runtime.service.list_deployments(rule_id=result.rule.rule_id)).items
    assert (stored.reload_status, stored.reload_attempts) == ("failed", 3)
    _, card = blocks.rule_card(result.rule, None, stored, canary_percent=10)
    assert "The chatbot has not reloaded this change: HTTP 503" in str(card) and "3 calls so far" in str(card)

    fired = [e for e in await runtime.monitor.check_alerts() if e.name == "chatbot_reload"]
    assert [e.kind.value for e in fired] == ["fired"]
    assert [a.name for a in sink.alerts] == ["chatbot_reload"]

    receiver.status = 200  # the chatbot is back
    clock.advance(120)
    assert await runtime.reloads.retry_due() == 1
    assert verifies(receiver.requests[-1], SECRET)
    [stored] = (await runtime.service.list_deployments(rule_id=result.rule.rule_id)).items
    assert (stored.reload_status, stored.reload_retry_at) == ("ok", None)
    resolved = [e for e in await runtime.monitor.check_alerts() if e.name == "chatbot_reload"]
    assert [e.kind.value for e in resolved] == ["resolved"]
    clock.advance(timedelta(hours=2).total_seconds())
    assert await runtime.reloads.retry_due() == 0 and len(receiver.requests) == 4  # nothing left to retry


async def test_a_newer_change_of_the_file_supersedes_a_failed_reload(chatbot: Any) -> None:
    runtime, _, clock, receiver = chatbot
    receiver.status = 500
    first = await deployed(runtime, 1)
    receiver.status = 200
    second = await deployed(runtime, 2, new_rule="- Khi trời nóng: gợi ý áo thun cotton", old_rule="")
    assert second.deployment.reload_status == "ok"
    clock.advance(3600)
    assert await runtime.reloads.retry_due() == 0  # the chatbot has the newest version: no stale call
    assert [json.loads(r.body)["rule_id"] for r in receiver.requests] == [first.rule.rule_id, second.rule.rule_id]


async def test_the_admin_who_deploys_from_slack_is_told_the_reload_failed(
    tmp_path: Path, rules_dir: Path, slack_api: Any
) -> None:
    """The card's Deploy button: the ephemeral says "deployed", and that the chatbot has not reloaded yet."""
    import httpx

    from bot.api import create_app
    from tests.slack_support import ADMIN_USER, SlackSimulator, slack_settings
    from tests.test_slack_actions import new_card, wait_for_ephemerals
    from tests.test_webhooks import closed_port_url

    settings = slack_settings(tmp_path, rules_dir, slack_api, reload_url=closed_port_url(), reload_secret=SECRET)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://autotrain.test") as http:
            slack = SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)
            rule_id, _ = await new_card(slack)
            await slack.click("rule_approve", rule_id)
            # as a person would: Deploy is clicked once the approval has happened (listeners run after the ack)
            for _attempt in range(250):
                if (await slack.service.get_rule(rule_id)).status == "approved":
                    break
                await asyncio.sleep(0.02)
            await slack.click("rule_deploy", rule_id)
            notes = await wait_for_ephemerals(slack, ADMIN_USER, 1)
    assert f"{rule_id} deployed to `fashion_rules.json`" in notes[-1]
    assert "⚠️ The chatbot's reload failed (ConnectError" in notes[-1]
    assert "retried automatically" in notes[-1]


async def test_a_reload_that_is_off_is_skipped_not_an_error(
    tmp_path: Path, rules_dir: Path, slack_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No AUTOTRAIN_RELOAD_URL (the README's default start): the deployment says `skipped` with no error, and
    the REST API, status, /metrics, the alerts, the audit log and the card agree that nothing failed."""
    import httpx

    from bot.api import create_app
    from tests.conftest import bearer
    from tests.slack_support import SlackSimulator, slack_settings
    from tests.test_slack_actions import new_card

    caplog.set_level(logging.INFO)
    settings = slack_settings(tmp_path, rules_dir, slack_api)
    assert settings.reload_url is None
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://autotrain.test") as http:
            slack = SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)
            rule_id, _ = await new_card(slack)
            admin = bearer()
            assert (await http.post(f"/autotrain/rules/{rule_id}/approve", headers=admin)).status_code == 200
            deployed = await http.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin)
            assert deployed.status_code == 200, deployed.text
            shown = deployed.json()["deployment"]
            assert (shown["reload_status"], shown["reload_error"]) == ("skipped", None)
            [listed] = (await http.get("/autotrain/deployments", headers=admin)).json()["items"]
            assert (listed["reload_status"], listed["reload_error"]) == ("skipped", None)
            [last] = (await http.get("/autotrain/status", headers=admin)).json()["last_deployments"]
            assert (last["reload_status"], last["reload_error"]) == ("skipped", None)
            metrics = await http.get("/metrics", headers=admin)  # has no reload figure: nothing to disagree
            assert metrics.status_code == 200 and "reload" not in metrics.text

            runtime = app.state.runtime
            assert (await runtime.monitor.metrics()).failing_reloads == []
            assert [e for e in await runtime.monitor.check_alerts() if e.name == "chatbot_reload"] == []
            await runtime.service.drain()
            updates = await slack_api.wait_for("chat.update", 2)  # approved, then deployed
    with sqlite3.connect(settings.database_path) as db:
        actions = [row[0] for row in db.execute("SELECT action FROM audit_log WHERE subject_id = ?", (rule_id,))]
    assert "deploy" in " ".join(actions) and "reload_failed" not in actions
    card = str(updates[-1].params)
    assert "Deployed" in card or "deployed" in card
    assert "reload failed" not in card and "not reloaded" not in card  # at most a neutral "no reload"
    assert [r for r in caplog.records if "reload" in r.getMessage() and r.levelno >= logging.WARNING] == []
