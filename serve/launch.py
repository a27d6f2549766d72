"""Start ``python -m serve`` as a child process and wait until it answers.

For tests, benchmarks and scripts that need a real service on loopback:
:class:`LocalService` runs it in its own session with a state dir, a free
port, a Ray temp dir of its own and (optionally) its own ``HOME``, and can
stop it politely, kill it outright, and start it again on the same state.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from browser_env.ray_local import free_port, kill_processes_using

__all__ = ["LocalService", "free_port", "kill_processes_using"]


class LocalService:
    """One ``python -m serve`` on 127.0.0.1 with ``token``; ``settings`` are
    extra ``key=value`` overrides."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        token: str,
        settings: Sequence[str] = (),
        *,
        home: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = self.root / "state"
        self.token = token
        self.settings = list(settings)
        self.home = None if home is None else Path(home)
        self.extra_env = dict(env or {})
        self.port = free_port()
        # Short and under /tmp: Ray's unix socket paths have a length limit.
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="brl-ray-", dir="/tmp"))
        self.log = self.root / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> None:
        """Start the service and wait for ``/healthz``; RuntimeError with the
        log's tail when it exits or does not answer within ``timeout``. Any
        error or interruption (Ctrl-C) before it answers stops it: in a
        session of its own, it would not get the terminal's SIGINT."""
        from serve.client import TrainingClient

        env = {**os.environ, **self.extra_env, "BROWSER_RL_SERVE_TOKEN": self.token}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env.pop("RAY_ADDRESS", None)
        env.pop("RAY_AUTH_TOKEN", None)  # the embedded instance makes its own
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True)
            env["HOME"] = str(self.home)
        command = [
            sys.executable,
            "-m",
            "serve",
            f"state_dir={self.state}",
            f"port={self.port}",
            f"ray_temp_dir={self.ray_tmp}",
            *self.settings,
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        try:
            with TrainingClient(self.url, self.token, timeout=10) as client:
                while time.monotonic() < deadline:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"the service exited:\n{self.tail()}")
                    try:
                        client.health()
                        return
                    except Exception:
                        time.sleep(1.0)
            raise RuntimeError(f"the service did not answer within {timeout} s:\n{self.tail()}")
        except BaseException:
            self.stop()  # and whatever Ray processes it left
            raise

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the service process alone (no cleanup of any kind)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM and wait; then SIGKILL whatever is left in its session."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_processes_using(str(self.ray_tmp))  # Ray processes a kill left behind

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def __enter__(self) -> LocalService:
        try:
            self.start()
        except BaseException:  # __exit__ will not run: remove the Ray temp dir here
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
