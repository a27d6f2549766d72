"""``serve.job_entry.stop_on_sigterm``: SIGTERM stops the job's main thread once,
even when its handler ran where Python drops exceptions (a weakref callback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref

import pytest

from serve.job_entry import Stopped, stop_on_sigterm


def _wait(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_sigterm_raises_stopped_and_the_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped), stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        _wait(10)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_dropped_in_a_weakref_callback_is_raised_again():
    """The handler runs inside the callback (right after ``os.kill`` returns to
    ``finalize.__call__``), where Python reports its exception as unraisable and
    goes on: without the hook the block would wait its 10 s out and end normally."""

    class Thing:
        pass

    reported = []
    before_hook = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        start = time.monotonic()
        with pytest.raises(Stopped), stop_on_sigterm():
            thing = Thing()
            weakref.finalize(thing, os.kill, os.getpid(), signal.SIGTERM)
            del thing  # the callback runs here, and its Stopped is dropped
            _wait(10)
        assert time.monotonic() - start < 5
        assert sys.unraisablehook == reported.append
        assert reported == []  # the dropped Stopped is the hook's own business
    finally:
        sys.unraisablehook = before_hook


def test_other_unraisable_exceptions_still_reach_the_previous_hook():
    class Thing:
        pass

    def fail():
        raise RuntimeError("in a callback")

    reported = []
    before_hook = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        with stop_on_sigterm():
            thing = Thing()
            weakref.finalize(thing, fail)
            del thing
        assert [type(r.exc_value) for r in reported] == [RuntimeError]
    finally:
        sys.unraisablehook = before_hook


def test_then_sets_the_handler_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    try:
        with stop_on_sigterm(then=signal.SIG_IGN):
            pass
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_second_sigterm_while_the_first_is_handled_kills_outright():
    """As ``ray job stop`` escalates: a job whose cleanup hangs can still be ended."""
    script = (
        "import os, signal, time\n"
        "from serve.job_entry import Stopped, stop_on_sigterm\n"
        "with stop_on_sigterm():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(10)\n"
        "    except Stopped:\n"
        "        print('stopped', flush=True)\n"
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(10)\n"
        "print('survived', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert done.stdout == "stopped\n"


def test_a_sigterm_before_the_dropped_ones_timer_fires_is_the_one_raised():
    """A Stopped dropped in a weakref callback is raised again by a timer 10 ms
    later; a real SIGTERM inside those 10 ms raised Stopped itself, and then
    the timer's counted as a second SIGTERM and killed the job before its
    result was written. That SIGTERM now cancels the timer."""
    script = (
        "import os, signal, time, weakref\n"
        "from serve.job_entry import Stopped, stop_on_sigterm\n"
        "class Thing: pass\n"
        "with stop_on_sigterm():\n"
        "    try:\n"
        "        thing = Thing()\n"
        "        weakref.finalize(thing, os.kill, os.getpid(), signal.SIGTERM)\n"
        "        del thing\n"  # dropped: the timer is set
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(10)\n"
        "    except Stopped:\n"
        "        time.sleep(0.5)\n"  # the timer's moment has passed
        "        print('result written', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "result written\n"
