"""Structured logs: one JSON object per line (or a readable console line), with context fields.

Context (client_id, agent_slug, room, container, ...) travels in `extra=`; every such field is
emitted, so `grep '"room": "test-room-1"'` finds a room's whole story. Secrets never go in `extra`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from collections import deque
from collections.abc import Iterable
from typing import Literal

# Record attributes that are not context; uvicorn adds `color_message`, a duplicate of the message.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "color_message"}


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line}  [{ctx}]" if ctx else line
        return f"{line}\n{self.formatException(record.exc_info)}" if record.exc_info else line


def configure(*, fmt: Literal["json", "console"], level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def clip_tail(chunks: Iterable[bytes], *, max_bytes: int = 16 * 1024, max_line_bytes: int = 2048) -> str:
    """The end of a log stream in at most `max_bytes`, each line cut to `max_line_bytes`.

    "The last 20 lines" of an agent can be 20 lines of a megabyte each; what we copy into our own log
    (and hold in memory while reading) stays bounded whatever the agent printed.
    """
    kept: deque[bytes] = deque()
    size = 0
    line, cut = bytearray(), 0

    def finish() -> None:
        nonlocal size, line, cut
        done = bytes(line) + (f" [... {cut} more bytes]".encode() if cut else b"") + b"\n"
        kept.append(done)
        size += len(done)
        while size > max_bytes and kept:
            size -= len(kept.popleft())
        line, cut = bytearray(), 0

    for chunk in chunks:
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            room = max_line_bytes - len(line)
            line += piece[:room]
            cut += max(0, len(piece) - room)
            finish()
        room = max_line_bytes - len(line)
        line += rest[:room]
        cut += max(0, len(rest) - room)
    if line or cut:
        finish()
    return b"".join(kept).decode(errors="replace")
