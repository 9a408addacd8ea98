"""Reports: the pipeline's status (counts, today's deploys, generation totals, monitoring metrics)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time

from autotrain.models import FeedbackStatus, HandEditedFile, StatusReport
from autotrain.monitoring import Metrics
from autotrain.options import Clock, PipelineOptions
from autotrain.ports import DeploymentStore, EvaluationStore, EventOutbox, GenerationLog, ReportStore


class StatusReports:
    def __init__(
        self,
        *,
        reports: ReportStore,
        deployments: DeploymentStore,
        generation_log: GenerationLog,
        outbox: EventOutbox,
        generator_name: str,
        metrics: Callable[[], Awaitable[Metrics]] | None,
        clock: Clock,
        options: PipelineOptions,
        git_history: bool = False,
        evaluations: EvaluationStore | None = None,
        hand_edits: Callable[[], Awaitable[list[HandEditedFile]]] | None = None,
    ) -> None:
        self.hand_edits = hand_edits  # (several instances) the hand edits any instance's folder was found with
        self.evaluations = evaluations
        self.reports = reports
        self.deployments = deployments
        self.generation_log = generation_log
        self.outbox = outbox
        self.generator_name = generator_name
        self.metrics = metrics
        self.clock = clock
        self.options = options
        self.git_history = git_history

    async def status(self) -> StatusReport:
        zone = self.options.timezone
        local = self.clock().astimezone(zone)
        midnight = datetime.combine(local.date(), time.min, tzinfo=zone).astimezone(UTC)
        counts = await self.reports.counts(since=midnight)
        last = await self.deployments.list_deployments(rule_id=None, limit=5, offset=0)
        return StatusReport(
            feedback_by_status=counts.feedback_by_status,
            feedback_by_type=counts.feedback_by_type,
            rules_by_status=counts.rules_by_status,
            pending_feedback=counts.feedback_by_status.get(FeedbackStatus.PENDING.value, 0),
            deployments_total=counts.deployments_total,
            deployed_today=counts.deployed_since,
            rollbacks_total=counts.rollbacks_total,
            generator=self.generator_name,
            generation=await self.generation_log.generation_totals(),
            last_deployments=last.items,
            events_undelivered=await self.outbox.undelivered_event_count(),
            metrics=await self.metrics() if self.metrics else None,
            git_history=self.git_history,
            evaluation=await self.evaluations.evaluation_totals() if self.evaluations else {},
            uncommitted_deployments=counts.uncommitted_deployments,
            last_commit_error=counts.last_commit_error,
            hand_edited_rule_files=await self.hand_edits() if self.hand_edits else [],
        )
