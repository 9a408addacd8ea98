"""The "Next 20" button under `/autotrain rules`: the next page, in place of the one shown."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond

from autotrain.i18n import speaking
from autotrain.models import RuleStatus
from bot.slack import blocks
from bot.slack.deps import SlackDeps, friendly_error


async def rules_page(
    deps: SlackDeps, status: RuleStatus | None, *, cursor: str | None = None, shown_before: int = 0
) -> tuple[str, list[blocks.Block]]:
    page = await deps.service.list_rules(status=status, limit=blocks.RULES_PAGE, cursor=cursor)
    rendered = blocks.rules_blocks(
        page.items, page.total, status, shown_before=shown_before, next_cursor=page.next_cursor
    )
    return blocks.rules_text(page.total, status), rendered


def next_page_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        with speaking(await deps.language_for(body["user"]["id"])):
            try:
                wanted = json.loads(action.get("value") or "{}")
                status = None if wanted.get("status") == "all" else RuleStatus(wanted.get("status", "pending"))
                text, rendered = await rules_page(
                    deps, status, cursor=wanted.get("cursor"), shown_before=int(wanted.get("shown", 0))
                )
            except (ValueError, TypeError) as exc:  # a value we did not write: start again from the top
                await respond(response_type="ephemeral", replace_original=False, text=friendly_error(exc, deps))
                return
            except Exception as exc:
                await respond(response_type="ephemeral", replace_original=False, text=friendly_error(exc, deps))
                return
            await respond(response_type="ephemeral", replace_original=True, text=text, blocks=rendered)

    return handle
