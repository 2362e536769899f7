"""GET /dashboard: the operator's web page (static HTML/JS/CSS; it asks for an API key and calls the admin API).

The page itself holds no data, so it is open; everything it shows comes from key-protected endpoints.
The LiveKit JS client is served from api/static/vendor/, filled by scripts/fetch-dashboard-assets.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(tags=["dashboard"])


@router.get("/dashboard", response_class=FileResponse, include_in_schema=True)
async def dashboard() -> FileResponse:
    # no-store: an upgrade of the orchestrator must not leave a stale page talking to a new API.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


def mount_static(app: FastAPI) -> None:
    app.mount("/dashboard/static", StaticFiles(directory=STATIC, check_dir=True), name="dashboard-static")
