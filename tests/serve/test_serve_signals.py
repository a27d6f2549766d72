"""``python -m serve`` told to stop while it starts: a process of its own each
(apart from test_ray_service.py's module service, so that pytest-xdist can run
the two files side by side)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _serve_helpers import TOKEN, wait_for

from browser_env.ray_local import processes_using

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
pytest.importorskip("ray.serve")

REPO = Path(__file__).resolve().parents[2]


def _ray_dir_of(pid: int) -> str | None:
    """The temp dir of the embedded Ray that process ``pid`` started, from its
    children's command lines (each names its session dir)."""
    import psutil

    for child in psutil.Process(pid).children(recursive=True):
        try:
            found = re.search(r"/tmp/ray-rollouts-[A-Za-z0-9_]+", " ".join(child.cmdline()))
        except psutil.Error:
            continue
        if found:
            return found.group(0)
    return None


@pytest.mark.parametrize(
    "moment",
    [  # ~20 s each, a Ray of its own: exhaustive; the service's SIGTERM once it runs (its
        # clean stop): test_ray_service.py's module service, stopped by LocalService.close
        pytest.param("ray-init", marks=pytest.mark.exhaustive),
        pytest.param("serve-run", marks=pytest.mark.exhaustive),
    ],
)
def test_a_sigterm_during_start_up_leaves_no_ray_behind(tmp_path, moment):
    """``python -m serve`` told to stop while it starts -- while Ray starts, or
    while Serve deploys the app (where Ray's native SIGTERM handler used to
    abort it before any clean-up) -- exits 0 and leaves no Ray process and no
    Ray temp dir. ~30 s: one Ray start."""
    env = {
        **os.environ,
        "BROWSER_RL_SERVE_TOKEN": TOKEN,
        "RAY_USAGE_STATS_ENABLED": "0",
        "WANDB_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    log = tmp_path / "service.log"
    from serve.launch import free_port

    command = [
        sys.executable,
        "-m",
        "serve",
        f"state_dir={tmp_path / 'state'}",
        f"port={free_port()}",
        "ray_num_cpus=1",
        "ray_start_attempts=6",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ray_dir = None
    try:
        ray_dir = wait_for(lambda: _ray_dir_of(proc.pid), 600, "the service's Ray to start")
        if moment == "serve-run":  # serve.start is done; serve.run deploys the app
            wait_for(lambda: b"Started Serve" in log.read_bytes(), 600, "Serve to start")
        assert b"training service on" not in log.read_bytes(), "started before the signal"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=180)
        assert code == 0, log.read_text(errors="replace")[-3000:]
        wait_for(lambda: not processes_using(ray_dir), 30, "the service's Ray processes to go")
        assert not os.path.exists(ray_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if ray_dir is not None:
            from serve.launch import kill_processes_using

            kill_processes_using(ray_dir)
            shutil.rmtree(ray_dir, ignore_errors=True)
