"""Run an ASGI app with uvicorn in a background thread (tests, notebooks, one process)."""

from __future__ import annotations

import threading
import time
from typing import Any

from agents.backends.common import require

__all__ = ["ServerThread"]


class ServerThread:
    """Run an app with uvicorn in a background thread; ``port=0`` picks a free port.

    ::

        with ServerThread(create_app(backend, "tiny")) as server:
            OpenAIBackend(server.base_url, "tiny").generate(...)
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        uvicorn = require("uvicorn", purpose="the OpenAI-compatible server")
        self.host = host
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name="openai-server", daemon=True)
        self.port = port

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
