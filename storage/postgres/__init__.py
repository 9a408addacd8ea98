"""The production store: PostgreSQL through asyncpg, one module per role of the store (as storage/sqlite).

Each role is a mixin over the one pool (connection.py: `_tx`, `_read`, migrations from schema.py);
PostgresStore composes them, and is every role of autotrain.ports.Store.
"""

from __future__ import annotations

from storage.postgres import connection
from storage.postgres.cards import ReviewCardMixin
from storage.postgres.complaints import ComplaintMixin
from storage.postgres.deployments import DeploymentMixin
from storage.postgres.evaluations import EvaluationMixin
from storage.postgres.events import EventMixin
from storage.postgres.feedback import FeedbackMixin
from storage.postgres.generations import GenerationMixin
from storage.postgres.history import SharedHistoryMixin
from storage.postgres.monitoring import AlertStateMixin
from storage.postgres.reloads import ReloadMixin
from storage.postgres.reports import ReportMixin
from storage.postgres.rulefiles import RuleFileMixin
from storage.postgres.rules import RuleMixin
from storage.postgres.webhooks import WebhookMixin

LOCK_TIMEOUT_MS = connection.LOCK_TIMEOUT_MS  # read at each open(), from here: a test may shorten it


class PostgresStore(
    FeedbackMixin,
    ComplaintMixin,
    RuleMixin,
    DeploymentMixin,
    ReviewCardMixin,
    GenerationMixin,
    ReportMixin,
    AlertStateMixin,
    WebhookMixin,
    EventMixin,
    ReloadMixin,
    EvaluationMixin,
    RuleFileMixin,
    SharedHistoryMixin,
):
    def _lock_timeout_ms(self) -> int:
        return LOCK_TIMEOUT_MS


__all__ = ["LOCK_TIMEOUT_MS", "PostgresStore"]
