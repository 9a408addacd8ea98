"""The chatbot reload hook: POST to AUTOTRAIN_RELOAD_URL after a rule file changed."""

from __future__ import annotations

import httpx

from autotrain.ports import ReloadResult


class HttpReloadHook:
    def __init__(self, url: str, timeout_seconds: float = 5.0) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds

    async def reload(self, module_name: str, rule_id: str, version: str) -> ReloadResult:
        payload = {
            "event": "rules_changed",
            "module_name": module_name,
            "rule_id": rule_id,
            "version": version,
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
                response = await client.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            return ReloadResult("failed", f"{type(exc).__name__}: {exc}"[:500])
        if response.is_success:
            return ReloadResult("ok")
        return ReloadResult("failed", f"HTTP {response.status_code}: {response.text[:300]}")
