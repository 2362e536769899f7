"""Maps every error to a JSON body with an actionable message; nothing surfaces as a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from orchestrator.core.errors import DependencyError, OrchestratorError, TemporaryError
from orchestrator.observability.refusals import Refusals

from api.schemas import ErrorBody

log = logging.getLogger(__name__)


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def refused(request: Request, *, status: int, code: str, message: str, details: dict[str, object] | None = None) -> None:
    """One log line and one count for a refusal (the app's Refusals; an app built without one refuses silently)."""
    refusals: Refusals | None = getattr(request.app.state, "refusals", None)
    if refusals is not None:
        principal = getattr(request.state, "principal", None)
        refusals.refused(status=status, code=code, message=message, method=request.method, path=request.url.path,
                         details=details, client_id=getattr(principal, "client_id", None))


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Pydantic's default body echoes the input (a 10 kB slug, or a secret); ours names field and rule only.
    errors = [{"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg", "invalid")).removeprefix("Value error, ")} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    refused(request, status=422, code="invalid_input", message=detail, details={"field": ",".join(sorted({e["field"] for e in errors}))})
    return JSONResponse(status_code=422, content={"detail": detail, "code": "invalid_input", "errors": errors})


async def _domain(request: Request, exc: OrchestratorError) -> JSONResponse:
    body: dict[str, object] = {"detail": exc.message, "code": exc.code}
    if "suggestions" in exc.details:
        body["suggestions"] = exc.details["suggestions"]
    if "field" in exc.details:
        body["errors"] = [{"field": exc.details["field"], "message": exc.message}]
    headers = {"Retry-After": str(int(exc.retry_after))} if isinstance(exc, TemporaryError) else None
    if exc.status_code == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="orchestrator"'}
    details = dict(exc.details)
    if isinstance(exc, DependencyError) and exc.dependency is not None:
        details["dependency"] = exc.dependency
    refused(request, status=exc.status_code, code=exc.code, message=exc.message, details=details)
    return JSONResponse(status_code=exc.status_code, content=body, headers=headers)


# Errors raised by the framework itself (unknown path, wrong method, ...) get our body and a code too.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type"}


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "invalid_input" if exc.status_code < 500 else "internal")
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such endpoint; see /docs for the API"
    elif exc.status_code == 405:
        detail = "method not allowed on this endpoint; see /docs for the API"
    refused(request, status=exc.status_code, code=code, message=detail)
    return JSONResponse(status_code=exc.status_code, content={"detail": detail, "code": code}, headers=getattr(exc, "headers", None))


# Every route may answer these with our error body (a body that is not JSON; a field breaking its rule).
COMMON_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "the body is not valid JSON"},
    422: {"model": ErrorBody, "description": "a field breaks its rule; `errors` names each field"},
}


def operation_id(route: APIRoute) -> str:
    """The OpenAPI operationId of a route: its function's name, stable across path or tag changes."""
    return route.name


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")
    refused(request, status=500, code="internal", message=type(exc).__name__)
    return JSONResponse(status_code=500, content={"detail": "internal error; see the orchestrator log", "code": "internal"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(OrchestratorError, _domain)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
