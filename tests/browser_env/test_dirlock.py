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


def test_tidy_removes_the_dirs_the_hold_made_while_they_are_empty(tmp_path):
    """A run refused or failed before it wrote anything left the output dir's
    parents behind (``output_dir=a/b/misspelt``); ``tidy`` removes what the
    hold made, deepest first, only while empty, and never what was there."""
    (tmp_path / "a").mkdir()
    with hold_dir(tmp_path / "a" / "b" / "c", tidy=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and not any(
        (tmp_path / "a").iterdir()
    )
    with hold_dir(tmp_path / "a" / "b" / "c", tidy=True) as held:
        (held.parent / "kept.txt").write_text("mine\n")  # b is not empty: it and a stay
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["kept.txt"]
    with hold_dir(tmp_path / "x" / "y"):  # not tidy: stays
        pass
    assert (tmp_path / "x" / "y").is_dir()


def test_a_dir_replaced_as_it_is_locked_is_locked_again(tmp_path, monkeypatch):
    """The lock is on the directory at the path: one removed and made again
    between the open and the lock (a run tidying up as this one starts) would
    leave this run holding a deleted directory, and the next run free to
    take the new one; the hold takes the one there now."""
    import fcntl
    import os

    import browser_env.dirlock

    out = tmp_path / "run"
    out.mkdir()
    calls = []
    real_flock = fcntl.flock

    def flock_after_a_replace(fd, op):
        calls.append(op)
        if len(calls) == 1:
            out.rmdir()
            out.mkdir()
        return real_flock(fd, op)

    monkeypatch.setattr(browser_env.dirlock.fcntl, "flock", flock_after_a_replace)
    with hold_dir(out):
        monkeypatch.setattr(browser_env.dirlock.fcntl, "flock", real_flock)
        assert len(calls) == 2
        with pytest.raises(DirInUse), hold_dir(out):  # the directory there now is held
            pass
    assert os.path.isdir(out)


def test_tidy_leaves_a_parent_another_run_holds(tmp_path):
    """Run A (``runs/sft``, tidy, made ``runs/``) ending while run B holds the
    still-empty ``runs/`` removed it under B, and a third run could then take it."""
    import contextlib

    runs = tmp_path / "runs"
    with contextlib.ExitStack() as b:
        with hold_dir(runs / "sft", tidy=True):
            b.enter_context(hold_dir(runs))
        assert runs.is_dir() and not (runs / "sft").exists()
        with pytest.raises(DirInUse), hold_dir(runs):  # still B's
            pass


def test_check_not_held_refuses_only_a_held_dir_and_holds_nothing(tmp_path):
    from browser_env.dirlock import check_not_held

    check_not_held(tmp_path / "missing")  # not there: passes, and is not made
    assert not (tmp_path / "missing").exists()
    check_not_held(tmp_path)
    held = pytest.raises(DirInUse, match=r"^output_dir=.*/run is in use by another run")
    with hold_dir(tmp_path / "run"), held:
        check_not_held(tmp_path / "run")
    check_not_held(tmp_path / "run")
    with hold_dir(tmp_path / "run"):  # the check kept no hold
        pass
