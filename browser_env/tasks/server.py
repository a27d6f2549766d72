"""A static file server on 127.0.0.1 for bundled task pages.

MiniWoB++'s flight tasks need http (not file://), and serving every suite the
same way keeps URLs uniform. One server per directory per process, started on
first use in a daemon thread on a free port; it only reads files under its
directory and only listens on loopback.
"""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["serve_directory"]

_LOCK = threading.Lock()
_SERVERS: dict[tuple[int, Path, str], ThreadingHTTPServer] = {}


class _QuietHandler(SimpleHTTPRequestHandler):
    # Pages without a <meta charset> would otherwise be decoded as windows-1252.
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".html": "text/html; charset=utf-8",
        ".htm": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".json": "application/json; charset=utf-8",
        ".txt": "text/plain; charset=utf-8",
    }

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "max-age=3600")
        super().end_headers()


def serve_directory(directory: str | Path, host: str = "127.0.0.1") -> str:
    """Serve ``directory`` over http and return the base URL (ending in ``/``)."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"cannot serve {root}: not a directory")
    with _LOCK:
        key = (os.getpid(), root, host)  # a forked child starts its own server
        server = _SERVERS.get(key)
        if server is None:
            handler = functools.partial(_QuietHandler, directory=str(root))
            server = ThreadingHTTPServer((host, 0), handler)
            server.daemon_threads = True
            thread = threading.Thread(
                target=server.serve_forever, name=f"serve:{root.name}", daemon=True
            )
            thread.start()
            _SERVERS[key] = server
    host_, port = server.server_address[:2]
    return f"http://{host_}:{port}/"
