"""`python -m agent_image`: the container's entry point; its exit code tells a normal end from a failure."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping

from . import warm
from .config import ConfigError, parse_env
from .lifecycle import Exit
from .tracing import AgentTrace, preload_sdk, traces_endpoint

STARTED_NS = time.time_ns()  # `agent.load` of a cold start begins here, before the rtc library is imported


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("AGENT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    log = logging.getLogger("agent_image")
    source: Mapping[str, str] = os.environ
    load_from, launch = STARTED_NS, "cold"
    if warm.is_warm(os.environ):
        from . import run  # noqa: F401  (warm: the rtc library and the agent are loaded before the wait)

        if os.environ.get("AGENT_WARM_PRELOAD_LLM", "").strip() == "1":
            try:
                from . import llm  # noqa: F401  (livekit-agents: slow to import, so loaded while waiting)
            except ImportError:
                pass

        if traces_endpoint(os.environ):
            preload_sdk()  # tracing is on in this deployment: the SDK's import is not paid after the claim

        log.info("warm: waiting for an assignment")
        try:
            assigned = warm.await_assignment(os.environ)
        except ConfigError as exc:
            log.error("bad assignment: %s", exc)
            return Exit.CONFIG
        if assigned is None:
            log.info("warm: no assignment came (stdin closed or max age reached); exiting")
            return Exit.OK
        log.info("warm: assignment received")
        source, load_from, launch = assigned, time.time_ns(), "warm"
    try:
        env = parse_env(source)
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return Exit.CONFIG
    from .run import Supervisor  # after config: a config error needs no SDK to be reported

    async def run() -> Exit:
        # Built inside the running loop: rtc.Room binds its event delivery to the loop current at creation.
        trace = AgentTrace.from_env(source, started_ns=load_from, attributes={
            "agent.launch": launch, "livekit.room": env.room, "livekit.identity": env.agent.identity,
        })
        return await Supervisor(env, trace=trace).run()

    try:
        return int(asyncio.run(run()))
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return Exit.CONFIG
    except Exception:
        log.exception("agent crashed")
        return Exit.CRASH


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # The native LiveKit library's threads can abort the interpreter's own teardown (exit 134 instead of the
    # code we chose was seen when the server refused the connection): the exit code is the contract, so skip it.
    os._exit(int(code))
