"""The feedback form's submission: validate, ack (with field errors if any), store, confirm to the reporter."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.models import FeedbackIn, FeedbackStatus, FeedbackType
from bot.slack.deps import SlackDeps, friendly_error
from bot.slack.replies import reply_privately

FIELDS = ("query", "ai_response", "feedback_text")


def form_values(view: dict[str, Any]) -> dict[str, str]:
    values = view.get("state", {}).get("values", {})
    data = {name: (values.get(name, {}).get(name, {}).get("value") or "") for name in FIELDS}
    selected = values.get("feedback_type", {}).get("feedback_type", {}).get("selected_option") or {}
    data["feedback_type"] = selected.get("value", "")
    return data


def field_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else "feedback_text"
        block = field if field in (*FIELDS, "feedback_type") else "feedback_text"
        errors.setdefault(block, error["msg"])
    return errors


def feedback_submit_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        user_id = body["user"]["id"]
        try:
            metadata = json.loads(view.get("private_metadata") or "{}")
        except json.JSONDecodeError:
            metadata = {}
        try:
            data = FeedbackIn(
                **form_values(view),
                user_id=user_id,
                metadata={"slack_channel": metadata.get("channel"), "slack_message_ts": metadata.get("message_ts")},
            )
        except ValidationError as exc:
            await ack(response_action="errors", errors=field_errors(exc))
            return
        await ack()
        try:
            actor = await deps.admins.actor_for(user_id)
            feedback = await deps.service.submit(data, actor, source="slack")
        except Exception as exc:
            await reply_privately(client, user_id, metadata.get("channel"), friendly_error(exc, deps))
            return
        if feedback.status is FeedbackStatus.REJECTED:
            follow_up = (
                f"It was flagged by the content filter, so no rule will be made from it ({feedback.last_error})."
            )
        elif feedback.feedback_type is FeedbackType.PRAISE:
            follow_up = "Praise is counted; no rule is needed."
        elif deps.settings.auto_generate:
            follow_up = "A rule suggestion will be posted for review."
        else:
            follow_up = "An admin will review it."
        thanks = f"🙏 Thanks! Feedback *{feedback.feedback_id}* saved. {follow_up}"
        await reply_privately(client, user_id, metadata.get("channel"), thanks)

    return handle
