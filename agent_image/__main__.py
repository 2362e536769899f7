"""`python -m agent_image`: the container's entry point; its exit code tells a normal end from a failure."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from .config import ConfigError, parse_env
from .lifecycle import Exit


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("AGENT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    log = logging.getLogger("agent_image")
    try:
        env = parse_env(os.environ)
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return Exit.CONFIG
    from .run import Supervisor  # after config: a config error needs no SDK to be reported

    async def run() -> Exit:
        # Built inside the running loop: rtc.Room binds its event delivery to the loop current at creation.
        return await Supervisor(env).run()

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
