"""The embedded store: one SQLite file through aiosqlite, one module per role of the store.

Each role is a mixin over the one connection (connection.py: the lock, `_tx`, `_read`, migrations);
SqliteStore composes them, and is every role of autotrain.ports.Store.
"""

from __future__ import annotations

from storage.sqlite import connection
from storage.sqlite.cards import ReviewCardMixin
from storage.sqlite.complaints import ComplaintMixin
from storage.sqlite.deployments import DeploymentMixin
from storage.sqlite.evaluations import EvaluationMixin
from storage.sqlite.events import EventMixin
from storage.sqlite.feedback import FeedbackMixin
from storage.sqlite.generations import GenerationMixin
from storage.sqlite.monitoring import AlertStateMixin
from storage.sqlite.reloads import ReloadMixin
from storage.sqlite.reports import ReportMixin
from storage.sqlite.rules import RuleMixin
from storage.sqlite.webhooks import WebhookMixin

BUSY_TIMEOUT_MS = connection.BUSY_TIMEOUT_MS  # read at each open(), from here: a test may shorten it


class SqliteStore(
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
):
    def _busy_timeout_ms(self) -> int:
        return BUSY_TIMEOUT_MS


__all__ = ["BUSY_TIMEOUT_MS", "SqliteStore"]
