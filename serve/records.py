"""A job's record as the API shows it, and the files beside it as the service reads them.

Small functions of a record (a ``job.json`` dict, :mod:`serve.store`) or of a
job's directory that :class:`~serve.service.TrainingService` uses: the
timestamp format (:func:`now`), the record without its internal fields
(:func:`public`), whether a replica's submission of the job may still be under
way (:func:`being_submitted`), a JSON file that may be missing or half-written
(:func:`read_quiet`), the training progress in the job's log
(:func:`progress`), a log offset's check (:func:`check_offset`), server paths
in a message made relative to the state dir (:func:`relative_to_state`), and
stopping a job process the backend forgot (:func:`kill_stale`). None takes
the service's lock; none raises for a missing or unreadable file.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve.errors import ServiceError
from serve.store import read_json

__all__ = [
    "FINISHED",
    "STALE_GRACE_S",
    "STALE_KILL_WAIT_S",
    "being_submitted",
    "check_offset",
    "kill_stale",
    "now",
    "progress",
    "public",
    "read_quiet",
    "relative_to_state",
]

log = logging.getLogger(__name__)

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
"""Job statuses a record never leaves."""

_PROGRESS = re.compile(rb"(\d+)/(\d+) \[")


def now() -> str:
    """The current UTC time as records hold it: ISO 8601, milliseconds, ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without its schema version and the service's internal fields."""
    return {k: v for k, v in record.items() if k not in ("version", "submitting_until")}


def read_quiet(path: Path) -> dict[str, Any] | None:
    """The JSON document at ``path``; None when it is missing or cannot be read."""
    try:
        return read_json(path)
    except (ValueError, OSError):
        return None


def progress(log_path: Path) -> dict[str, int] | None:
    """The last ``n/total [`` of a tqdm bar in the log's tail."""
    try:
        with log_path.open("rb") as f:
            f.seek(max(0, log_path.stat().st_size - 4096))
            tail = f.read()
    except OSError:
        return None
    found = _PROGRESS.findall(tail)
    if not found:
        return None
    step, total = found[-1]
    return {"step": int(step), "total": int(total)}


STALE_GRACE_S = 10.0
"""Seconds a lost job's process has between SIGTERM and SIGKILL (:func:`kill_stale`)."""

STALE_KILL_WAIT_S = 5.0
"""Seconds :func:`kill_stale` waits for a SIGKILLed process to be gone."""


def kill_stale(job_dir: Path, job_id: str) -> int | None:
    """Stop a job process the backend forgot but that still runs (e.g. the
    service and its cluster died while the process lived on); None once none
    runs, else the pid of the process that would not die.

    The process is the one named by ``job_dir/pid`` if its command line is
    ``serve.job_entry`` of this job (a reused pid is left alone). It gets
    SIGTERM (its learner's ``finally`` blocks run and it writes a "cancelled"
    ``result.json``), then, still there after :data:`STALE_GRACE_S`, SIGKILL,
    it and its descendants (browsers, rollout workers), as ``ray job stop``
    does; a SIGKILLed one writes no result. A process that outlives the
    SIGKILL by :data:`STALE_KILL_WAIT_S` (uninterruptible sleep) is reported:
    the job must not run again while it may still write its adapter dir.
    Blocks for up to the sum of the two; call it outside the service's lock.
    """
    import psutil

    try:
        pid = int((job_dir / "pid").read_text().strip())
        process = psutil.Process(pid)
        cmdline = process.cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    if "serve.job_entry" not in cmdline or not any(job_id in arg for arg in cmdline):
        return None
    log.warning("stopping orphaned process %d of job %s", pid, job_id)
    descendants: list[Any] = []
    try:
        descendants = process.children(recursive=True)
        process.terminate()
    except psutil.Error:
        pass
    if _gone(process, STALE_GRACE_S):
        return None
    log.warning(
        "process %d of job %s outlived SIGTERM by %g s: SIGKILL", pid, job_id, STALE_GRACE_S
    )
    try:
        descendants += process.children(recursive=True)
    except psutil.Error:
        pass
    for each in (process, *descendants):
        try:
            each.kill()
        except psutil.Error:
            pass
    if _gone(process, STALE_KILL_WAIT_S):
        return None
    log.error("process %d of job %s still runs after SIGKILL", pid, job_id)
    return pid


def _gone(process: Any, timeout: float) -> bool:
    """Whether ``process`` (a ``psutil.Process``) ended within ``timeout`` seconds;
    a zombie has ended (its parent, not this service, reaps it)."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        try:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def relative_to_state(text: str, state_dir: Path) -> str:
    """``text`` with each path under ``state_dir`` (resolved, as the store's
    root is) written relative to it, and ``state_dir`` itself as ``.``: what
    the API shows of a server-side message (a job's error), as upload
    messages name paths relative to the upload."""
    root = re.escape(str(state_dir))
    return re.sub(root + r"(/|(?![\w.-]))", lambda m: "" if m[1] else ".", text)


def check_offset(offset: int, size: int) -> None:
    """ServiceError 422 unless ``0 <= offset <= size`` (a log's byte offset)."""
    if not 0 <= offset <= size:
        raise ServiceError(422, f"offset must be in 0..{size} (the log's size), got {offset}")


def being_submitted(record: dict[str, Any]) -> bool:
    """Whether a replica claimed ``record``'s job and its submission may still be
    under way (the scheduler's ``_mark_started``): a crash in it is lost only
    after the deadline."""
    until = record.get("submitting_until")
    return isinstance(until, (int, float)) and time.time() < until
