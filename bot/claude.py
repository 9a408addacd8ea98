"""Claude as a rule generator, through the official SDK (`AsyncAnthropic`, 2.x, on httpx2).

The answer comes back as structured output: the request carries RuleAnswer's JSON schema in
`output_config.format` (the schema `messages.parse(output_format=RuleAnswer)` would send, made by the SDK's
`transform_schema`), so the API constrains the answer to it, and pydantic validates the text into RuleAnswer;
nothing is read out of free text with patterns. We call `messages.with_raw_response.create` rather than
`messages.parse` because parse raises on an answer that does not validate before we can see it: its usage
(the tokens are paid for all the same), its stop_reason (a refusal is a decline, a max_tokens cut-off needs a
larger limit, not a re-ask) and the SDK's own retry count would be lost.

The SDK retries 429 (honouring retry-after), 5xx, timeouts and connection errors up to `max_retries`; an
answer that does not validate is asked for again up to `output_retries`. After that the generation fails
with GenerationFailed, and the service puts the feedback back to pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import anthropic
import pydantic
from anthropic import AsyncAnthropic

from autotrain.errors import GenerationFailed
from autotrain.models import Feedback, GenerationInfo, Rule, RuleProposal, RuleType
from autotrain.ports import GenerationResult
from autotrain.prompts import SYSTEM_PROMPT, RuleAnswer, build_user_message, unfence
from autotrain.settings import Settings
from bot.ratelimit import Throttle

# The schema messages.parse(output_format=RuleAnswer) sends, built once.
ANSWER_SCHEMA = anthropic.transform_schema(RuleAnswer)

log = logging.getLogger("autotrain.claude")


class ClaudeRuleGenerator:
    name = "claude"
    quotes_feedback = False

    def __init__(
        self,
        client: AsyncAnthropic,
        *,
        model: str,
        max_tokens: int = 1024,
        output_retries: int = 1,
        throttle: Throttle | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.output_retries = output_retries
        self.throttle = throttle

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaudeRuleGenerator:
        assert settings.anthropic_api_key is not None
        client = AsyncAnthropic(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            timeout=settings.claude_timeout_seconds,
            max_retries=settings.claude_max_retries,
        )
        return cls(
            client,
            model=settings.model,
            max_tokens=settings.claude_max_tokens,
            output_retries=settings.claude_output_retries,
            throttle=Throttle(settings.claude_rate_limit, settings.rate_limit_storage),
        )

    async def generate(
        self, feedback: Feedback, current_rules: Mapping[str, Sequence[str]], *, recurrence: Rule | None = None
    ) -> GenerationResult:
        message = build_user_message(feedback, current_rules, recurrence)
        input_tokens = output_tokens = 0
        requests = 0
        started = time.perf_counter()

        def spent() -> GenerationInfo:
            return GenerationInfo(
                generator=self.name,
                model=self.model,
                input_tokens=input_tokens or None,
                output_tokens=output_tokens or None,
                latency_ms=int((time.perf_counter() - started) * 1000),
                attempts=requests,
            )

        problem = ""
        for _ in range(self.output_retries + 1):
            if self.throttle is not None:
                await self.throttle.wait("anthropic")  # our own pace, below the API's limits
            try:
                raw = await self.client.messages.with_raw_response.create(
                    model=self.model,
                    max_tokens=self.max_tokens,
                    system=SYSTEM_PROMPT,
                    messages=[{"role": "user", "content": message}],
                    output_config={"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}},
                )
                response = await raw.parse()
            except anthropic.APIStatusError as exc:
                requests += 1 + self.client.max_retries  # a status error is raised once the retries are spent
                raise GenerationFailed(_status_problem(exc), spent()) from exc
            except anthropic.APITimeoutError as exc:
                requests += 1 + self.client.max_retries
                raise GenerationFailed("Claude did not answer in time (after retries)", spent()) from exc
            except anthropic.APIConnectionError as exc:
                requests += 1 + self.client.max_retries
                raise GenerationFailed(f"could not reach the Claude API: {exc}", spent()) from exc
            requests += 1 + raw.retries_taken
            input_tokens += response.usage.input_tokens
            output_tokens += response.usage.output_tokens
            if response.stop_reason == "refusal":
                return GenerationResult(None, spent(), declined="Claude refused to write a rule for this feedback")
            if response.stop_reason == "max_tokens":
                # asking again with the same limit would be cut off again
                problem = f"Claude's answer was cut off at {self.max_tokens} tokens; raise AUTOTRAIN_CLAUDE_MAX_TOKENS"
                break
            text = "".join(block.text for block in response.content if block.type == "text")
            if not text.strip():
                kinds = ", ".join(block.type for block in response.content) or "none"
                problem = f"Claude's answer held no text to read (content blocks: {kinds})"
                log.warning("%s (feedback %s)", problem, feedback.feedback_id)
                continue
            try:
                answer = RuleAnswer.model_validate_json(text)
            except pydantic.ValidationError as exc:
                problem = f"Claude's answer did not match the rule schema: {_first_error(exc)}"
                log.warning("%s (feedback %s)", problem, feedback.feedback_id)
                continue
            return self._result(answer, spent())
        raise GenerationFailed(f"{problem} (after {requests} requests)", spent())

    @staticmethod
    def _result(answer: RuleAnswer, info: GenerationInfo) -> GenerationResult:
        if answer.decline_reason:
            return GenerationResult(None, info, declined=answer.decline_reason.strip()[:500])
        proposal = RuleProposal(
            module_name=answer.module_name.strip(),
            rule_type=RuleType(answer.rule_type),
            old_rule=unfence(answer.old_rule) if answer.old_rule else None,
            new_rule=unfence(answer.new_rule),
            reasoning=answer.reasoning,
            confidence=answer.confidence,
        )
        return GenerationResult(proposal, info)


def _first_error(exc: pydantic.ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)[:200]
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "answer"
    return f"{where}: {first.get('msg')}"[:300]


def _status_problem(exc: anthropic.APIStatusError) -> str:
    status = exc.status_code
    if status == 429:
        return "Claude API rate limit (429), still limited after retries"
    if status >= 500:
        return f"Claude API error {status} after retries"
    if status in (401, 403):
        return f"Claude API refused the key ({status}); check ANTHROPIC_API_KEY"
    return f"Claude API refused the request ({status}): {str(exc.message)[:300]}"
