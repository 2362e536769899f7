"""Log lines carry their context fields, in JSON and console form."""

from __future__ import annotations

import json
import logging

import pytest

from orchestrator.core.logs import ConsoleFormatter, JsonFormatter, clip_tail


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


@pytest.mark.parametrize(
    ("chunks", "max_bytes", "max_line", "expected"),
    [
        ([b"a\nb\n"], 100, 10, "a\nb\n"),
        ([b"a\nb"], 100, 10, "a\nb\n"),  # a last line without newline is kept
        ([b"ab", b"c\nd", b"e\n"], 100, 10, "abc\nde\n"),  # lines split across chunks
        ([b"x" * 25 + b"\n"], 100, 10, "x" * 10 + " [... 15 more bytes]\n"),
        ([b"x" * 5, b"y" * 20, b"\nok\n"], 100, 10, "xxxxxyyyyy [... 15 more bytes]\nok\n"),
        ([b"1\n2\n3\n4\n"], 4, 10, "3\n4\n"),  # the newest lines are kept within the byte budget
        ([b"\xff\xfe\n"], 100, 10, "\ufffd\ufffd\n"),
        ([], 100, 10, ""),
    ],
)
def test_clip_tail_bounds_bytes_and_lines(chunks: list[bytes], max_bytes: int, max_line: int, expected: str) -> None:
    assert clip_tail(iter(chunks), max_bytes=max_bytes, max_line_bytes=max_line) == expected


def test_clip_tail_of_a_huge_stream_stays_small() -> None:
    tail = clip_tail((b"z" * 65536 for _ in range(320)), max_bytes=16 * 1024, max_line_bytes=2048)
    assert len(tail.encode()) <= 16 * 1024 and tail.endswith(" more bytes]\n")
