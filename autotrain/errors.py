"""Errors the pipeline raises. Each has a stable `code`; the edges map them to HTTP statuses or Slack text.

An error's text is a message template marked for the catalogues (`N_`) and its parameters: `message` is it in
English (the REST API, logs), `localized()` in the reader's language (Slack, the CLI).
"""

from __future__ import annotations

from typing import Any

from autotrain.i18n import translated


class AutotrainError(Exception):
    code = "error"

    def __init__(self, message: str, /, **params: Any) -> None:
        text = message.format(**params) if params else message
        super().__init__(text)
        self.message = text
        self.template = message
        self.params = params

    def localized(self) -> str:
        return translated(self.template, self.params)


class NotFound(AutotrainError):
    code = "not_found"


class TransitionRefused(AutotrainError):
    """The record is not in a state that allows the asked change; nothing was changed."""

    code = "transition_refused"


class EvaluationRequired(TransitionRefused):
    """AUTOTRAIN_REQUIRE_EVALUATION: the rule's replay has not passed (an admin may override, audited)."""

    code = "evaluation_required"


class FlagsNotAcknowledged(TransitionRefused):
    """The rule is flagged (`policy.rule_flags`): approving it needs `acknowledge_flags`, once a person has read
    it. Its parameters: `rule_id`, `flags` (their names, comma-separated) and `flagged` (the RuleWarnings)."""

    code = "flags_not_acknowledged"


class PermissionDenied(AutotrainError):
    code = "forbidden"


class InvalidInput(AutotrainError):
    code = "invalid_input"


class CanaryUnsupported(InvalidInput):
    """A canary (rollout below 100 %) is for JSON rule files only."""

    code = "canary_unsupported"


class RuleFileInvalid(AutotrainError):
    """The target rule file does not parse; it is never overwritten."""

    code = "rule_file_invalid"


class RuleFileWriteFailed(AutotrainError):
    """The new version could not be written (disk full, read-only folder); the old file is intact."""

    code = "rule_file_write_failed"


class GenerationFailed(AutotrainError):
    """The rule generator failed; the feedback went back to pending with its error recorded.

    `info` (a GenerationInfo) tells what the failed attempt cost, when the generator knows.
    """

    code = "generation_failed"

    def __init__(self, message: str, info: object | None = None, **params: Any) -> None:
        super().__init__(message, **params)
        self.info = info


class GenerationInProgress(AutotrainError):
    code = "generation_in_progress"


class RateLimited(AutotrainError):
    """Too many requests from one user; `retry_after` seconds until the next is accepted."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, **params: Any) -> None:
        super().__init__(message, **params)
        self.retry_after = retry_after


class StoreBusy(AutotrainError):
    """The database stayed locked (another process) past the busy timeout; nothing was changed."""

    code = "database_busy"


class StoreFull(StoreBusy):
    """The database could not grow (its disk is full, or its size limit is reached); nothing was changed.

    A kind of StoreBusy: retryable once there is room again, so every edge treats it the same way (503 with
    Retry-After, a postponed delivery), with its own code so that an operator sees what to fix."""

    code = "database_full"
