"""Structured logs: one JSON object per line (or a readable console line), with context fields.

Context (client_id, agent_slug, room, container, ...) travels in `extra=`; every such field is
emitted, so `grep '"room": "test-room-1"'` finds a room's whole story. Secrets never go in `extra`.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

# Record attributes that are not context; uvicorn adds `color_message`, a duplicate of the message.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "color_message"}


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(_LibraryJsonFormatter):
    """python-json-logger's formatter with our field names: ts, level, logger, msg, the context, exc.

    The names are the ones operators already grep and ship (`"room": "…"`, `"level": "error"`), so the
    library is configured to them rather than the other way round."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "message": "msg", "exc_info": "exc"},
            reserved_attrs=sorted(_STANDARD),
            json_default=str,  # a context value the encoder does not know (a Path, an enum) is logged, not lost
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["ts"] = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        super().add_fields(log_data, record, message_dict)
        log_data["level"] = record.levelname.lower()
        for key in [k for k in log_data if k.startswith("_")]:
            del log_data[key]  # private attributes a library hangs on the record are not context


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
