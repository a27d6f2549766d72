"""One writer per output directory: :func:`hold_dir`.

Two runs started into the same output directory (a benchmark's run dir, a
learner's adapter dir) would interleave their logs and overwrite each
other's files, and each would take the other's half-written work for a
stopped run. A run holds an exclusive ``flock`` on the directory itself
while it writes there; a second run is refused at once, naming the setting
it came from. The kernel drops the lock when the process ends, however it
ends (a crash, SIGKILL), so a stopped run never leaves a stale lock behind,
and no lock file is written into the directory (its contents are the run's
own: an adapter dir is uploaded and copied whole).

``flock`` locks an open file description: a second :func:`hold_dir` of the
same directory in the same process is refused too, as another process's
would be. On a file system without ``flock`` (some network mounts) the lock
is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["DirInUse", "check_not_held", "hold_dir", "remove_empty_dirs"]


class DirInUse(ValueError):
    """Another run holds the directory (a ``ValueError``: a refusal of the setting)."""


@contextlib.contextmanager
def hold_dir(
    path: str | os.PathLike[str], key: str = "output_dir", *, tidy: bool = False
) -> Iterator[Path]:
    """Make ``path`` (and its parents) and hold it for the block: raise
    :class:`DirInUse` at once, naming ``key`` (the setting ``path`` came from),
    when another run holds it.

    ``tidy``: as the block ends, however it ends, the directories this call
    made (``path`` and the parents it made) are removed while they are empty,
    before the hold is let go: a run refused or failed before it wrote
    anything leaves nothing behind. The lock is on the directory there when
    it is taken: one removed or replaced in between (a run tidying up as this
    one starts) is made and locked again."""
    directory = Path(path)
    made = [p for p in (directory, *directory.parents) if not p.exists()]
    for _ in range(_TRIES):
        directory.mkdir(parents=True, exist_ok=True)
        fd = _open_dir(directory)
        try:
            _lock(fd, directory, key)
        except BaseException:
            os.close(fd)
            raise
        if _same_dir(fd, directory):
            break
        os.close(fd)  # locked a directory no longer at ``path``: try the one there now
    else:
        raise DirInUse(f"{key}={path} keeps being removed or replaced: is another run tidying it?")
    try:
        yield directory
    finally:
        try:
            if tidy and made:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # ours, held: only when empty
                if not directory.exists():
                    remove_empty_dirs(made[1:])
        finally:
            os.close(fd)  # drops the lock


def check_not_held(path: str | os.PathLike[str], key: str = "output_dir") -> None:
    """Raise :class:`DirInUse` (naming ``key``) when another run holds ``path``
    now; a path not there, or free, passes. Nothing is made or kept held."""
    try:
        fd = _open_dir(path)
    except OSError:
        return
    try:
        _lock(fd, Path(path), key)
    finally:
        os.close(fd)


def remove_empty_dirs(directories: Iterable[str | os.PathLike[str]]) -> None:
    """``rmdir`` each of ``directories`` in turn (deepest first) while it is
    empty and no run holds it (:func:`hold_dir`: an empty output dir of a run
    still loading is that run's); stop at the first that stays."""
    for directory in directories:
        try:
            fd = _open_dir(directory)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # held by a run
            except OSError:
                pass  # no locks here: as hold_dir, go on unlocked
            os.rmdir(directory)  # only when empty
        except OSError:
            return
        finally:
            os.close(fd)


_TRIES = 5


def _open_dir(path: str | os.PathLike[str]) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _lock(fd: int, path: Path, key: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DirInUse(
            f"{key}={path} is in use by another run, writing there now: wait for it to "
            f"end, or set {key} to another directory"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        warnings.warn(
            f"{path}: this file system cannot lock it ({exc.strerror}): two runs into it "
            "at once would not be refused",
            stacklevel=4,
        )


def _same_dir(fd: int, path: Path) -> bool:
    """``fd`` is the directory at ``path`` now."""
    try:
        there = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)
