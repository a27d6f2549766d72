"""A job's record as the API shows it, and the files beside it as the service reads them.

Small functions of a record (a ``job.json`` dict, :mod:`serve.store`) or of a
job's directory that :class:`~serve.service.TrainingService` uses: the
timestamp format (:func:`now`), the record without its internal fields
(:func:`public`), whether a replica's submission of the job may still be under
way (:func:`being_submitted`), a JSON file that may be missing or half-written
(:func:`read_quiet`), the training progress in the job's log
(:func:`progress`), a log offset's check (:func:`check_offset`), and stopping a
job process the backend forgot (:func:`kill_stale`). None takes the service's
lock; none raises for a missing or unreadable file.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve.errors import ServiceError
from serve.store import read_json

__all__ = [
    "FINISHED",
    "being_submitted",
    "check_offset",
    "kill_stale",
    "now",
    "progress",
    "public",
    "read_quiet",
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


def kill_stale(job_dir: Path, job_id: str) -> None:
    """SIGTERM a job process the backend forgot but that still runs (e.g. the
    service and its cluster died while the process lived on)."""
    try:
        pid = int((job_dir / "pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"serve.job_entry" in cmdline and job_id.encode() in cmdline:
        log.warning("stopping orphaned process %d of job %s", pid, job_id)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)


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
