"""The service's state as files under ``state_dir``: versioned JSON, atomic replace.

Layout::

    state_dir/
      VERSION                      {"version": 1}
      tmp/                         uploads and keys being written (a dead process's go at start)
      datasets/<dataset_id>/       manifest.json + data/ (the episode dirs)
      jobs/<job_id>/               job.json, spec.json, job.log, pid, result.json, adapter/
      idempotency/<sha256(key)>    {"job_id": ...}, taken with link(2) (atomic, exclusive)
      lock                         flock(2)ed by :class:`StateLock` (empty)

Every JSON document carries ``"version"``; readers refuse a newer one. Writes
go to a temp file in the same directory, are fsynced and ``os.replace``d,
so a crash leaves the old or the new file, never half of one. Whatever is put
in place by a rename or a link (a JSON document, a committed dataset, an
idempotency key) is durable when the call returns: the data is fsynced before
the rename and the directory after it (:func:`sync_tree`, :func:`fsync_dir`;
without the second, a power loss can leave the new name pointing at nothing,
or an empty file). Ids are checked
against :data:`JOB_ID` / :data:`DATASET_ID` and resolved paths must stay
under ``state_dir`` before anything is read.

Records change under :class:`StateLock`, which holds across processes: two
services on one state dir (the old and the new replica of a redeploy) never
both claim one queued job.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = [
    "DATASET_ID",
    "JOB_ID",
    "STATE_VERSION",
    "StateLock",
    "Store",
    "fsync_dir",
    "make_dirs",
    "read_json",
    "sync_tree",
    "write_json",
]

# the owner of a temp dir (Store.temp_dir): this host, as a file name may spell it
_OWNER = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
_TEMP_NAME = re.compile(r"upload-(?P<host>[A-Za-z0-9._]+)-(?P<pid>[0-9]+)-[^/]*")
_FOREIGN_TEMP_S = 24 * 3600.0  # after this even another host's temp dir is a leftover

STATE_VERSION = 1
JOB_ID = re.compile(r"^job-[0-9a-f]{20}$")
DATASET_ID = re.compile(r"^ds-[0-9a-f]{32}$")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path``: its entries (a rename, link or new file in
    it) survive a power loss."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: str | os.PathLike[str], flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p path``, each directory it creates made durable in its parent."""
    if path.is_dir():
        return
    make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_dir(path.parent)


def sync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (``root`` too), so that a
    rename of ``root`` publishes what is on disk. Symlinks are skipped. The fsyncs run in a few threads: a file system's journal commits
    concurrent ones together (one at a time costs a commit each)."""
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        dirs.append(dirpath)
        files.extend(os.path.join(dirpath, n) for n in filenames)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync") as pool:
        list(pool.map(_fsync_file, files))
    for directory in reversed(dirs):  # children before parents
        fsync_dir(directory)


def _fsync_file(path: str) -> None:
    if os.path.islink(path):  # not ours to sync (the store holds none)
        return
    _fsync(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` (with ``"version"``) to ``path`` atomically and durably."""
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": STATE_VERSION, **data}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    """The document at ``path``, None when missing; ValueError for a newer version."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    if int(data.get("version", 0)) > STATE_VERSION:
        raise ValueError(f"{path}: state version {data['version']} is newer than this service")
    return data


class StateLock:
    """A re-entrant lock over one state dir, for the threads of this process and
    for every other process (or :class:`Store` object) on the same dir.

    Three locks, the last two held by the outermost holder: an ``RLock`` of
    this object (re-entrant: a holder may enter again), a lock of this
    process for the lock file (one per file, by device and inode, so two
    objects on one dir in one process exclude each other), and
    ``flock(LOCK_EX)`` on ``path`` through a descriptor of its own (other
    processes). The process's lock does not rely on the file system: on NFS
    Linux maps flock to POSIX byte-range locks, which belong to the process,
    so flock alone would let two objects of one process in together. As with
    flock, an object entered while another object on the same dir is held by
    the same thread waits for ever. Closing the descriptor, or the holder's
    death, releases the flock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.RLock()
        self._depth = 0
        self._held: tuple[int, threading.Lock] | None = None  # the flocked fd, the file's lock

    def __enter__(self) -> StateLock:
        self._local.acquire()
        try:
            if self._depth == 0:
                self._held = _lock_file(self.path)
            self._depth += 1
        except BaseException:
            self._local.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._held is not None:
            (fd, shared), self._held = self._held, None
            try:
                os.close(fd)  # releases the flock
            finally:
                shared.release()
        self._local.release()


# the process's lock of each lock file, by (st_dev, st_ino): see StateLock
_file_locks: dict[tuple[int, int], threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _lock_file(path: Path) -> tuple[int, threading.Lock]:
    """Open ``path`` (created if missing), take this process's lock of that
    file, then ``flock(LOCK_EX)`` on the new descriptor; returns both, held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        with _file_locks_guard:
            shared = _file_locks.setdefault((st.st_dev, st.st_ino), threading.Lock())
        shared.acquire()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            shared.release()
            raise
    except BaseException:
        os.close(fd)
        raise
    return fd, shared


class Store:
    """Paths and records under one state dir. Not thread-safe: callers hold
    :meth:`lock` around every read-modify-write of a record."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        for sub in ("tmp", "datasets", "jobs", "idempotency"):
            make_dirs(self.root / sub)
        marker = read_json(self.root / "VERSION")
        if marker is None:
            write_json(self.root / "VERSION", {})
        # Leftovers of uploads cut off by a crash: never part of the store. Not
        # those of another live process: during a redeploy the old replica and
        # this one share the state dir, and the old one may be mid-upload.
        for leftover in (self.root / "tmp").iterdir():
            if _abandoned(leftover):
                _remove(leftover)
        self._lock = StateLock(self.root / "lock")

    def lock(self) -> StateLock:
        """The state dir's lock (:class:`StateLock`: across threads and processes)."""
        return self._lock

    # --- paths -----------------------------------------------------------
    def inside(self, path: Path) -> Path:
        """``path`` resolved; ValueError unless it lies under the state dir."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise ValueError(f"{path} is outside the state dir")
        return resolved

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)
        return self.inside(self.root / "jobs" / job_id)

    def dataset_dir(self, dataset_id: str) -> Path:
        if not DATASET_ID.match(dataset_id):
            raise KeyError(dataset_id)
        return self.inside(self.root / "datasets" / dataset_id)

    def temp_dir(self) -> Path:
        """A fresh private directory under ``tmp/``, named for its owner (this
        host and process), so that a new :class:`Store` on the same state dir
        leaves it alone while this process lives."""
        return Path(tempfile.mkdtemp(prefix=_owned_prefix(), dir=self.root / "tmp"))

    # --- jobs ------------------------------------------------------------
    @staticmethod
    def new_job_id() -> str:
        return "job-" + secrets.token_hex(10)

    def save_job(self, record: dict[str, Any]) -> None:
        write_json(self.job_dir(record["job_id"]) / "job.json", record)

    def job(self, job_id: str) -> dict[str, Any] | None:
        try:
            return read_json(self.job_dir(job_id) / "job.json")
        except KeyError:
            return None

    def jobs(self) -> Iterator[dict[str, Any]]:
        for path in sorted((self.root / "jobs").iterdir()):
            if JOB_ID.match(path.name):
                record = read_json(path / "job.json")
                if record is not None:
                    yield record

    # --- datasets --------------------------------------------------------
    @staticmethod
    def dataset_id(sha256_hex: str) -> str:
        return "ds-" + sha256_hex[:32]

    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        try:
            return read_json(self.dataset_dir(dataset_id) / "manifest.json")
        except KeyError:
            return None

    def datasets(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted((self.root / "datasets").iterdir()):
            if DATASET_ID.match(path.name):
                manifest = read_json(path / "manifest.json")
                if manifest is not None:
                    found.append(manifest)
        return found

    def commit_dataset(self, staging: Path, dataset_id: str) -> bool:
        """Move a checked staging dir into place, durably (its files and dirs
        fsynced before the rename, ``datasets/`` after it); False when the id
        already exists."""
        target = self.dataset_dir(dataset_id)
        sync_tree(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if target.exists():
                _remove(staging)
                return False
            raise
        fsync_dir(target.parent)
        return True

    # --- idempotency keys ------------------------------------------------
    def reserve_key(self, key: str, job_id: str, request_sha: str) -> dict[str, Any]:
        """Reserve ``key`` for ``job_id``; returns the reservation that holds it
        (ours, or an earlier one). The name is taken with link(2), so of two
        concurrent reservations exactly one wins, across processes too."""
        path = self._key_path(key)
        entry = {"version": STATE_VERSION, "job_id": job_id, "request_sha256": request_sha}
        # Written whole to a temp file, then hard-linked into place: link() fails
        # when the name exists, so readers never see a half-written reservation.
        # Named for its owner, as temp dirs are: a new Store's sweep leaves it be.
        fd, tmp = tempfile.mkstemp(prefix=_owned_prefix() + "key-", dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                existing = read_json(path)
                if existing is None:  # pragma: no cover - removed between link and read
                    raise
                return existing
        finally:
            os.unlink(tmp)
        fsync_dir(path.parent)
        return entry

    def release_key(self, key: str, job_id: str) -> None:
        """Give up ``key``'s reservation when ``job_id`` holds it (its job was
        refused before it was written), so a retry with the key starts afresh."""
        path = self._key_path(key)
        with contextlib.suppress(ValueError):
            entry = read_json(path)
            if entry is not None and entry.get("job_id") == job_id:
                path.unlink(missing_ok=True)

    def _key_path(self, key: str) -> Path:
        return self.root / "idempotency" / hashlib.sha256(key.encode("utf-8")).hexdigest()

    def drop_orphan_keys(self) -> None:
        """Remove reservations whose job was never written (a crash in between)."""
        for path in (self.root / "idempotency").iterdir():
            try:
                entry = read_json(path)
            except ValueError:
                continue
            if entry is None or self.job(str(entry.get("job_id", ""))) is None:
                path.unlink(missing_ok=True)


def _owned_prefix() -> str:
    """The start of the name of a temp file or dir under ``tmp/`` that this
    process owns (:data:`_TEMP_NAME`)."""
    return f"upload-{_OWNER}-{os.getpid()}-"


def _abandoned(path: Path) -> bool:
    """Whether ``path`` under ``tmp/`` is no live process's: one of this host
    whose process is gone, anything a day old, or a name of no owner's."""
    match = _TEMP_NAME.fullmatch(path.name)
    if match is None:
        return True
    try:
        if time.time() - path.lstat().st_mtime > _FOREIGN_TEMP_S:
            return True
    except OSError:
        return False  # already gone
    if match["host"] != _OWNER:
        return False  # another host's process: cannot tell, so a day's grace
    try:
        os.kill(int(match["pid"]), 0)  # (signal 0: only whether it exists)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
