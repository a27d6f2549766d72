"""Helpers for the service tests: a fake job backend, a stand-in Ray Jobs API on
loopback, episodes written with the real EpisodeWriter, and archives of them."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from browser_env.observation import make_element

TOKEN = "t" * 16 + "0123456789abcdef0123"  # 36 characters
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeBackend:
    """The JobBackend interface over a dict; ``forget()`` plays a Ray head restart."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.nodes = {"num_cpus": 4.0, "num_gpus": 1.0}  # the largest node's (capacity)
        self.submissions: list[tuple[str, str, dict[str, Any]]] = []
        self.stops: list[str] = []

    def submit(self, job_id: str, entrypoint: str, **options: Any) -> None:
        if job_id in self.states:
            raise RuntimeError(f"job {job_id} already exists")
        self.states[job_id] = "RUNNING"
        self.submissions.append((job_id, entrypoint, options))

    def status(self, job_id: str) -> str | None:
        return self.states.get(job_id)

    def stop(self, job_id: str) -> None:
        self.stops.append(job_id)

    def node_resource(self) -> dict[str, float]:
        return {"node:127.0.0.1": 0.001}

    def capacity(self, *, pinned: bool) -> dict[str, float]:
        return dict(self.nodes)

    def forget(self) -> None:
        self.states.clear()


def write_click_episode(root: Path, seed: int, target: str = "ONE") -> Path:
    """A solved one-step 'click the button labelled X' episode with a screenshot."""
    from browser_env.episodes import AgentInfo, EpisodeMeta, EpisodeWriter

    labels = ["ONE", "TWO", "THREE"]
    obs = {**click_observation(target), "screenshot": np.zeros((8, 8, 3), dtype=np.uint8)}
    goal = obs["goal"]
    writer = EpisodeWriter(
        root,
        EpisodeMeta(
            env_id="browser_env/miniwob.click-button-v0",
            task="click-button",
            seed=seed,
            source="scripted",
            goal=goal,
            agent=AgentInfo(name="expert"),
        ),
    )
    element_id = f"e{labels.index(target) + 1}"
    writer.write_step(
        obs, {"action": "CLICK", "element_id": element_id}, 1.0, True, False, {"success": True}
    )
    return Path(writer.close())


def tar_dir(root: Path, mode: str = "w:gz") -> bytes:
    """``root``'s contents as an archive, names relative to ``root``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return buffer.getvalue()


def zip_dir(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def files_under(path: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), path)
        for d, dirs, names in os.walk(path)
        for n in names + dirs
    )


def click_observation(target: str) -> dict[str, Any]:
    """The observation of the click episodes, for driving an agent without a browser."""
    labels = ["ONE", "TWO", "THREE"]
    return {
        "goal": f'Click on the "{target}" button.',
        "url": "http://localhost/click-button.html",
        "elements": tuple(
            make_element(f"e{i + 1}", "button", "button", label, bbox=(0, 0, 10, 10))
            for i, label in enumerate(labels)
        ),
        "text": " ".join(labels),
        "last_action_error": "",
    }


def wait_for(predicate, timeout: float, what: str):
    """``predicate()``'s first true value, polled every 0.3 s; AssertionError
    naming ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def running_job_record(job_id: str) -> dict[str, Any]:
    """A job record as the store holds one that was submitted and is running."""
    return {
        "job_id": job_id,
        "learner": "sft",
        "dataset_ids": [],
        "overrides": {},
        "resources": {"num_cpus": 1.0, "num_gpus": 0.0},
        "status": "running",
        "created_at": "2020-01-01T00:00:00.000Z",
        "started_at": "2020-01-01T00:00:00.000Z",
        "finished_at": None,
        "error": None,
        "attempts": 1,
        "cancel_requested": False,
    }


class JobsAPIHandler(http.server.BaseHTTPRequestHandler):
    """A stand-in Ray Jobs API: answers the client's ``/api/version`` check and
    hands every other request to :meth:`job_call` (a subclass's), quietly."""

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self.answer(
                200, json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})
            )
        else:
            self.job_call()

    def do_POST(self) -> None:
        self.job_call()

    def job_call(self) -> None:
        raise NotImplementedError

    def answer(self, status: int, body: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on 127.0.0.1 (a free port, a thread a request) for the
    block; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
