"""The edit form's submission: the edit is made before the ack so that errors show on the form."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck

from autotrain.errors import AutotrainError
from autotrain.i18n import _, speaking
from bot.slack.deps import SlackDeps, friendly_error

EDIT_TIMEOUT_SECONDS = 2.0  # leaves room inside Slack's 3 s for the ack


def rule_edit_submit_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        with speaking(deps.known_language_for(body["user"]["id"])):  # the errors answer in the ack: no waiting
            await submit(ack, body, view)

    async def submit(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        rule_id = view.get("private_metadata", "")
        values = view.get("state", {}).get("values", {})
        new_rule = values.get("new_rule", {}).get("new_rule", {}).get("value") or ""
        old_rule = values.get("old_rule", {}).get("old_rule", {}).get("value") or ""
        module = (values.get("module_name", {}).get("module_name", {}).get("selected_option") or {}).get("value")
        try:
            actor = await deps.admins.actor_for(body["user"]["id"])
            await asyncio.wait_for(
                deps.service.edit(rule_id, actor, new_rule=new_rule, module_name=module, old_rule=old_rule),
                EDIT_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            await ack(response_action="errors", errors={"new_rule": _("Saving took too long; please try again.")})
            return
        except AutotrainError as exc:
            # the field it is about (the rule to replace, when that is not in the file), else the rule itself
            field = exc.params.get("field")
            block = field if field in ("new_rule", "old_rule", "module_name") else "new_rule"
            await ack(response_action="errors", errors={block: friendly_error(exc, deps)[:150]})
            return
        await ack()

    return handle
