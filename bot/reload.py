"""The chatbot reload hook: POST to AUTOTRAIN_RELOAD_URL after a rule file changed, signed like the webhooks.

Body: `{"event": "rules_changed", "module_name", "rule_id", "version", "etag"}` — `version` and `etag` are
those `GET /autotrain/rulesets/{module_name}` answers with, so the chatbot can fetch exactly that version (or
know it already has it). Headers: `X-Autotrain-Event: rules_changed`, `X-Autotrain-Timestamp`, and
`X-Autotrain-Signature: sha256=<HMAC-SHA256 of "<timestamp>.<body>">` with AUTOTRAIN_RELOAD_SECRET (else
AUTOTRAIN_WEBHOOK_SECRET); without either the call is unsigned, and the start-up log says so."""

from __future__ import annotations

import json
import time

import httpx

from autotrain.ports import ReloadResult
from autotrain.usecases.rulesets import etag_of
from bot.webhooks import signed_headers


class HttpReloadHook:
    def __init__(self, url: str, timeout_seconds: float = 5.0, secret: str | None = None) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.secret = secret

    async def reload(self, module_name: str, rule_id: str, version: str) -> ReloadResult:
        payload = {
            "event": "rules_changed",
            "module_name": module_name,
            "rule_id": rule_id,
            "version": version,
            "etag": etag_of(version),
        }
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Auto-Train reload"}
        if self.secret:
            headers |= signed_headers(
                self.secret, "rules_changed", f"reload:{module_name}:{version}", body, time.time()
            )
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
                response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return ReloadResult("failed", f"{type(exc).__name__}: {exc}"[:500])
        if response.is_success:
            return ReloadResult("ok")
        return ReloadResult("failed", f"HTTP {response.status_code}: {response.text[:300]}")
