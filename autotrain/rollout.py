"""Which users a canary reaches: re-exported from the client package (`autotrain_client.rollout`), so the
server (the digest, the effects, the `?user_id=` view) and every chatbot's RuleBook bucket with one
implementation."""

from __future__ import annotations

from autotrain_client.rollout import FULL_ROLLOUT, bucket, in_rollout

__all__ = ["FULL_ROLLOUT", "bucket", "in_rollout"]
