"""A plain HTTP server bound to every address of the host (0.0.0.0), as a careless database, exporter or admin
port is: what the isolation probe must not reach from inside an agent (the test makes it, on a port of its choice)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def host_wide_http(port: int) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, name=f"host-wide-http-{port}", daemon=True).start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
