"""The real app served by uvicorn on a loopback port, so livekit-server can deliver webhooks to it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import httpx
import uvicorn

from orchestrator.settings import Settings


@dataclass
class OrchestratorServer:
    settings: Settings
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def app(self):  # type: ignore[no-untyped-def]
        return self.server.config.app

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, timeout=15)


async def start_orchestrator(settings: Settings, *, timeout_s: float = 10.0) -> OrchestratorServer:
    from api.app import create_app

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient() as client:
        while asyncio.get_running_loop().time() < deadline:
            if task.done():
                task.result()  # raises the start-up error
            try:
                if (await client.get(f"http://127.0.0.1:{settings.port}/healthz")).status_code in (200, 503):
                    return OrchestratorServer(settings=settings, server=server, task=task)
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"orchestrator did not come up on port {settings.port} within {timeout_s}s")
