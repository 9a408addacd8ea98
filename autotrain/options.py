"""The pipeline's tunables, in one frozen object built once by the composition root from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from autotrain.clustering import DEFAULT_THRESHOLD
from autotrain.effect import EffectSettings
from autotrain.settings import DEFAULT_CANARY_PERCENT

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PipelineOptions:
    auto_generate: bool = True  # a new complaint is generated in the background when it arrives
    run_all_concurrency: int = 4
    generation_wait_seconds: float = 60.0  # how long to wait for another process's generation of the same feedback
    generation_lease_seconds: float = 60.0  # a generation's claim on its feedback, renewed every third of it
    timezone: tzinfo = UTC  # "today" in the status report
    auto_approve_confidence: float | None = None  # None: every rule waits for an admin
    auto_deploy: bool = False
    require_canary: bool = False
    canary_percent: int = DEFAULT_CANARY_PERCENT
    cluster_threshold: float | None = DEFAULT_THRESHOLD  # None: run-all does not group feedback
    record_deadline_seconds: float = 60.0  # how long a written deploy waits for a busy database to record it
    require_evaluation: bool = False  # deploy refuses a rule whose replay has not passed (unless overridden)
    effect: EffectSettings = field(default_factory=EffectSettings)  # how a rule's effect is judged (effect.py)
