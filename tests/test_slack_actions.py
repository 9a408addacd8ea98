"""Rule-card buttons driven the way Slack drives them: signed block_actions posted to /slack/events, the card
updated in place through the fake Web API, the rule file changed on disk."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from autotrain.models import FeedbackIn, ReviewCard, RuleStatus
from bot.api import create_app
from tests.conftest import (
    ADMIN,
    NEW_WEATHER_RULE,
    OLD_WEATHER_RULE,
    REPORTER,
    WEATHER_FEEDBACK,
    read_rule_lines,
)
from tests.fakes.slack_api import FakeSlackApi, SlackCall
from tests.slack_support import (
    ADMIN_USER,
    OTHER_USER,
    REVIEW_CHANNEL,
    SlackSimulator,
    action_ids,
    block_texts,
    ok,
    slack_settings,
)

EDITED_RULE = "- Khi trời trên 30 độ: không gợi ý áo khoác dày, ưu tiên vải mỏng thoáng mát"


# ---------------------------------------------------------------------- helpers


def buttons_by_id(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["action_id"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]}


def ephemerals_to(slack: SlackSimulator, user: str) -> list[str]:
    return [c.params["text"] for c in slack.api.calls_to("chat.postEphemeral") if c.params.get("user") == user]


async def wait_until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_for_ephemerals(slack: SlackSimulator, user: str, count: int) -> list[str]:
    await wait_until(lambda: len(ephemerals_to(slack, user)) >= count, what=f"{count} ephemeral(s) to {user}")
    return ephemerals_to(slack, user)


async def new_card(slack: SlackSimulator, payload: dict[str, Any] | None = None) -> tuple[str, SlackCall]:
    """Feedback through the API path, its rule generated and its card posted; (rule_id, the card post)."""
    before = len(slack.api.calls_to("chat.postMessage"))
    feedback = await slack.service.submit(FeedbackIn(**(payload or WEATHER_FEEDBACK)), REPORTER)
    await slack.service.drain()
    rule = await slack.store.get_rule_for_feedback(feedback.feedback_id)
    assert rule is not None
    posts = await slack.api.wait_for("chat.postMessage", before + 1)
    return rule.rule_id, posts[-1]


async def posted_card(slack: SlackSimulator, rule_id: str) -> ReviewCard:
    """The card row once the app has recorded the post (the fake answers before the app writes it)."""
    deadline = time.monotonic() + 5
    while True:
        card = await slack.store.get_card(rule_id)
        if card is not None and card.state == "posted":
            return card
        if time.monotonic() > deadline:
            raise AssertionError(f"the card of {rule_id} was never recorded as posted: {card}")
        await asyncio.sleep(0.02)


async def last_update(slack: SlackSimulator, count: int) -> SlackCall:
    updates = await slack.api.wait_for("chat.update", count)
    assert len(updates) == count, f"expected exactly {count} chat.update, got {len(updates)}"
    return updates[-1]


# ---------------------------------------------------------------------- the full review flow


async def test_admin_review_flow_edit_approve_deploy_rollback(slack: SlackSimulator, rules_dir: Path) -> None:
    original_file = (rules_dir / "fashion_rules.json").read_bytes()
    response = await slack.submit_feedback(
        query=WEATHER_FEEDBACK["query"],
        ai_response=WEATHER_FEEDBACK["ai_response"],
        feedback_text=WEATHER_FEEDBACK["feedback_text"],
        user=OTHER_USER,
    )
    assert response.status_code == 200

    # the card in the review channel
    post = (await slack.api.wait_for("chat.postMessage"))[0]
    assert ok(post)
    assert post.params["channel"] == REVIEW_CHANNEL
    card_ts = post.response["ts"]
    blocks = post.params["blocks"]
    assert action_ids(blocks) == ["rule_approve", "rule_edit", "rule_reject"]
    assert all(button["value"] == "RUL-1001" for button in buttons_by_id(blocks).values())
    assert blocks[0]["type"] == "header" and "RUL-1001" in blocks[0]["text"]["text"]
    fields = "\n".join(f["text"] for b in blocks for f in b.get("fields") or [])
    assert "fashion_rules.json" in fields
    assert "85 %" in fields
    assert "prompt_update" not in fields  # small print now: the last context line
    assert "type prompt_update" in blocks[-1]["elements"][0]["text"]
    text = block_texts(blocks)
    assert f">{WEATHER_FEEDBACK['feedback_text']}" in text  # quoted
    assert f">{WEATHER_FEEDBACK['query']}" in text
    assert "− Luôn ưu tiên áo khoác/dày" in text  # old → new, mrkdwn-escaped
    assert "+ Khi trời nóng (&gt;30°): KHÔNG gợi ý áo khoác dày" in text
    assert "Weather mismatch correction" in text
    card = await posted_card(slack, "RUL-1001")
    assert card.channel == REVIEW_CHANNEL and card.message_ts == card_ts

    # Edit opens the edit modal, prefilled
    await slack.click("rule_edit", "RUL-1001")
    opened = (await slack.api.wait_for("views.open"))[0]
    assert ok(opened)
    view = opened.params["view"]
    assert view["callback_id"] == "rule_edit_submit"
    inputs = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert inputs["new_rule"]["initial_value"] == NEW_WEATHER_RULE
    assert inputs["old_rule"]["initial_value"] == OLD_WEATHER_RULE
    assert inputs["module_name"]["initial_option"]["value"] == "fashion_rules.json"
    assert view["private_metadata"] == "RUL-1001"

    # submit the edit
    response = await slack.submit_view(
        "rule_edit_submit",
        {
            "new_rule": {"new_rule": {"type": "plain_text_input", "value": EDITED_RULE}},
            "module_name": {
                "module_name": {
                    "type": "static_select",
                    "selected_option": {"value": "fashion_rules.json", "text": {"type": "plain_text", "text": "f"}},
                }
            },
            "old_rule": {"old_rule": {"type": "plain_text_input", "value": OLD_WEATHER_RULE}},
        },
        private_metadata=view["private_metadata"],
    )
    assert response.status_code == 200
    assert not response.content or "errors" not in response.json()
    update = await last_update(slack, 1)
    assert update.params["channel"] == REVIEW_CHANNEL and update.params["ts"] == card_ts
    text = block_texts(update.params["blocks"])
    assert "Edited by <@UADMIN>" in text
    assert "không gợi ý áo khoác dày, ưu tiên vải mỏng thoáng mát" in text
    assert action_ids(update.params["blocks"]) == ["rule_approve", "rule_edit", "rule_reject"]
    rule = await slack.service.get_rule("RUL-1001")
    assert rule.new_rule == EDITED_RULE and rule.status is RuleStatus.PENDING

    # Approve
    await slack.click("rule_approve", "RUL-1001")
    update = await last_update(slack, 2)
    assert update.params["ts"] == card_ts
    assert action_ids(update.params["blocks"]) == ["rule_deploy", "rule_deploy_canary", "rule_reject"]
    assert "Approved by <@UADMIN>" in block_texts(update.params["blocks"])
    assert (await slack.service.get_rule("RUL-1001")).status is RuleStatus.APPROVED
    assert (rules_dir / "fashion_rules.json").read_bytes() == original_file  # approving writes nothing

    # Deploy
    await slack.click("rule_deploy", "RUL-1001")
    update = await last_update(slack, 3)
    assert update.params["ts"] == card_ts
    assert action_ids(update.params["blocks"]) == ["rule_rollback"]
    assert "Deployed by <@UADMIN>" in block_texts(update.params["blocks"])
    lines = read_rule_lines(rules_dir)
    assert EDITED_RULE in lines
    assert OLD_WEATHER_RULE not in lines
    assert NEW_WEATHER_RULE not in lines  # the edited text was deployed, not the generated one
    notes = await wait_for_ephemerals(slack, ADMIN_USER, 1)
    assert "deployed" in notes[-1]

    # Roll back
    await slack.click("rule_rollback", "RUL-1001")
    update = await last_update(slack, 4)
    assert update.params["ts"] == card_ts
    assert action_ids(update.params["blocks"]) == []
    assert "Rolled back by <@UADMIN>" in block_texts(update.params["blocks"])
    lines = read_rule_lines(rules_dir)
    assert EDITED_RULE not in lines
    assert OLD_WEATHER_RULE in lines
    assert (await slack.service.get_rule("RUL-1001")).status is RuleStatus.ROLLED_BACK

    # every update went to the one card; no second card was posted
    assert all(u.params["ts"] == card_ts for u in slack.api.calls_to("chat.update"))
    assert len(slack.api.calls_to("chat.postMessage")) == 1

    # the edit is audited with before / after
    audit = await slack.store.list_audit(subject_id="RUL-1001", limit=50, offset=0)
    edits = [entry for entry in audit.items if entry.action == "rule_edited"]
    assert len(edits) == 1
    assert edits[0].actor == ADMIN_USER
    assert edits[0].detail is not None
    assert edits[0].detail["before"]["new_rule"] == NEW_WEATHER_RULE
    assert edits[0].detail["after"]["new_rule"] == EDITED_RULE


# ---------------------------------------------------------------------- authorization


async def test_non_admin_buttons_are_refused_and_change_nothing(slack: SlackSimulator, rules_dir: Path) -> None:
    rule_id, _ = await new_card(slack)
    original_file = (rules_dir / "fashion_rules.json").read_bytes()

    for n, action_id in enumerate(["rule_approve", "rule_reject", "rule_edit"], start=1):
        response = await slack.click(action_id, rule_id, user=OTHER_USER)
        assert response.status_code == 200
        notes = await wait_for_ephemerals(slack, OTHER_USER, n)
        assert "Only Auto-Train admins" in notes[-1]
        assert (await slack.service.get_rule(rule_id)).status is RuleStatus.PENDING

    # deploy and rollback need states the non-admin cannot reach: put the rule there as the admin would
    await slack.service.approve(rule_id, ADMIN)
    await slack.service.drain()  # its card update delivered
    await slack.click("rule_deploy", rule_id, user=OTHER_USER)
    notes = await wait_for_ephemerals(slack, OTHER_USER, 4)
    assert "Only Auto-Train admins" in notes[-1]
    assert (await slack.service.get_rule(rule_id)).status is RuleStatus.APPROVED
    assert (rules_dir / "fashion_rules.json").read_bytes() == original_file

    await slack.service.deploy(rule_id, ADMIN)
    await slack.service.drain()  # its card update delivered
    updates_before = len(slack.api.calls_to("chat.update"))
    deployed_file = (rules_dir / "fashion_rules.json").read_bytes()
    await slack.click("rule_rollback", rule_id, user=OTHER_USER)
    notes = await wait_for_ephemerals(slack, OTHER_USER, 5)
    assert "Only Auto-Train admins" in notes[-1]
    assert (await slack.service.get_rule(rule_id)).status is RuleStatus.DEPLOYED
    assert (rules_dir / "fashion_rules.json").read_bytes() == deployed_file

    await asyncio.sleep(0.2)  # anything a refused click did late would show up now
    assert len(slack.api.calls_to("chat.update")) == updates_before
    assert slack.api.calls_to("views.open") == []  # the refused Edit opened no modal
    ephemeral_channels = {c.params["channel"] for c in slack.api.calls_to("chat.postEphemeral")}
    assert ephemeral_channels == {REVIEW_CHANNEL}
    assert ephemerals_to(slack, ADMIN_USER) == []


async def test_non_admin_clicks_do_not_update_the_card(slack: SlackSimulator) -> None:
    rule_id, _ = await new_card(slack)
    for n, action_id in enumerate(["rule_approve", "rule_reject", "rule_edit"], start=1):
        await slack.click(action_id, rule_id, user=OTHER_USER)
        await wait_for_ephemerals(slack, OTHER_USER, n)
    await asyncio.sleep(0.2)
    assert slack.api.calls_to("chat.update") == []
    rule = await slack.service.get_rule(rule_id)
    assert rule.status is RuleStatus.PENDING and rule.edited_by is None and rule.approved_by is None


# ---------------------------------------------------------------------- double clicks


async def test_concurrent_double_click_on_deploy_deploys_once(slack: SlackSimulator, rules_dir: Path) -> None:
    rule_id, _ = await new_card(slack)
    await slack.click("rule_approve", rule_id)
    await last_update(slack, 1)

    responses = await asyncio.gather(slack.click("rule_deploy", rule_id), slack.click("rule_deploy", rule_id))
    assert [r.status_code for r in responses] == [200, 200]
    notes = await wait_for_ephemerals(slack, ADMIN_USER, 2)
    assert sum("Nothing was changed" in note for note in notes) == 1
    assert sum("deployed to `fashion_rules.json`" in note for note in notes) == 1

    deployments = await slack.service.list_deployments(rule_id=rule_id)
    assert deployments.total == 1
    assert read_rule_lines(rules_dir).count(NEW_WEATHER_RULE) == 1
    assert OLD_WEATHER_RULE not in read_rule_lines(rules_dir)

    await asyncio.sleep(0.2)  # let the loser's card refresh land
    updates = slack.api.calls_to("chat.update")
    assert len(updates) >= 2
    assert action_ids(updates[-1].params["blocks"]) == ["rule_rollback"]
    assert all(ok(u) for u in updates)
    assert (await slack.service.get_rule(rule_id)).status is RuleStatus.DEPLOYED


async def test_sequential_double_click_on_deploy_deploys_once(slack: SlackSimulator, rules_dir: Path) -> None:
    rule_id, _ = await new_card(slack)
    await slack.click("rule_approve", rule_id)
    await last_update(slack, 1)

    await slack.click("rule_deploy", rule_id)
    first = await wait_for_ephemerals(slack, ADMIN_USER, 1)
    assert "deployed" in first[0] and "Nothing was changed" not in first[0]
    file_after_deploy = (rules_dir / "fashion_rules.json").read_bytes()

    await slack.click("rule_deploy", rule_id)
    notes = await wait_for_ephemerals(slack, ADMIN_USER, 2)
    assert "Nothing was changed" in notes[1]
    assert "deployed" in notes[1]  # it says what the rule is now

    assert (await slack.service.list_deployments(rule_id=rule_id)).total == 1
    assert (rules_dir / "fashion_rules.json").read_bytes() == file_after_deploy
    updates = await slack.api.wait_for("chat.update", 3)
    assert action_ids(updates[-1].params["blocks"]) == ["rule_rollback"]


async def test_click_on_a_button_that_no_longer_applies_refreshes_the_card(slack: SlackSimulator) -> None:
    """An old card (or another admin) still shows Approve on a rule already approved elsewhere."""
    rule_id, _ = await new_card(slack)
    await slack.service.approve(rule_id, ADMIN)  # e.g. through the REST API
    updates = await slack.api.wait_for("chat.update", 1)
    assert action_ids(updates[-1].params["blocks"]) == ["rule_deploy", "rule_deploy_canary", "rule_reject"]

    await slack.click("rule_approve", rule_id)
    notes = await wait_for_ephemerals(slack, ADMIN_USER, 1)
    assert "Nothing was changed" in notes[0]
    updates = await slack.api.wait_for("chat.update", 2)
    assert action_ids(updates[-1].params["blocks"]) == ["rule_deploy", "rule_deploy_canary", "rule_reject"]
    assert (await slack.service.get_rule(rule_id)).approved_by == ADMIN.id  # still the first approver


# ---------------------------------------------------------------------- reject


async def test_reject_is_behind_a_confirm_dialog_and_closes_the_card(slack: SlackSimulator) -> None:
    rule_id, post = await new_card(slack)
    reject = buttons_by_id(post.params["blocks"])["rule_reject"]
    confirm = reject.get("confirm")
    assert isinstance(confirm, dict)
    assert confirm["title"]["text"] and confirm["text"]["text"] and confirm["confirm"]["text"]
    assert confirm["deny"]["text"]
    assert "confirm" not in buttons_by_id(post.params["blocks"])["rule_approve"]

    await slack.click("rule_reject", rule_id)
    update = await last_update(slack, 1)
    assert update.params["ts"] == post.response["ts"]
    assert action_ids(update.params["blocks"]) == []
    assert "Rejected by <@UADMIN>" in block_texts(update.params["blocks"])
    assert (await slack.service.get_rule(rule_id)).status is RuleStatus.REJECTED


async def test_deploy_button_is_behind_a_confirm_dialog(slack: SlackSimulator) -> None:
    rule_id, _ = await new_card(slack)
    await slack.click("rule_approve", rule_id)
    update = await last_update(slack, 1)
    buttons = buttons_by_id(update.params["blocks"])
    assert isinstance(buttons["rule_deploy"].get("confirm"), dict)
    assert isinstance(buttons["rule_reject"].get("confirm"), dict)


# ---------------------------------------------------------------------- a rule file that does not parse


async def test_deploy_to_a_corrupt_rule_file_is_refused_and_leaves_it_alone(
    slack: SlackSimulator, rules_dir: Path
) -> None:
    rule_id, _ = await new_card(slack)
    await slack.click("rule_approve", rule_id)
    await last_update(slack, 1)

    corrupt = b'{"version": 3, "rules": [ {"rule": "- half written'
    (rules_dir / "fashion_rules.json").write_bytes(corrupt)

    await slack.click("rule_deploy", rule_id)
    notes = await wait_for_ephemerals(slack, ADMIN_USER, 1)
    assert "fashion_rules.json" in notes[0]
    assert "Traceback" not in notes[0]
    assert (rules_dir / "fashion_rules.json").read_bytes() == corrupt
    rule = await slack.service.get_rule(rule_id)
    assert rule.status is RuleStatus.APPROVED
    assert (await slack.service.list_deployments(rule_id=rule_id)).total == 0
    assert not any(p.name.endswith(".tmp") for p in rules_dir.iterdir())

    # once the file is fixed the same button works
    (rules_dir / "fashion_rules.json").write_text(
        '{"version": 1, "rules": [{"rule": "- Luôn ưu tiên áo khoác/dày"}]}', encoding="utf-8"
    )
    await slack.click("rule_deploy", rule_id)
    notes = await wait_for_ephemerals(slack, ADMIN_USER, 2)
    assert "deployed" in notes[1]
    assert read_rule_lines(rules_dir) == [NEW_WEATHER_RULE]


# ---------------------------------------------------------------------- canary


async def test_canary_button_deploys_to_the_configured_share(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    """AUTOTRAIN_CANARY_PERCENT is both what the button says and what the deploy does."""
    app = create_app(slack_settings(tmp_path, rules_dir, slack_api, canary_percent=25))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            slack = SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)
            rule_id, post = await new_card(slack)
            await slack.click("rule_approve", rule_id)
            approved = await last_update(slack, 1)
            canary = buttons_by_id(approved.params["blocks"])["rule_deploy_canary"]
            assert canary["text"]["text"] == "Canary 25 %"
            assert canary["confirm"]["text"]["text"].startswith("25 % of users")

            await slack.click("rule_deploy_canary", rule_id, user=OTHER_USER)
            notes = await wait_for_ephemerals(slack, OTHER_USER, 1)
            assert "Only Auto-Train admins" in notes[-1]
            assert (await slack.service.get_rule(rule_id)).status is RuleStatus.APPROVED

            await slack.click("rule_deploy_canary", rule_id)
            notes = await wait_for_ephemerals(slack, ADMIN_USER, 1)
            assert f"{rule_id} deployed to `fashion_rules.json` for a canary" in notes[-1]
            rule = await slack.service.get_rule(rule_id)
            assert rule.canary and rule.rollout_percent == 25
            entries = json.loads((rules_dir / "fashion_rules.json").read_text(encoding="utf-8"))["rules"]
            [entry] = [e for e in entries if e.get("rule_id") == rule_id]
            assert entry["rollout_percent"] == 25
            assert OLD_WEATHER_RULE in read_rule_lines(rules_dir)  # kept for the users outside the canary

            deployed = await last_update(slack, 2)
            assert deployed.params["ts"] == post.response["ts"]
            assert action_ids(deployed.params["blocks"]) == ["rule_promote", "rule_rollback"]
            assert "canary 25 %" in deployed.params["blocks"][0]["text"]["text"]
