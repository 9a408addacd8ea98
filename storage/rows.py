"""What both stores share above their SQL: a row (any mapping of column to value; the same columns on SQLite and
PostgreSQL) as a model, and a page of a keyset read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from autotrain.models import Deployment, Feedback, Rule
from autotrain.pagination import Cursor, Order
from autotrain.ports import Page


def paged(items: list[Any], positions: list[int], *, total: int, limit: int, offset: int, order: Order) -> Page[Any]:
    """A page of at most `limit` items (of the limit + 1 read), with the cursor of the next page if any."""
    more = len(items) > limit
    next_cursor = Cursor(positions[limit - 1], order).encode() if more else None
    return Page(items[:limit], total, limit, offset, next_cursor)


def feedback_row(row: Mapping[str, Any]) -> Feedback:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"]) if data.get("metadata") else None
    data["flags"] = json.loads(data.get("flags") or "[]")
    return Feedback.model_validate(data)


def rule_row(row: Mapping[str, Any]) -> Rule:
    data = dict(row)
    data["warnings"] = json.loads(data["warnings"] or "[]")
    return Rule.model_validate(data)  # warning_details: JSON text, parsed by the model (WarningDetails)


def deployment_row(row: Mapping[str, Any]) -> Deployment:
    data = dict(row)
    data["deployment_id"] = data.pop("id")
    data["change"] = json.loads(data["change"] or "{}")
    return Deployment.model_validate(data)
