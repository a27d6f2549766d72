"""The training service's logic, free of HTTP and of Ray: datasets, the job queue,
reconciliation with the backend, logs and adapters.

A :class:`TrainingService` owns a :class:`~serve.store.Store` and a
:class:`~serve.backend.JobBackend`. Records change only under one lock, and
only by re-reading the record under it; long work (unpacking an upload,
building an archive) and every backend call run outside it, so a slow or
hung backend never holds a request that only reads or writes records. The
lock is the state dir's (:class:`~serve.store.StateLock`) and holds across
processes (a redeploy's old and new replica share the state dir).

This module holds the requests' side (datasets, creating, listing, cancelling
jobs, their logs and adapters). The queue -- :meth:`~TrainingService.tick`
and the thread that runs it, reconciliation and submission -- is
:mod:`serve.scheduler`'s; a job request's checks are
:mod:`serve.job_request`'s; the record and job-file helpers are
:mod:`serve.records`'s; :class:`~serve.errors.ServiceError` (a refused
request, with its HTTP status) is importable from here as before.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from serve.backend import JobBackend
from serve.config import ServeConfig
from serve.errors import ServiceError
from serve.job_request import check_job_request
from serve.overrides import LEARNERS, SERVER_OWNED
from serve.records import FINISHED, check_offset, now, progress, public, read_quiet
from serve.scheduler import SchedulerMixin
from serve.store import Store, write_json
from serve.uploads import Limits, check_episodes, unpack

__all__ = ["LEARNERS", "SERVER_OWNED", "ServiceError", "TrainingService", "now"]

log = logging.getLogger(__name__)

_progress = progress  # its name before serve.records held it (tests import it from here)


class TrainingService(SchedulerMixin):
    """Datasets and jobs over a store and a job backend (see the module docstring);
    :meth:`start` runs the scheduler thread, :meth:`close` stops it."""

    def __init__(self, cfg: ServeConfig, backend: JobBackend) -> None:
        self.cfg = cfg
        self.backend = backend
        self.store = Store(cfg.state_dir)
        # Across processes too: during a redeploy the old and the new replica
        # share the state dir, and a queued job must be claimed by one of them.
        self.lock = self.store.lock()
        self.limits = Limits(
            max_uncompressed_bytes=cfg.max_uncompressed_bytes,
            max_members=cfg.max_members,
            max_depth=cfg.max_depth,
            max_image_side=cfg.max_image_side,
        )
        self._init_scheduler()
        with self.lock:
            self.store.drop_orphan_keys()
        try:
            self.tick()  # reconcile what a previous run left
        except Exception:  # the backend may not answer yet; the scheduler retries
            log.exception("reconciling at start failed")

    # --- datasets --------------------------------------------------------
    def add_dataset(self, archive: Path, sha256_hex: str, size: int) -> tuple[dict, bool]:
        """Check ``archive`` and store it; ``(manifest, created)``. Raises
        UploadRejected; nothing stays behind on any error."""
        dataset_id = self.store.dataset_id(sha256_hex)
        existing = self.store.dataset(dataset_id)
        if existing is not None:
            return existing, False
        staging = self.store.temp_dir()
        try:
            data = staging / "data"
            data.mkdir()
            unpacked = unpack(archive, data, self.limits)
            episodes = check_episodes(data, max_image_side=self.limits.max_image_side)
            manifest = {
                "dataset_id": dataset_id,
                "sha256": sha256_hex,
                "archive_bytes": size,
                "unpacked_bytes": unpacked,
                "episodes": len(episodes),
                "episode_dirs": episodes,
                "created_at": now(),
            }
            write_json(staging / "manifest.json", manifest)
            created = self.store.commit_dataset(staging, dataset_id)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return (self.store.dataset(dataset_id) or manifest), created

    def datasets(self) -> list[dict[str, Any]]:
        return [public(m) for m in self.store.datasets()]

    # --- jobs ------------------------------------------------------------
    def create_job(self, request: dict[str, Any], idempotency_key: str | None = None):
        """Validate and queue a job; ``(view, created)``, then run a scheduler pass.

        A repeated idempotency key returns the job it first created (409 if the
        request differs). A key whose job was refused (429 when
        ``max_queued_jobs`` wait) is released, so a retry with it makes the
        job. Once the record is written the job exists: a failing scheduler
        pass (the backend down) is logged, not raised; the scheduler retries.
        """
        learner, dataset_ids, overrides, resources = check_job_request(
            request, self.cfg, self.store, self.backend
        )
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
            raise ServiceError(422, "Idempotency-Key must be 1..255 characters")
        request_sha = hashlib.sha256(
            json.dumps(
                [learner, dataset_ids, overrides, resources], sort_keys=True, default=str
            ).encode()
        ).hexdigest()
        with self.lock:
            job_id = self.store.new_job_id()
            if idempotency_key is not None:
                held = self.store.reserve_key(idempotency_key, job_id, request_sha)
                if held["job_id"] != job_id:
                    if held.get("request_sha256") != request_sha:
                        raise ServiceError(
                            409, "Idempotency-Key was used before with a different request"
                        )
                    record = self.store.job(held["job_id"])
                    if record is not None:
                        return self.view(record), False
            try:
                queued = sum(1 for r in self.store.jobs() if r["status"] == "queued")
                if queued >= self.cfg.max_queued_jobs:
                    raise ServiceError(429, f"{queued} jobs are queued; try again later")
                record = {
                    "job_id": job_id,
                    "learner": learner,
                    "dataset_ids": dataset_ids,
                    "overrides": overrides,
                    "resources": resources,
                    "status": "queued",
                    "created_at": now(),
                    "started_at": None,
                    "finished_at": None,
                    "error": None,
                    "attempts": 0,
                    "cancel_requested": False,
                }
                self.store.save_job(record)
            except BaseException:
                if idempotency_key is not None:
                    self.store.release_key(idempotency_key, job_id)
                raise
        try:
            self.tick()
        except Exception:
            log.exception("scheduling after creating %s failed; the scheduler retries", job_id)
        return self.view(self.store.job(job_id) or record), True

    def jobs(self) -> list[dict[str, Any]]:
        # No lock: records are replaced atomically, so a reader never sees half
        # of one, and listing must not wait behind a scheduler pass.
        return [self.view(r) for r in self.store.jobs()]

    def job(self, job_id: str) -> dict[str, Any]:
        record = self.store.job(job_id)
        if record is None:
            raise ServiceError(404, f"no job {job_id!r}")
        return self.view(record)

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        """A job as the API shows it: the record plus training.json metrics and progress."""
        job_dir = self.store.job_dir(record["job_id"])
        training = read_quiet(job_dir / "adapter" / "training.json") or {}
        view = public(record)
        view["metrics"] = training.get("metrics") or {}
        view["progress"] = progress(job_dir / "job.log")
        return view

    def logs(self, job_id: str, offset: int = 0) -> dict[str, Any]:
        """The job's log text from byte ``offset``: at most ``max_log_chunk``
        bytes, read from the job's own file (so logs outlive Ray's job history).

        The text ends on a whole UTF-8 character: an incomplete one at the end
        of the chunk is left for the next read, which starts at
        ``next_offset``. 422 unless ``0 <= offset <=`` the log's size.
        """
        self.job(job_id)
        path = self.store.job_dir(job_id) / "job.log"
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                check_offset(offset, size)
                f.seek(offset)
                chunk = f.read(self.cfg.max_log_chunk)
        except FileNotFoundError:
            check_offset(offset, 0)
            chunk = b""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(chunk)
        held = len(decoder.getstate()[0])  # the bytes of a character cut at the chunk's end
        return {"text": text, "next_offset": offset + len(chunk) - held}

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; its view.

        queued -> cancelled at once; running -> ``cancel_requested`` saved,
        then one stop request to the backend (503 when the backend does not
        take it: the request stands, and the scheduler sends the stop again
        while the job runs); finished -> 409.
        """
        with self.lock:
            record = self.store.job(job_id)
            if record is None:
                raise ServiceError(404, f"no job {job_id!r}")
            if record["status"] in FINISHED:
                raise ServiceError(409, f"job {job_id} already {record['status']}")
            if record["status"] == "queued":
                record.update(status="cancelled", finished_at=now(), cancel_requested=True)
                self.store.save_job(record)
                return self.view(record)
            asked_before = record["cancel_requested"]
            record["cancel_requested"] = True
            self.store.save_job(record)
        if not asked_before:  # one stop request, however often a cancel comes
            try:
                self.backend.stop(job_id)
            except Exception as exc:
                log.warning("stopping %s failed: %s", job_id, exc)
                raise ServiceError(
                    503,
                    f"cancel of {job_id} recorded, but the job backend did not take the stop "
                    f"request ({exc}); the service sends it again while the job runs",
                ) from exc
        return self.view(record)

    def adapter_archive(self, job_id: str) -> Path:
        """A tar.gz of the job's adapter (top-level regular files only) in a temp
        dir the caller removes. 404 when the job or its adapter dir is missing,
        409 unless the job succeeded; nothing is left behind on any error."""
        record = self.store.job(job_id)
        if record is None:
            raise ServiceError(404, f"no job {job_id!r}")
        if record["status"] != "succeeded":
            raise ServiceError(409, f"job {job_id} is {record['status']}, not succeeded")
        adapter = self.store.inside(self.store.job_dir(job_id) / "adapter")
        if not adapter.is_dir():
            raise ServiceError(404, f"job {job_id} succeeded but left no adapter directory")
        workdir = self.store.temp_dir()
        try:
            out = workdir / "adapter.tar.gz"
            with tarfile.open(out, "w:gz") as tar:
                for entry in sorted(os.scandir(adapter), key=lambda e: e.name):
                    if entry.is_file(follow_symlinks=False):
                        info = tar.gettarinfo(entry.path, arcname=entry.name)
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        with open(entry.path, "rb") as f:
                            tar.addfile(info, f)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return out
