"""Secrets never reach the logs: a logging filter that replaces every configured secret with [redacted].

Installed on the root logger's handlers by `autotrain serve` (and the app's start-up), it covers our logs,
Bolt's, slack_sdk's, the Anthropic SDK's and uvicorn's, messages and tracebacks alike.
"""

from __future__ import annotations

import logging

from autotrain.settings import Settings

REDACTED = "[redacted]"
_formatter = logging.Formatter()


def secrets_of(settings: Settings, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    values = [
        settings.slack_bot_token,
        settings.slack_signing_secret,
        settings.slack_app_token,
        settings.anthropic_api_key,
        settings.jwt_secret,
        settings.jwt_private_key,
        settings.webhook_secret,
    ]
    found = [v.get_secret_value() for v in values if v is not None] + list(extra)
    return tuple(sorted({s for s in found if len(s) >= 6}, key=len, reverse=True))


class SecretRedactor(logging.Filter):
    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        # Formatters print exc_text when it is set, so the redacted traceback is what is written; exc_info is
        # kept for whoever inspects the record itself.
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def install_redaction(settings: Settings, extra: tuple[str, ...] = ()) -> SecretRedactor:
    """Attach the filter to every handler of the root logger (once per handler)."""
    redactor = SecretRedactor(secrets_of(settings, extra))
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, SecretRedactor)]:
            handler.removeFilter(old)
        handler.addFilter(redactor)
    return redactor
