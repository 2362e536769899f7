"""Maps every error to a JSON body with an actionable message; nothing surfaces as a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from orchestrator.errors import OrchestratorError, TemporaryError

log = logging.getLogger(__name__)


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    # Pydantic's default body echoes the input (a 10 kB slug, or a secret); ours names field and rule only.
    errors = [{"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg", "invalid")).removeprefix("Value error, ")} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse(status_code=422, content={"detail": detail, "code": "invalid_input", "errors": errors})


async def _domain(_: Request, exc: OrchestratorError) -> JSONResponse:
    body: dict[str, object] = {"detail": exc.message, "code": exc.code}
    if "suggestions" in exc.details:
        body["suggestions"] = exc.details["suggestions"]
    if "field" in exc.details:
        body["errors"] = [{"field": exc.details["field"], "message": exc.message}]
    headers = {"Retry-After": str(int(exc.retry_after))} if isinstance(exc, TemporaryError) else None
    if exc.status_code == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="orchestrator"'}
    if exc.status_code >= 500:
        log.warning("request failed: %s", exc.message, extra={"code": exc.code})
    return JSONResponse(status_code=exc.status_code, content=body, headers=headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")
    return JSONResponse(status_code=500, content={"detail": "internal error; see the orchestrator log", "code": "internal"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(OrchestratorError, _domain)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
