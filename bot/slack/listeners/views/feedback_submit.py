"""The feedback form's submission: validate, ack (with field errors if any), store, confirm to the reporter."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from autotrain.i18n import N_, _, speaking
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


# pydantic's error types, said for a person filling in a form (its own wording is for developers)
FIELD_ERROR_TEXT = {
    "string_too_short": N_("Please fill this in."),
    "missing": N_("Please fill this in."),
    "string_too_long": N_("This is too long: at most {max_length} characters."),
    "enum": N_("Choose one of the options."),
    "literal_error": N_("Choose one of the options."),
}


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Each invalid field's block → what to do about it, in the user's language."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else "feedback_text"
        block = field if field in (*FIELDS, "feedback_type") else "feedback_text"
        template = FIELD_ERROR_TEXT.get(error["type"])
        context = error.get("ctx") or {}
        if template is None:
            message = _("This is not valid: {reason}", reason=str(error["msg"]))
        else:
            message = _(template, max_length=context.get("max_length", ""))
        errors.setdefault(block, message[:150])
    return errors


def feedback_submit_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        user_id = body["user"]["id"]
        with speaking(deps.known_language_for(user_id)):  # field errors answer in the ack: no waiting
            await submit(ack, body, view, client, user_id)

    async def submit(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient, user_id: str
    ) -> None:
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
        if feedback.status is FeedbackStatus.REJECTED and "offensive" in feedback.flags:
            follow_up = _(
                "The content filter found offensive language in it, so it is kept but no rule is made from it."
            )
        elif feedback.status is FeedbackStatus.REJECTED:
            follow_up = _("It is kept, but no rule is made from it.")
        elif feedback.feedback_type is FeedbackType.PRAISE:
            follow_up = _("Praise is counted; no rule is needed.")
        elif deps.settings.auto_generate:
            follow_up = _("A rule suggestion will be posted for review.")
        else:
            follow_up = _("An admin will review it.")
        thanks = (
            "🙏 "
            + _("Thanks! Feedback {feedback_id} saved.", feedback_id=f"*{feedback.feedback_id}*")
            + " "
            + follow_up
        )
        await reply_privately(client, user_id, metadata.get("channel"), thanks)

    return handle
