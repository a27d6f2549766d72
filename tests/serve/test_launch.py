"""LocalService: a start cut short leaves no service behind."""

from __future__ import annotations

import _thread
import os
import signal
import threading

import pytest
from _serve_helpers import TOKEN

# ~15 s, the child may be starting Ray when stopped: an edge case of a start with a
# Ray of its own; the service's start and stop: test_ray_service.py
pytestmark = [pytest.mark.slow, pytest.mark.exhaustive]


def test_an_interrupted_start_stops_the_service_and_removes_its_ray_dir(tmp_path, sigint_raises):
    # The child runs in a session of its own: the terminal's Ctrl-C never
    # reaches it, so only start() itself can stop it. sigint_raises: where the
    # test command started with SIGINT ignored (a background job) or a library
    # put in a handler of its own, interrupt_main raised nothing.
    from serve.launch import LocalService, kill_processes_using

    service = LocalService(tmp_path, TOKEN, env={"WANDB_MODE": "disabled"})
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    try:
        try:
            with service:
                raise AssertionError("the service answered before the interruption")
        except KeyboardInterrupt:
            pass
        assert service.proc is not None and service.proc.poll() is not None
        assert not service.ray_tmp.exists()
    finally:
        timer.cancel()
        if service.proc is not None and service.proc.poll() is None:  # the old code's leftover
            os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait()
            kill_processes_using(str(service.ray_tmp))
        service.close()
