"""Serving the app with uvicorn so that a stop (SIGTERM from docker stop / systemd) drains quickly.

Open server-sent-event streams (dashboards) would otherwise keep uvicorn waiting for ever: on the stop
signal the lifecycle feed is closed, which ends every stream, and in-flight triggers get up to
`drain_s` to finish. Agent containers are not touched: they belong to Docker, not to this process.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fastapi import FastAPI


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self.should_exit:
            # Signal handlers run between bytecodes: hop onto the loop so waiting streams wake up.
            self._loop.call_soon_threadsafe(self._app.state.feed.close)
        super().handle_exit(sig, frame)


def run(app: FastAPI, *, host: str, port: int, drain_s: float = 10.0) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=drain_s)
    DrainingServer(config, app=app).run()
