"""Which users a canary reaches: stable bucketing, the one implementation the chatbot's RuleBook and the
Auto-Train server (its `autotrain.rollout` re-exports this module) both use."""

from __future__ import annotations

import hashlib

FULL_ROLLOUT = 100


def bucket(rule_id: str, user_id: str) -> int:
    """0–99, stable: sha256 of f"{rule_id}:{user_id}" (not Python's hash(), which changes per process)."""
    digest = hashlib.sha256(f"{rule_id}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def in_rollout(rule_id: str, user_id: str, percent: int) -> bool:
    """Whether this user is in a rollout of `percent` % of users: 100 (or more) → always, 0 (or less) → never."""
    if percent >= FULL_ROLLOUT:
        return True
    if percent <= 0:
        return False
    return bucket(rule_id, user_id) < percent
