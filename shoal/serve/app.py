"""The HTTP API: `create_app(shoal)` builds it around an engine; `shoal serve` runs it on uvicorn.

Routes call the engine and the store's views, nothing else: what a ticket, a review or a run
is, and how an answer is read, is decided in one place for every face. Every /v1 route needs a
bearer token (`auth.py`); the body limit (`limits.py`) applies before any handler. Errors are
`{"error": code, "message": ...}` bodies: 401, 403, 404, 409, 413, 422 (naming each field),
429, and a 500 that carries an error id whose traceback is in the server's log, never the
trace itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal.engine import views
from shoal.engine.facade import Shoal
from shoal.errors import AnswerError, StoreError, TaskError
from shoal.inputs import check_text
from shoal.notify import Deliverer
from shoal.serve.auth import ApiError, Auth
from shoal.serve.intake import SOURCE, Intake
from shoal.serve.limits import BodyLimit
from shoal.serve.metrics import StoreCollector
from shoal.serve.schemas import (
    SHAPE_TAGS,
    ErrorBody,
    ReviewAnswer,
    Submission,
    TicketIn,
    TicketOut,
    TicketsOut,
)
from shoal.status import ReviewStatus
from shoal.store.tables import ApiToken, Ticket
from shoal.tickets.files import text_hash

log = logging.getLogger("shoal.serve")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 429, 500)
}


def create_app(shoal: Shoal, *, deliver: bool = True, work: bool = True, close_engine: bool = True) -> FastAPI:
    """The API around `shoal`. While it runs it works on the queue like a `shoal worker` (with
    `work`; without, `shoal worker` processes do) and, with `deliver`, sends webhook deliveries;
    `close_engine` closes the engine when it stops."""
    settings = shoal.settings.serve
    auth = Auth(shoal.store, settings.rate_per_minute)
    intake = Intake(shoal, settings.concurrency, work=work)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(intake.run(stop), name="shoal-intake")]
        if deliver:
            deliverer = Deliverer(shoal.store, settings)
            tasks.append(asyncio.create_task(deliverer.run(stop), name="shoal-webhooks"))
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if close_engine:
                await shoal.aclose()

    app = FastAPI(
        title="shoal",
        summary="Support tickets triaged by small specialist models that know when to ask a bigger one",
        version="1",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.intake = intake
    _errors(app)
    app.include_router(_tickets(shoal, auth, intake))
    app.include_router(_reviews_and_runs(shoal, auth, intake))
    app.include_router(_operations(shoal, auth))
    # outermost, so an oversized body is refused before anything reads it
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


# --- tickets -------------------------------------------------------------------------------


def _tickets(shoal: Shoal, auth: Auth, intake: Intake) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["tickets"], dependencies=[Depends(auth)])
    store = shoal.store

    @router.post("/tickets", status_code=202, response_model=TicketOut | TicketsOut)
    async def submit(body: Submission, response: Response) -> TicketOut | TicketsOut:
        """Submit one ticket (`{id, text}`) or a batch (`{tickets: [...]}`) for triage.

        202 when something new was accepted; 200 when every ticket was submitted before (the
        same ticket comes back, however often it is sent); 409 for an id already used with a
        different text. The result arrives on the webhooks and at GET /v1/tickets/{id}."""
        given = [body] if isinstance(body, TicketIn) else body.tickets
        where = (lambda i: "body") if isinstance(body, TicketIn) else (lambda i: f"body.tickets.{i}")
        _check_batch(shoal, given, where)
        digests = [text_hash(t.text) for t in given]
        submitted = [(t.id, t.text, digest) for t, digest in zip(given, digests, strict=True)]
        created = await store.offload(store.submit_tickets, SOURCE, submitted)
        if any(created):
            intake.wake()
        rows = {row.key: row for row in await asyncio.to_thread(store.tickets, SOURCE, [t.id for t in given])}
        out = [
            ticket_out(rows[t.id], created=new, conflict=not new and rows[t.id].text_hash != digest)
            for t, digest, new in zip(given, digests, created, strict=True)
        ]
        if isinstance(body, TicketIn):
            if out[0].conflict:
                raise ApiError(409, "conflict", f"ticket '{body.id}' was submitted before with a different text")
            response.status_code = 202 if out[0].created else 200
            return out[0]
        response.status_code = 202 if any(created) else 200
        return TicketsOut(tickets=out)

    @router.get("/tickets/{ticket_id:path}", response_model=TicketOut)
    async def ticket(ticket_id: str) -> TicketOut:
        """A submitted ticket: its status (pending, running, done, waiting, failed), queue, fields and run."""
        row = await asyncio.to_thread(store.get_ticket, SOURCE, ticket_id)
        if row is None:
            raise ApiError(404, "not_found", f"no ticket '{ticket_id}' was submitted")
        return ticket_out(row)

    return router


def caller(request: Request) -> ApiToken:
    """The token the request came with (`Auth` put it there)."""
    token: ApiToken = request.state.token
    return token


def _check_batch(shoal: Shoal, given: list[TicketIn], where: Any) -> None:
    """What the schema cannot say: the batch size, ids once each, and each text one shoal takes."""
    settings = shoal.settings
    if len(given) > settings.serve.max_batch:
        raise _invalid("body.tickets", f"at most {settings.serve.max_batch} tickets per request, not {len(given)}")
    seen: set[str] = set()
    for i, ticket in enumerate(given):
        if ticket.id in seen:
            raise _invalid(f"{where(i)}.id", f"id '{ticket.id}' appears twice in this batch")
        seen.add(ticket.id)
        try:
            check_text(ticket.text, settings.tickets.max_chars, what="text")
        except TaskError as exc:
            raise _invalid(f"{where(i)}.text", str(exc)) from None


def ticket_out(row: Ticket, *, created: bool = False, conflict: bool = False) -> TicketOut:
    return TicketOut(
        id=row.key,
        status=str(row.status),
        created=created,
        conflict=conflict,
        queue=row.queue,
        run_id=row.run_id,
        fields=json.loads(row.result_json) if row.result_json else {},
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- reviews and runs ----------------------------------------------------------------------


def _reviews_and_runs(shoal: Shoal, auth: Auth, intake: Intake) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(auth)])
    store = shoal.store

    @router.get("/reviews", tags=["reviews"])
    async def reviews() -> dict[str, list[views.ReviewLine]]:
        """The decisions waiting for a person, oldest first."""
        return {"reviews": await asyncio.to_thread(views.review_lines, store)}

    @router.post("/reviews/{review_id}", tags=["reviews"])
    async def answer(review_id: int, body: ReviewAnswer, request: Request) -> dict[str, Any]:
        """Answer a review (`answer`: the specialist's output as JSON, a label, or plain text),
        or `accept` the models' best answer; the run is queued to go on on a free worker, and its
        report as it stands comes back (the result follows at GET /v1/tickets/{id} and on the webhooks)."""
        try:
            row = await asyncio.to_thread(store.get_review, review_id)
        except StoreError:
            raise ApiError(404, "not_found", f"no review {review_id}") from None
        if row.status != ReviewStatus.PENDING:
            raise ApiError(409, "conflict", f"review {review_id} was already answered by {row.answered_by}")
        given = body.answer if not isinstance(body.answer, dict) else json.dumps(body.answer, ensure_ascii=False)
        who = body.who or caller(request).name
        try:
            report = await shoal.answer_review(review_id, given, accept=body.accept, who=who, queue=True)
            intake.wake()
        except AnswerError as exc:
            raise _invalid("body.answer", str(exc)) from None
        except StoreError as exc:  # answered by someone else between the check and now
            raise ApiError(409, "conflict", str(exc)) from None
        return report.model_dump(mode="json")

    @router.get("/runs/{run_id}", tags=["runs"])
    async def run(run_id: str) -> views.RunDetail:
        """A run (id or unique prefix) with its steps, escalations and model calls."""
        try:
            return await asyncio.to_thread(views.run_detail, store, run_id)
        except StoreError as exc:
            raise ApiError(404, "not_found", str(exc)) from None

    return router


# --- health and metrics --------------------------------------------------------------------


def _operations(shoal: Shoal, auth: Auth) -> APIRouter:
    router = APIRouter(tags=["operations"])
    store = shoal.store
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    guarded = [Depends(auth)] if shoal.settings.serve.metrics_auth else []

    def ping() -> None:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 while the server can reach its database; 503 when it cannot."""
        try:
            await asyncio.to_thread(ping)
        except Exception as exc:
            log.warning("health check: the database is unreachable: %s", exc)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @router.get("/metrics", dependencies=guarded, response_class=Response)
    async def metrics() -> Response:
        """Prometheus text: tickets, runs, reviews, escalations, model calls, tokens, spend, webhooks."""
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


# --- error bodies --------------------------------------------------------------------------


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}", fields=[{"field": field, "message": message}])


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        body = ErrorBody(error=exc.code, message=exc.message, fields=exc.fields)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for error in exc.errors():
            # the submission's shape tag ("one", "batch") is pydantic's, not a field of the body
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in SHAPE_TAGS)
            fields.append({"field": where, "message": str(error.get("msg", "invalid"))})
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "the request does not fit"
        body = ErrorBody(error="invalid", message=message, fields=fields)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        body = ErrorBody(error=codes.get(exc.status_code, "http_error"), message=str(exc.detail))
        return JSONResponse(body.model_dump(exclude_none=True), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        body = ErrorBody(
            error="internal", message=f"the server failed on this request (error id {error_id})", error_id=error_id
        )
        return JSONResponse(body.model_dump(exclude_none=True), status_code=500)
