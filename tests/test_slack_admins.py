"""Admins from AUTOTRAIN_ADMIN_USERGROUP: members may act, others may not; the group is read from Slack."""

from __future__ import annotations

from pathlib import Path

import httpx

from autotrain.models import RuleStatus
from bot.api import create_app
from tests.conftest import approved_rule
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import SlackSimulator, slack_settings


async def test_usergroup_member_is_an_admin_and_others_are_not(
    tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi
) -> None:
    slack_api.set_usergroup_members("SADMINS", ["UGROUPIE"])
    app = create_app(slack_settings(tmp_path, rules_dir, slack_api, admins=(), admin_usergroup="SADMINS"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            service = app.state.runtime.service
            simulator = SlackSimulator(http=http, api=slack_api, runtime=app.state.runtime)
            rule = await approved_rule(service)
            await service.drain()

            await simulator.click("rule_deploy", rule.rule_id, user="UOUTSIDER")
            refusal = await slack_api.wait_for("chat.postEphemeral")
            assert "Only Auto-Train admins" in refusal[0].params["text"]
            assert "<!subteam^SADMINS>" in refusal[0].params["text"]
            assert (await service.get_rule(rule.rule_id)).status is RuleStatus.APPROVED

            await simulator.click("rule_deploy", rule.rule_id, user="UGROUPIE")
            await slack_api.wait_for("chat.postEphemeral", 2)
            deployed = await service.get_rule(rule.rule_id)
            assert deployed.status is RuleStatus.DEPLOYED and deployed.deployed_by == "UGROUPIE"
            lookups = slack_api.calls_to("usergroups.users.list")
            assert lookups and lookups[0].params["usergroup"] == "SADMINS"
            assert len(lookups) == 1  # cached between the two clicks
