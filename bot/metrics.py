"""/metrics in Prometheus text format, computed from the database at each scrape (prometheus-client).

The figures are not counters kept in memory: a restart loses nothing, and several processes report the same.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from autotrain.models import StatusReport

__all__ = ["CONTENT_TYPE_LATEST", "prometheus_text"]


class _Snapshot:
    """A collector over one status report (prometheus-client's custom-collector interface)."""

    def __init__(self, report: StatusReport) -> None:
        self.report = report

    def collect(self):
        report = self.report
        metrics = report.metrics

        feedback = GaugeMetricFamily("autotrain_feedback", "Feedback by status", labels=["status"])
        for status, count in report.feedback_by_status.items():
            feedback.add_metric([status], count)
        yield feedback
        by_type = GaugeMetricFamily("autotrain_feedback_by_type", "Feedback by type", labels=["type"])
        for kind, count in report.feedback_by_type.items():
            by_type.add_metric([kind], count)
        yield by_type
        yield GaugeMetricFamily(
            "autotrain_feedback_pending", "Feedback waiting for a rule", value=report.pending_feedback
        )
        rules = GaugeMetricFamily("autotrain_rules", "Rules by status", labels=["status"])
        for status, count in report.rules_by_status.items():
            rules.add_metric([status], count)
        yield rules
        yield GaugeMetricFamily("autotrain_deployments", "Deployments (not rollbacks)", value=report.deployments_total)
        yield GaugeMetricFamily("autotrain_rollbacks", "Rollbacks", value=report.rollbacks_total)
        yield GaugeMetricFamily("autotrain_deployed_today", "Rules deployed today", value=report.deployed_today)
        yield GaugeMetricFamily(
            "autotrain_events_undelivered",
            "Rule events not yet delivered to the review card and webhooks",
            value=report.events_undelivered,
        )
        yield GaugeMetricFamily(
            "autotrain_deployments_uncommitted",
            "Rule-file changes whose git commit failed (a gap in the rules folder's history)",
            value=report.uncommitted_deployments,
        )
        replays = GaugeMetricFamily("autotrain_evaluations", "Replays before deploy by status", labels=["status"])
        for status in ("passed", "failed", "skipped", "error"):
            replays.add_metric([status], report.evaluation.get(status, 0))
        yield replays
        yield GaugeMetricFamily(
            "autotrain_evaluation_tokens",
            "Tokens spent by replays and their judgments (apart from generation)",
            value=report.evaluation.get("tokens", 0),
        )
        yield GaugeMetricFamily(
            "autotrain_evaluation_seconds",
            "Wall time spent evaluating rules",
            value=report.evaluation.get("latency_ms", 0) / 1000,
        )
        if report.metrics is not None:
            yield GaugeMetricFamily(
                "autotrain_deployments_unpushed",
                "Rule-file commits whose push to AUTOTRAIN_GIT_REMOTE failed",
                value=report.metrics.unpushed_deployments,
            )
        generations = GaugeMetricFamily("autotrain_generations", "Generation attempts by outcome", labels=["outcome"])
        totals = report.generation
        for outcome, count in (
            ("succeeded", totals.succeeded),
            ("failed", totals.failed),
            ("declined", totals.declined),
        ):
            generations.add_metric([outcome], count)
        yield generations
        tokens = GaugeMetricFamily("autotrain_generation_tokens", "Tokens used by generations", labels=["direction"])
        tokens.add_metric(["input"], totals.input_tokens)
        tokens.add_metric(["output"], totals.output_tokens)
        yield tokens
        if metrics is not None:
            yield GaugeMetricFamily(
                "autotrain_generation_error_rate",
                f"Failed share of generations in the last {metrics.error_rate_window_minutes} minutes",
                value=metrics.generation_error_rate,
            )
            if metrics.approval_seconds_avg is not None:
                yield GaugeMetricFamily(
                    "autotrain_approval_seconds_avg",
                    f"Average seconds from rule creation to approval (last {metrics.approval_window_days} days)",
                    value=metrics.approval_seconds_avg,
                )
            if metrics.approval_seconds_p90 is not None:
                yield GaugeMetricFamily(
                    "autotrain_approval_seconds_p90",
                    f"p90 seconds from rule creation to approval (last {metrics.approval_window_days} days)",
                    value=metrics.approval_seconds_p90,
                )


def prometheus_text(report: StatusReport) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(report))
    return generate_latest(registry)
