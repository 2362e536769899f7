"""The test world's tenants and the in-process app: plain helpers (no fixtures), shared by tests and the bench."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from orchestrator.settings import Settings
from devtools.livekit_server import LiveKitServer

CLIENT_ID = "df91fd06-816f-4273-a903-5a4861277040"
OTHER_CLIENT_ID = "acme"


def write_tenants(path: Path, livekit: LiveKitServer) -> Path:
    creds = {"url": livekit.url, "api_key": livekit.api_key, "api_secret": livekit.api_secret}
    data = {
        "clients": [
            {
                "id": CLIENT_ID, "name": "Autonomite", "livekit": creds,
                "agents": [
                    {"id": "agent-clarence", "slug": "clarence-coherence", "name": "Clarence Coherence",
                     "instructions": "Be calm.", "greeting": "Hello, I'm Clarence."},
                    {"id": "agent-farah", "slug": "farah", "name": "Farah", "greeting": "Hi, Farah here."},
                    {"id": "agent-litebridge", "slug": "litebridge", "name": "Litebridge"},
                ],
            },
            {"id": OTHER_CLIENT_ID, "name": "Acme", "livekit": creds,
             "agents": [{"id": "agent-acme-farah", "slug": "farah", "name": "Acme Farah"}]},
        ]
    }
    path.write_text(yaml.safe_dump(data))
    return path


@asynccontextmanager
async def app_client(settings: Settings, **adapters: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on the real engine, called in-process (no port), with its lifespan run.

    `adapters` go to create_app (a tenant store or runtime of the test's own)."""
    from api.app import create_app

    app = create_app(settings, **adapters)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            yield client
