"""A stop asked for while the embedded Ray starts: no further start is tried.

Ray 2.60's only start-up timeout that init_ray retries ("The current node timed
out during startup") is a fixed 30 s wait in Ray's Python code (``node.py``;
``RAY_raylet_start_wait_time_s`` does not shorten it), reached only when the
raylet never registers, so a real one costs half a minute or more per try and
cannot be had on demand. These tests replace ``ray.init`` alone by a start
that fails with Ray's own message; the rest of the start and the clean-up
(temp dir, Ray's shutdown, the process scan) are the real ones.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from _serve_helpers import TOKEN

ray = pytest.importorskip("ray")

TIMED_OUT = (
    "The current node timed out during startup. This could happen because some "
    "of the raylet failed to startup or the GCS has become overloaded."
)


class FailingStart:
    """``ray.init``'s stand-in: every start times out, with Ray's message.
    ``tries``: the session dir of each; ``on_try(n)`` runs during start n."""

    def __init__(self) -> None:
        self.tries: list[str] = []
        self.on_try: Callable[[int], object] = lambda n: None
        self.message = TIMED_OUT

    def __call__(self, **kwargs: Any) -> None:
        self.tries.append(kwargs["_temp_dir"])
        os.makedirs(os.path.join(kwargs["_temp_dir"], "session_x", "logs"))  # as Ray would
        self.on_try(len(self.tries))
        raise Exception(self.message)


@pytest.fixture
def failing_start(monkeypatch):
    """A :class:`FailingStart` in place of ``ray.init``; the environment that
    init_ray and start_ray change is put back afterwards."""
    if os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        pytest.skip("needs no Ray in this process and no RAY_ADDRESS (an embedded start)")
    from ray._private import ray_constants

    names = (
        "RAY_USAGE_STATS_ENABLED",
        "RAY_raylet_start_wait_time_s",
        "RAY_worker_register_timeout_seconds",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
        "RAY_AUTH_MODE",
        "RAY_AUTH_TOKEN",
        "BROWSER_RL_SERVE_TOKEN",
    )
    saved = {name: os.environ.get(name) for name in names}
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    start = FailingStart()
    monkeypatch.setattr(ray, "init", start)
    try:
        yield start
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_a_signal_during_the_first_ray_start_tries_no_other(failing_start, tmp_path, capsys):
    """``python -m serve``'s run(), told to stop during its first Ray start
    (here through ``until``, as its SIGTERM handler does through its own
    event), gives up after that start instead of trying the remaining ones,
    and leaves no Ray temp dir."""
    from serve.__main__ import run
    from serve.launch import free_port

    until = threading.Event()
    failing_start.on_try = lambda n: until.set()
    os.environ["BROWSER_RL_SERVE_TOKEN"] = TOKEN
    run(
        {"state_dir": str(tmp_path / "state"), "port": free_port(), "ray_start_attempts": 3},
        until=until,
    )
    assert len(failing_start.tries) == 1, failing_start.tries
    assert "stopped by a signal during start-up" in capsys.readouterr().out
    assert not os.path.exists(os.path.dirname(failing_start.tries[0]))
    assert not ray.is_initialized()


def test_ray_starts_without_the_services_token_in_its_environment(failing_start, tmp_path):
    """Every Ray process (raylet, workers, the replica, each job, its actors
    and their browsers) inherits the environment ``ray.init`` runs in: the
    token is out of it then (the replica gets it as an argument), and back in
    the caller's environment afterwards."""
    from serve.__main__ import run
    from serve.launch import free_port

    seen = []
    failing_start.on_try = lambda n: seen.append(dict(os.environ))
    os.environ["BROWSER_RL_SERVE_TOKEN"] = TOKEN
    settings = {"state_dir": str(tmp_path / "state"), "port": free_port(), "ray_start_attempts": 1}
    with pytest.raises(Exception, match="timed out during startup"):
        run(settings, until=threading.Event())
    [environ] = seen
    assert "BROWSER_RL_SERVE_TOKEN" not in environ
    assert TOKEN not in environ.values()
    assert os.environ["BROWSER_RL_SERVE_TOKEN"] == TOKEN


@pytest.mark.parametrize("stopped_after", [None, 1, 2])
def test_init_ray_retries_a_start_that_timed_out_until_stopped(failing_start, stopped_after):
    """Without ``stop`` every one of ``attempts`` starts is tried; with a stop
    set during start n, n starts. Either way the last start's error is raised
    and the temp dir init_ray made is gone."""
    from browser_env.ray_local import init_ray

    stop = threading.Event()
    failing_start.on_try = lambda n: stop.set() if n == stopped_after else None
    given = {} if stopped_after is None else {"stop": stop.is_set}
    with pytest.raises(Exception, match="timed out during startup"):
        init_ray(num_cpus=1, attempts=3, **given)
    assert len(failing_start.tries) == (stopped_after or 3), failing_start.tries
    assert len({os.path.dirname(t) for t in failing_start.tries}) == 1
    assert not os.path.exists(os.path.dirname(failing_start.tries[0]))


def test_init_ray_retries_rays_other_start_timeout_too(failing_start):
    """Ray's wait for the object store ("Timed out after 30 seconds while
    waiting for node to startup") is retried as well: the check reads the
    message without regard to case."""
    from browser_env.ray_local import init_ray

    failing_start.message = "Timed out after 30 seconds while waiting for node to startup."
    with pytest.raises(Exception, match="Timed out after"):
        init_ray(num_cpus=1, attempts=2)
    assert len(failing_start.tries) == 2


def _run_serve(tmp_path, *args: str, token: str | None = TOKEN):
    from _commands import python_m

    env = {} if token is None else {"BROWSER_RL_SERVE_TOKEN": token}
    unset = ["RAY_ADDRESS", *(["BROWSER_RL_SERVE_TOKEN"] if token is None else [])]
    return python_m("serve", *args, cwd=tmp_path, env=env, unset=unset, timeout=60)


@pytest.mark.parametrize("mistake", ["state-dir-is-a-file", "short-token", "port-in-use"])
def test_python_m_serve_refuses_a_bad_config_in_one_line_before_ray_starts(tmp_path, mistake):
    """``python -m serve`` with a state_dir that is a file, a token too short,
    or a port something else listens on: ``error: ...`` on stderr, exit 2, no
    traceback, and no Ray start (which alone takes ~30 s)."""
    import socket
    import time

    state = tmp_path / "state"
    token = TOKEN
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if mistake == "port-in-use" else 1
        if mistake == "state-dir-is-a-file":
            state.write_text("not a directory")
        elif mistake == "short-token":
            token = "short"
        began = time.monotonic()
        done = _run_serve(tmp_path, f"state_dir={state}", f"port={port}", token=token)
    assert time.monotonic() - began < 20, done.stderr
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr
    expected = {
        "state-dir-is-a-file": "not a directory",
        "short-token": "5 characters",
        "port-in-use": f"port {port} on 127.0.0.1 is in use: pass another port=",
    }
    assert expected[mistake] in last
