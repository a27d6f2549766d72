"""Whether a server can listen where it was told to, asked before it starts:
the OpenAI-compatible server checks before its model loads, the training
service before Ray starts (each would otherwise fail much later, with a
library's error about the bind)."""

from __future__ import annotations

import errno
import socket

__all__ = ["check_port_free"]


def check_port_free(host: str, port: int) -> None:
    """Raise ``ValueError`` when ``host:port`` cannot be bound (as uvicorn and
    Ray Serve's proxy bind it: ``SO_REUSEADDR``), naming the port and ``port=``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use: pass another port=") from None
        reason = exc.strerror or str(exc)
        raise ValueError(f"cannot listen on {host}:{port}: {reason}") from None
