"""Log lines carry their context fields, in JSON and console form."""

from __future__ import annotations

import json
import logging

from orchestrator.logs import ConsoleFormatter, JsonFormatter


def record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("t")
    rec = logger.makeRecord("t", logging.INFO, "f.py", 1, "agent %s", ("created",), None, extra=extra)
    return rec


def test_json_line_has_message_and_context() -> None:
    line = json.loads(JsonFormatter().format(record(client_id="c1", room="r1", container="agent_x")))
    assert line["msg"] == "agent created" and line["level"] == "info"
    assert (line["client_id"], line["room"], line["container"]) == ("c1", "r1", "agent_x")


def test_console_line_has_context() -> None:
    line = ConsoleFormatter().format(record(room="r1"))
    assert "agent created" in line and "room=r1" in line
