"""Intake: feedback in (API, Slack, CLI), limited per token and per end user, screened by the content filter."""

from __future__ import annotations

from autotrain.content_filter import OFFENSIVE, offensive_terms
from autotrain.errors import RateLimited
from autotrain.models import Feedback, FeedbackIn, FeedbackStatus, FeedbackType
from autotrain.options import Clock, PipelineOptions
from autotrain.policy import Action, Actor, require_permission
from autotrain.ports import FeedbackStore, RateLimiter
from autotrain.usecases.generation import GenerateRules

OFFENSIVE_CLOSED = "flagged by the content filter (offensive language); stored, but no rule is generated from it"


class SubmitFeedback:
    def __init__(
        self,
        *,
        feedback: FeedbackStore,
        generation: GenerateRules,
        rate_limiter: RateLimiter | None,
        clock: Clock,
        options: PipelineOptions,
        token_rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.feedback = feedback
        self.generation = generation
        self.rate_limiter = rate_limiter  # per end user (the body's user_id, else the actor)
        self.token_rate_limiter = token_rate_limiter  # per actor (the token's subject), whatever user_id says
        self.clock = clock
        self.options = options

    async def submit(self, data: FeedbackIn, actor: Actor, *, source: str = "api") -> Feedback:
        """Store feedback. Limited per token and per end user; offensive feedback is stored flagged and closed,
        not dropped."""
        require_permission(actor, Action.SUBMIT)
        user_id = data.user_id or actor.id
        # the token first: a client that invents a new user_id for every feedback is still one client
        if self.token_rate_limiter is not None:
            decision = await self.token_rate_limiter.hit(f"token:{actor.id}")
            if not decision.allowed:
                raise RateLimited(
                    f"too much feedback from the token of {actor.id}; try again in {decision.retry_after} s",
                    retry_after=decision.retry_after,
                )
        if self.rate_limiter is not None:
            decision = await self.rate_limiter.hit(f"feedback:{user_id}")
            if not decision.allowed:
                raise RateLimited(
                    f"too much feedback from {user_id}; try again in {decision.retry_after} s",
                    retry_after=decision.retry_after,
                )
        offensive = offensive_terms(data.query, data.feedback_text)
        feedback = await self.feedback.create_feedback(
            data,
            user_id=user_id,
            source=source,
            actor_id=actor.id,
            now=self.clock(),
            flags=(OFFENSIVE,) if offensive else (),
            closed_because=OFFENSIVE_CLOSED if offensive else None,
            settled=data.feedback_type is FeedbackType.PRAISE,  # counted, never left pending: no rule from praise
        )
        if feedback.status is not FeedbackStatus.PENDING:
            return feedback
        feedback = await self.generation.attach_to_same_complaint(feedback)
        if self.options.auto_generate and feedback.status is FeedbackStatus.PENDING:
            self.generation.generate_in_background(feedback.feedback_id)
        return feedback
