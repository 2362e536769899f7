"""/docs: Swagger UI served from the orchestrator's own files (api/static/vendor/, fetched by
scripts/fetch-api-docs-assets), so the page works on an offline or air-gapped host."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

from api.routes.dashboard import STATIC

VENDOR_URL = "/dashboard/static/vendor"
MISSING = ("<!doctype html><title>API docs</title><p>The Swagger UI files are not installed: run "
           "<code>scripts/fetch-api-docs-assets</code>. The schema itself is at <a href='/openapi.json'>/openapi.json</a>.</p>")


def install(app: FastAPI) -> None:
    """Create the app with `docs_url=None, redoc_url=None`, then call this: no page ever loads a CDN."""

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        if not (STATIC / "vendor" / "swagger-ui-bundle.js").is_file():
            return HTMLResponse(MISSING, status_code=503)
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API docs",
            swagger_js_url=f"{VENDOR_URL}/swagger-ui-bundle.js", swagger_css_url=f"{VENDOR_URL}/swagger-ui.css",
            swagger_favicon_url=f"{VENDOR_URL}/favicon-32x32.png", oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
