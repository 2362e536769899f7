"""`python -m agent_image.healthcheck`: exit 0 when the agent is healthy (the Docker HEALTHCHECK)."""

import os
import sys
import time

from .health import read, verdict


def main() -> int:
    healthy, why = verdict(read(os.environ.get("AGENT_HEALTH_FILE", "/tmp/agent-health.json")), now=time.time())
    print(why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
