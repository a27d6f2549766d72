"""browser_env.dirlock.hold_dir: one writer per output directory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from browser_env.dirlock import DirInUse, hold_dir

_HOLD = (
    "import sys, time\n"
    "from browser_env.dirlock import hold_dir\n"
    "with hold_dir(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(60)\n"
)


def test_a_second_holder_is_refused_and_the_lock_goes_with_the_block(tmp_path):
    out = tmp_path / "runs" / "a"
    with hold_dir(out, "output_dir") as held:
        assert held == out and out.is_dir() and list(out.iterdir()) == []  # no lock file
        with pytest.raises(DirInUse) as refused, hold_dir(out, "output_dir"):
            pass
        assert str(refused.value) == (
            f"output_dir={out} is in use by another run, writing there now: wait for it to "
            "end, or set output_dir to another directory"
        )
        with hold_dir(tmp_path / "runs" / "b"):  # another dir: free
            pass
    with hold_dir(out):  # released
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    """The kernel drops a flock with its process: SIGKILL leaves the dir free."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(DirInUse), hold_dir(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait(30)
    with hold_dir(tmp_path):
        pass
