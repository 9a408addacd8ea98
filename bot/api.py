"""The REST API (FastAPI) under /autotrain, /healthz, /metrics, and Slack's /slack/events in HTTP mode.
HTTP only: parse, call the service, return records. The runtime (`bot/runtime.py`) builds everything else."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autotrain.errors import (
    AutotrainError,
    EvaluationRequired,
    FlagsNotAcknowledged,
    GenerationFailed,
    GenerationInProgress,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
    RuleFileInvalid,
    RuleFileWriteFailed,
    StoreBusy,
    StoreFull,
    TransitionRefused,
)
from autotrain.evaluation import Evaluation
from autotrain.models import (
    Deployment,
    Feedback,
    FeedbackIn,
    FeedbackStatus,
    FeedbackType,
    Rule,
    RuleDetail,
    RuleStatus,
    RunAllSummary,
    StatusReport,
)
from autotrain.pagination import MAX_OFFSET, Order
from autotrain.policy import Actor
from autotrain.service import PipelineService
from autotrain.settings import Settings
from autotrain.usecases.rulesets import RuleSet, RuleSetInfo
from bot.auth import TokenError, verify_token
from bot.metrics import CONTENT_TYPE_LATEST, prometheus_text
from bot.redaction import install_redaction
from bot.runtime import Runtime, describe, open_runtime

log = logging.getLogger("autotrain.api")

MAX_BODY_BYTES = 64 * 1024
SLACK_MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads (views with long inputs) can exceed the API's limit
T = TypeVar("T")

HTTP_STATUS: dict[type[AutotrainError], int] = {
    NotFound: 404,
    PermissionDenied: 403,
    EvaluationRequired: 409,
    FlagsNotAcknowledged: 409,
    TransitionRefused: 409,
    GenerationInProgress: 409,
    RuleFileInvalid: 409,
    InvalidInput: 422,
    GenerationFailed: 502,
    RuleFileWriteFailed: 503,
    RateLimited: 429,
    StoreFull: 503,
    StoreBusy: 503,
}


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class ListResponse(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last page")


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500)


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    acknowledge_flags: bool = Field(
        False,
        strict=True,  # an acknowledgement is a real true, never "yes" or 1
        description="approve a flagged rule (its `warnings` hold a flag): you read it; the flags are audited",
    )


class RuleEditIn(BaseModel):
    """The edit form's fields (Slack's edit modal): the rule's new line, its file, the line it replaces."""

    model_config = ConfigDict(extra="forbid")
    new_rule: str = Field(max_length=2000, description="the rule line (`- ` is added when missing)")
    module_name: str | None = Field(None, min_length=1, max_length=128, description="omitted: the rule's file")
    old_rule: str | None = Field(
        None,
        max_length=2000,
        description="the line it replaces, as in the file (case and accents aside); empty or null: append;"
        " omitted: the rule's own",
    )


class DeployIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rollout_percent: int = Field(100, ge=1, le=100, description="share of users; below 100 is a canary (JSON files)")
    override_evaluation: bool = Field(
        False, description="deploy although the replay has not passed (AUTOTRAIN_REQUIRE_EVALUATION); audited"
    )


class DeployedRule(Rule):
    """The rule after a deploy or rollback, with the deployment that was recorded."""

    deployment: Deployment


class Health(BaseModel):
    status: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 413, 422, 429, 502, 503)
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class BodySizeLimit:
    """Answer 413 to a request body over the limit before the app reads it, and 408 (closing the connection)
    to one that has not wholly arrived `read_timeout` seconds after its headers: a slow client cannot hold a
    request open (the headers' own timeout is in `bot/http_limits.py`)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, read_timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = SLACK_MAX_BODY_BYTES if scope.get("path", "").startswith("/slack/") else self.max_bytes
        too_large = error_response(413, "payload_too_large", f"the request body must be at most {limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        deadline = None if self.read_timeout is None else asyncio.get_running_loop().time() + self.read_timeout
        while more:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                too_slow = error_response(
                    408,
                    "request_timeout",
                    f"the request body did not arrive within {self.read_timeout:g} s",
                    headers={"Connection": "close"},
                )
                await too_slow(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


bearer = HTTPBearer(auto_error=False, description="`autotrain token --role admin` prints one")


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_service(request: Request) -> PipelineService:  # async: a sync dependency costs a thread hop
    return get_runtime(request).service


async def get_actor(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise StarletteHTTPException(401, "a bearer token is required (Authorization: Bearer …)")
    try:
        runtime = get_runtime(request)
        return verify_token(runtime.jwt_secret, credentials.credentials, runtime.settings.jwt_algorithm)
    except TokenError as exc:
        raise StarletteHTTPException(401, str(exc)) from exc


ServiceDep = Annotated[PipelineService, Depends(get_service)]
ActorDep = Annotated[Actor, Depends(get_actor)]
Limit = Annotated[int, Query(ge=1, le=200, description="page size, 1–200")]
Offset = Annotated[
    int, Query(ge=0, le=1_000_000_000, description=f"items to skip, at most {MAX_OFFSET:,} (page further with cursor)")
]
PageCursor = Annotated[
    str | None, Query(max_length=64, description="`next_cursor` of the previous page: the page after it")
]
ListOrder = Annotated[Order | None, Query(description="newest (the default) or oldest first")]


def build_router() -> APIRouter:
    router = APIRouter(prefix="/autotrain", responses=ERROR_RESPONSES)

    @router.post("/feedback", status_code=201, response_model=Feedback, summary="Submit feedback")
    async def submit_feedback(data: FeedbackIn, service: ServiceDep, actor: ActorDep) -> Feedback:
        return await service.submit(data, actor, source="api")

    @router.get("/feedback", response_model=ListResponse[Feedback], summary="List feedback, newest first")
    async def list_feedback(
        service: ServiceDep,
        actor: ActorDep,
        status: FeedbackStatus | None = None,
        feedback_type: FeedbackType | None = None,
        limit: Limit = 50,
        offset: Offset = 0,
        cursor: PageCursor = None,
        order: ListOrder = None,
    ) -> dict[str, Any]:
        page = await service.list_feedback(
            status=status, feedback_type=feedback_type, limit=limit, offset=offset, cursor=cursor, order=order
        )
        return page.__dict__

    @router.get("/feedback/{feedback_id}", response_model=Feedback, summary="One feedback")
    async def get_feedback(feedback_id: str, service: ServiceDep, actor: ActorDep) -> Feedback:
        return await service.get_feedback(feedback_id)

    @router.post("/generate/{feedback_id}", response_model=Rule, summary="Generate the rule of a feedback")
    async def generate(feedback_id: str, service: ServiceDep, actor: ActorDep) -> Rule:
        return await service.generate(feedback_id, actor)

    @router.get("/rules", response_model=ListResponse[Rule], summary="List rules, newest first")
    async def list_rules(
        service: ServiceDep,
        actor: ActorDep,
        status: RuleStatus | None = None,
        module_name: str | None = Query(None, max_length=128),
        limit: Limit = 50,
        offset: Offset = 0,
        cursor: PageCursor = None,
        order: ListOrder = None,
    ) -> dict[str, Any]:
        page = await service.list_rules(
            status=status, module_name=module_name, limit=limit, offset=offset, cursor=cursor, order=order
        )
        return page.__dict__

    @router.get(
        "/rules/{rule_id}",
        response_model=RuleDetail,
        summary="One rule, with the effect of its deploy (`effect`: recurrences before / since, the verdict)",
    )
    async def get_rule(rule_id: str, service: ServiceDep, actor: ActorDep) -> RuleDetail:
        return await service.rule_detail(rule_id)

    @router.patch(
        "/rules/{rule_id}",
        response_model=Rule,
        summary="Edit a pending rule (admin): its line, its file, the line it replaces; warnings recomputed",
    )
    async def edit(rule_id: str, body: RuleEditIn, service: ServiceDep, actor: ActorDep) -> Rule:
        # omitted: the rule's own old_rule (None to the service); null or "": append ("" to the service)
        old_rule = (body.old_rule or "") if "old_rule" in body.model_fields_set else None
        return await service.edit(
            rule_id, actor, new_rule=body.new_rule, module_name=body.module_name, old_rule=old_rule
        )

    @router.post(
        "/rules/{rule_id}/approve",
        response_model=Rule,
        summary='Approve a pending rule (admin); a flagged one with {"acknowledge_flags": true}',
    )
    async def approve(
        rule_id: str,
        service: ServiceDep,
        actor: ActorDep,
        body: Annotated[ApproveIn | None, Body()] = None,
    ) -> Rule:
        return await service.approve(rule_id, actor, acknowledge_flags=body.acknowledge_flags if body else False)

    @router.post("/rules/{rule_id}/reject", response_model=Rule, summary="Reject a pending or approved rule (admin)")
    async def reject(
        rule_id: str,
        service: ServiceDep,
        actor: ActorDep,
        body: Annotated[RejectIn | None, Body()] = None,
    ) -> Rule:
        return await service.reject(rule_id, actor, reason=body.reason if body else None)

    @router.post(
        "/rules/{rule_id}/deploy",
        response_model=DeployedRule,
        summary='Deploy an approved rule (admin); optional body {"rollout_percent": 10} for a canary',
    )
    async def deploy(
        rule_id: str,
        service: ServiceDep,
        actor: ActorDep,
        body: Annotated[DeployIn | None, Body()] = None,
    ) -> DeployedRule:
        body = body or DeployIn()
        result = await service.deploy(
            rule_id, actor, rollout_percent=body.rollout_percent, override_evaluation=body.override_evaluation
        )
        return DeployedRule(**result.rule.model_dump(), deployment=result.deployment)

    @router.get(
        "/rules/{rule_id}/evaluation",
        response_model=Evaluation,
        summary="The rule's replay: every case (query, answer before, answer after, verdict, reason, tokens)",
    )
    async def get_evaluation(rule_id: str, service: ServiceDep, actor: ActorDep) -> Evaluation:
        return await service.evaluation(rule_id)

    @router.post("/rules/{rule_id}/evaluate", response_model=Evaluation, summary="Replay the rule now (admin)")
    async def evaluate(rule_id: str, service: ServiceDep, actor: ActorDep) -> Evaluation:
        return await service.evaluate(rule_id, actor)

    @router.post("/rules/{rule_id}/promote", response_model=DeployedRule, summary="Take a canary to 100 % (admin)")
    async def promote(rule_id: str, service: ServiceDep, actor: ActorDep) -> DeployedRule:
        result = await service.promote(rule_id, actor)
        return DeployedRule(**result.rule.model_dump(), deployment=result.deployment)

    @router.post("/rules/{rule_id}/rollback", response_model=DeployedRule, summary="Roll back a deployed rule (admin)")
    async def rollback(rule_id: str, service: ServiceDep, actor: ActorDep) -> DeployedRule:
        result = await service.rollback(rule_id, actor)
        return DeployedRule(**result.rule.model_dump(), deployment=result.deployment)

    @router.get("/deployments", response_model=ListResponse[Deployment], summary="Deployments, newest first")
    async def list_deployments(
        service: ServiceDep,
        actor: ActorDep,
        rule_id: str | None = Query(None, max_length=32),
        limit: Limit = 50,
        offset: Offset = 0,
        cursor: PageCursor = None,
    ) -> dict[str, Any]:
        page = await service.list_deployments(rule_id=rule_id, limit=limit, offset=offset, cursor=cursor)
        return page.__dict__

    @router.get("/rulesets", response_model=RuleSetList, summary="The rule files, each with its version and ETag")
    async def list_rulesets(service: ServiceDep, actor: ActorDep) -> RuleSetList:
        return RuleSetList(items=await service.rulesets(actor))

    @router.get(
        "/rulesets/{module_name}",
        response_model=RuleSet,
        summary="One rule file: its content and rules (only those that apply to `user_id`, when given)",
        responses={304: {"description": "Not modified: `If-None-Match` holds the current ETag"}},
    )
    async def get_ruleset(
        module_name: str,
        request: Request,
        service: ServiceDep,
        actor: ActorDep,
        user_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    ) -> Response:
        etag = await service.ruleset_etag(module_name, actor)
        if etag in if_none_match(request.headers.get("if-none-match")):
            return Response(status_code=304, headers={"ETag": etag})
        ruleset = await service.ruleset(module_name, actor, user_id=user_id)
        return JSONResponse(ruleset.model_dump(mode="json"), headers={"ETag": ruleset.etag})

    @router.get("/status", response_model=StatusReport, summary="System status")
    async def status(service: ServiceDep, actor: ActorDep) -> StatusReport:
        return await service.status()

    @router.post("/run-all", response_model=RunAllSummary, summary="Generate rules for all pending feedback (admin)")
    async def run_all(service: ServiceDep, actor: ActorDep) -> RunAllSummary:
        return await service.run_all(actor)

    return router


class RuleSetList(BaseModel):
    items: list[RuleSetInfo]


def if_none_match(header: str | None) -> set[str]:
    """The ETags an If-None-Match header lists (weak ones compared by their value, as RFC 9110 says for it)."""
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AutotrainError)
    async def pipeline_error(request: Request, exc: AutotrainError) -> JSONResponse:
        status = next((code for kind, code in HTTP_STATUS.items() if isinstance(exc, kind)), 400)
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, StoreFull | RuleFileWriteFailed):  # room has to be freed first: not as soon as a lock
            headers = {"Retry-After": "60"}
        elif isinstance(exc, StoreBusy):
            headers = {"Retry-After": "5"}
        return error_response(status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in error.get('loc', ()) if part != 'body') or 'body'}: {error.get('msg')}"
            for error in exc.errors()
        ]
        return error_response(422, "invalid_input", "; ".join(problems)[:2000] or "invalid input")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body the JSON parser refused (too deep, huge numbers): invalid input
            return error_response(422, "invalid_input", f"the body is not usable JSON: {exc.detail}")
        codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def _malformed_interaction(body: bytes) -> str | None:
    """Why a form-encoded interaction (`payload=<json>`) is unusable, or None (other bodies go to Bolt as is)."""
    from urllib.parse import parse_qs

    from bot.slack.listeners import malformed_reason

    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    if "payload" not in fields:
        return None
    try:
        payload = json.loads(fields["payload"][0])
    except ValueError:
        return "the payload is not JSON"
    return malformed_reason(payload)


def create_app(
    settings: Settings | None = None,
    *,
    open_runtime_fn: Callable[[Settings], Awaitable[Runtime]] | None = None,
) -> FastAPI:
    """The ASGI app. It opens its runtime (database, service) on start-up and closes it on shutdown."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for line in describe(settings):
            log.info(line)
        opener = open_runtime_fn or (lambda s: open_runtime(s, reconcile=True))
        runtime = await opener(settings)
        install_redaction(settings, extra=(runtime.jwt_secret,) if settings.jwt_algorithm == "HS256" else ())
        app.state.runtime = runtime
        await runtime.start()
        scheduler = None
        if settings.scheduler_enabled:
            from bot.scheduler import build_scheduler

            scheduler = build_scheduler(runtime)
            scheduler.start()
        app.state.scheduler = scheduler
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            await runtime.close()

    app = FastAPI(
        title="Auto-Train",
        version="0.1.0",
        description="Feedback → rule suggestion → review → deploy, for a chatbot's prompt rules.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(build_router())

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics (admin token unless AUTOTRAIN_METRICS_PUBLIC=true)",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def metrics(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Response:
        runtime = get_runtime(request)
        if not settings.metrics_public:
            actor = await get_actor(request, credentials)
            if not actor.is_admin:
                raise PermissionDenied("/metrics needs an admin token (or AUTOTRAIN_METRICS_PUBLIC=true)")
        report = await runtime.service.status()
        body = prometheus_text(report)
        return Response(content=body, media_type=CONTENT_TYPE_LATEST)

    if settings.slack_enabled and not settings.socket_mode:
        from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
        from slack_sdk.signature import SignatureVerifier

        assert settings.slack_signing_secret is not None
        verifier = SignatureVerifier(settings.slack_signing_secret.get_secret_value())

        @app.post("/slack/events", include_in_schema=False)
        async def slack_events(request: Request) -> Response:
            # Checked here first (Bolt checks again): Bolt parses the body before it verifies, and an unsigned
            # body it cannot parse must be a 401, not a stack trace. The 5-minute replay window applies.
            body = await request.body()
            timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
            signature = request.headers.get("X-Slack-Signature", "")
            if not (timestamp.isdigit() and signature and verifier.is_valid(body, timestamp, signature)):
                return error_response(401, "unauthorized", "invalid or missing Slack signature")
            reason = _malformed_interaction(body)
            if reason:  # signed, but not what Slack sends: acknowledged (Slack shows nothing), never a 500
                log.warning("malformed Slack interaction ignored: %s", reason)
                return Response(status_code=200)
            try:
                return await AsyncSlackRequestHandler(get_runtime(request).slack.app).handle(request)
            except (ValueError, AttributeError, TypeError, LookupError) as exc:  # signed, but not a Slack payload
                log.warning("unreadable Slack request: %s", exc)
                return error_response(400, "invalid_input", "not a Slack request body")

    app.add_middleware(BodySizeLimit, read_timeout=settings.read_timeout_seconds)
    return app
