"""Telling the chatbot a rule file changed: the reload call after a deploy, and its retries.

The first call is made by the deploy itself, so the admin who deployed is told at once when it failed. A
failed call is logged and retried with exponential backoff (30 s, 1 min, 2 min, … at most an hour apart) by
the scheduler, for the newest change of each file only: the chatbot needs the current version, and a newer
deploy makes its own call. A reload still failing after ALERT_AFTER_ATTEMPTS calls raises the
`chatbot_reload` alert."""

from __future__ import annotations

import logging
from datetime import timedelta

from autotrain.models import Deployment
from autotrain.options import Clock
from autotrain.ports import ReloadHook, ReloadLog, ReloadResult

log = logging.getLogger("autotrain.reload")

RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 3600.0
ALERT_AFTER_ATTEMPTS = 3


def next_retry_in(attempts: int) -> float:
    """Seconds until the next call after `attempts` failed ones."""
    return min(RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), RETRY_MAX_SECONDS)


class ChatbotReloads:
    def __init__(self, *, hook: ReloadHook | None, log_store: ReloadLog, clock: Clock) -> None:
        self.hook = hook
        self.log_store = log_store
        self.clock = clock

    async def reload(self, deployment: Deployment) -> ReloadResult:
        """The first call for a file change (its result is recorded by the caller); a failure is scheduled."""
        if self.hook is None:  # off (AUTOTRAIN_RELOAD_URL unset) is a setting, not an error: skipped, no error
            return ReloadResult("skipped")
        result = await self._call(deployment)
        if result.status == "failed":
            retry_at = self.clock() + timedelta(seconds=next_retry_in(1))
            log.warning(
                "the chatbot's reload after %s (%s) failed, retried at %s: %s",
                deployment.rule_id,
                deployment.module_name,
                retry_at.isoformat(timespec="seconds"),
                result.error,
            )
            await self.log_store.schedule_reload_retry(deployment.deployment_id, attempts=1, retry_at=retry_at)
        return result

    async def retry_due(self) -> int:
        """Retry the failed reloads that are due; how many succeeded."""
        if self.hook is None:
            return 0
        succeeded = 0
        for deployment in await self.log_store.reloads_due(now=self.clock()):
            attempts = deployment.reload_attempts + 1
            result = await self._call(deployment)
            retry_at = None
            if result.status == "failed":
                retry_at = self.clock() + timedelta(seconds=next_retry_in(attempts))
                log.warning(
                    "the chatbot's reload of %s (version %s) failed again (%d calls): %s",
                    deployment.module_name,
                    deployment.version_after,
                    attempts,
                    result.error,
                )
            else:
                succeeded += 1
                log.info("the chatbot reloaded %s after %d calls", deployment.module_name, attempts)
            await self.log_store.reload_retried(deployment.deployment_id, result, attempts=attempts, retry_at=retry_at)
        return succeeded

    async def _call(self, deployment: Deployment) -> ReloadResult:
        assert self.hook is not None
        try:
            return await self.hook.reload(deployment.module_name, deployment.rule_id, deployment.version_after)
        except Exception as exc:  # the file is written; a failed reload is recorded, never raised
            return ReloadResult("failed", f"{type(exc).__name__}: {exc}"[:500])
