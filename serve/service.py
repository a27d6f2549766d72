"""The training service's logic, free of HTTP and of Ray: datasets, the job queue,
reconciliation with the backend, logs and adapters.

A :class:`TrainingService` owns a :class:`~serve.store.Store` and a
:class:`~serve.backend.JobBackend`. Records change only under one lock;
long work (unpacking an upload, building an archive) runs outside it. The
queue is the service's own: :meth:`tick` (run every ``poll_interval_s`` by
a background thread, and after every submission) folds the backend's states
into the records and submits queued jobs while fewer than
``max_concurrent_jobs`` run. A job is submitted under its own id, written as
"running" before the submission, so a crash in between is reconciled like
any job the backend forgot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve.backend import TERMINAL, JobBackend
from serve.config import ServeConfig
from serve.store import Store, read_json, write_json
from serve.uploads import Limits, check_episodes, unpack

__all__ = ["LEARNERS", "SERVER_OWNED", "ServiceError", "TrainingService", "now"]

log = logging.getLogger(__name__)

LEARNERS = ("sft", "sdft", "grpo")
"""The learners a job may name: the keys of :data:`learners.config.LEARNER_CONFIGS`
(a test checks they agree; importing it here would load the learners' config
module into every process that only serves HTTP)."""

SERVER_OWNED = frozenset(
    {"output_dir", "episodes", "init_adapter", "server_adapter_dir", "enrich", "progress"}
)
"""Config fields the service sets itself (paths on the server, network, the log format)."""

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
_PROGRESS = re.compile(rb"(\d+)/(\d+) \[")


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TrainingService:
    def __init__(self, cfg: ServeConfig, backend: JobBackend) -> None:
        self.cfg = cfg
        self.backend = backend
        self.store = Store(cfg.state_dir)
        self.lock = threading.RLock()
        self.limits = Limits(
            max_uncompressed_bytes=cfg.max_uncompressed_bytes,
            max_members=cfg.max_members,
            max_depth=cfg.max_depth,
            max_image_side=cfg.max_image_side,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self.lock:
            self.store.drop_orphan_keys()
        try:
            self.tick()  # reconcile what a previous run left
        except Exception:  # the backend may not answer yet; the scheduler retries
            log.exception("reconciling at start failed")

    # --- background scheduler --------------------------------------------
    def start(self) -> None:
        """Run :meth:`tick` every ``poll_interval_s`` in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="serve-scheduler", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.poll_interval_s):
            try:
                self.tick()
            except Exception:  # keep scheduling; one bad pass must not stop the queue
                log.exception("scheduler pass failed")

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
            episodes = check_episodes(data)
            manifest = {
                "dataset_id": dataset_id,
                "sha256": sha256_hex,
                "archive_bytes": size,
                "unpacked_bytes": unpacked,
                "episodes": len(episodes),
                "episode_dirs": episodes,
                "created_at": now(),
            }
            (staging / "manifest.json").write_text(
                json.dumps({"version": 1, **manifest}, indent=1), encoding="utf-8"
            )
            created = self.store.commit_dataset(staging, dataset_id)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return (self.store.dataset(dataset_id) or manifest), created

    def datasets(self) -> list[dict[str, Any]]:
        return [_public(m) for m in self.store.datasets()]

    # --- jobs ------------------------------------------------------------
    def create_job(self, request: dict[str, Any], idempotency_key: str | None = None):
        """Validate and queue a job; ``(view, created)``. A repeated idempotency
        key returns the job it first created (409 if the request differs)."""
        learner, dataset_ids, overrides, resources = self._validate(request)
        request_sha = hashlib.sha256(
            json.dumps(
                [learner, dataset_ids, overrides, resources], sort_keys=True, default=str
            ).encode()
        ).hexdigest()
        with self.lock:
            job_id = self.store.new_job_id()
            if idempotency_key is not None:
                if not 1 <= len(idempotency_key) <= 255:
                    raise ServiceError(422, "Idempotency-Key must be 1..255 characters")
                held = self.store.reserve_key(idempotency_key, job_id, request_sha)
                if held["job_id"] != job_id:
                    if held.get("request_sha256") != request_sha:
                        raise ServiceError(
                            409, "Idempotency-Key was used before with a different request"
                        )
                    record = self.store.job(held["job_id"])
                    if record is not None:
                        return self.view(record), False
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
        self.tick()
        return self.view(self.store.job(job_id) or record), True

    def _validate(self, request: dict[str, Any]) -> tuple[str, list[str], dict, dict]:
        import learners.config as lc

        learner = request.get("learner")
        if learner not in LEARNERS:
            raise ServiceError(422, f"unknown learner {learner!r}; one of {sorted(LEARNERS)}")
        dataset_ids = list(request.get("dataset_ids") or [])
        for dataset_id in dataset_ids:
            if not isinstance(dataset_id, str) or self.store.dataset(dataset_id) is None:
                raise ServiceError(422, f"unknown dataset {dataset_id!r}")
        if not dataset_ids and learner != "grpo":
            raise ServiceError(422, f"{learner} needs at least one dataset id")
        overrides = dict(request.get("overrides") or {})
        fields = {f.name: f for f in dataclasses.fields(lc.LEARNER_CONFIGS[learner])}
        for key, value in overrides.items():
            if key in SERVER_OWNED or key.startswith(("hydra", "_")):
                raise ServiceError(422, f"override {key!r} is set by the server")
            if key not in fields:
                raise ServiceError(422, f"unknown {learner} setting {key!r}")
            if not _type_ok(value, str(fields[key].type)):
                raise ServiceError(422, f"{key}={value!r} is not a {fields[key].type}")
        allowed = self.cfg.allowed_models
        if "model" in overrides and allowed is not None and overrides["model"] not in allowed:
            raise ServiceError(422, f"model {overrides['model']!r} is not one of {allowed}")
        resources = dict(request.get("resources") or {})
        for key in resources:
            if key not in ("num_cpus", "num_gpus"):
                raise ServiceError(422, f"unknown resource {key!r} (num_cpus, num_gpus)")
        for key, default in (
            ("num_cpus", self.cfg.default_num_cpus),
            ("num_gpus", self.cfg.default_num_gpus),
        ):
            value = resources.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ServiceError(422, f"{key} must be a number >= 0")
            resources[key] = float(value)
        return learner, dataset_ids, overrides, resources

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
        training = _read_quiet(job_dir / "adapter" / "training.json") or {}
        view = _public(record)
        view["metrics"] = training.get("metrics") or {}
        view["progress"] = _progress(job_dir / "job.log")
        return view

    def logs(self, job_id: str, offset: int = 0) -> dict[str, Any]:
        """Log bytes from ``offset`` (at most ``max_log_chunk``); read from the
        job's own file, so they outlive Ray's job history."""
        self.job(job_id)
        if offset < 0:
            raise ServiceError(422, "offset must be >= 0")
        path = self.store.job_dir(job_id) / "job.log"
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read(self.cfg.max_log_chunk)
        except FileNotFoundError:
            chunk = b""
        return {"text": chunk.decode("utf-8", errors="replace"), "next_offset": offset + len(chunk)}

    def cancel(self, job_id: str) -> dict[str, Any]:
        """queued -> cancelled at once; running -> one stop request; finished -> 409."""
        with self.lock:
            record = self.store.job(job_id)
            if record is None:
                raise ServiceError(404, f"no job {job_id!r}")
            if record["status"] in FINISHED:
                raise ServiceError(409, f"job {job_id} already {record['status']}")
            if record["status"] == "queued":
                record.update(status="cancelled", finished_at=now(), cancel_requested=True)
            elif not record["cancel_requested"]:
                record["cancel_requested"] = True
                self.backend.stop(job_id)
            self.store.save_job(record)
            return self.view(record)

    def adapter_archive(self, job_id: str) -> Path:
        """A tar.gz of the job's adapter (top-level regular files only) in a temp
        dir the caller removes."""
        record = self.store.job(job_id)
        if record is None:
            raise ServiceError(404, f"no job {job_id!r}")
        if record["status"] != "succeeded":
            raise ServiceError(409, f"job {job_id} is {record['status']}, not succeeded")
        adapter = self.store.inside(self.store.job_dir(job_id) / "adapter")
        out = self.store.temp_dir() / "adapter.tar.gz"
        with tarfile.open(out, "w:gz") as tar:
            for entry in sorted(os.scandir(adapter), key=lambda e: e.name):
                if entry.is_file(follow_symlinks=False):
                    info = tar.gettarinfo(entry.path, arcname=entry.name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(entry.path, "rb") as f:
                        tar.addfile(info, f)
        return out

    # --- scheduling ------------------------------------------------------
    def tick(self) -> None:
        """Fold backend states into running jobs, then start queued ones."""
        with self.lock:
            records = list(self.store.jobs())
            for record in records:
                if record["status"] == "running":
                    self._reconcile(record)
            running = sum(1 for r in records if r["status"] == "running")
            queued = sorted(
                (r for r in records if r["status"] == "queued"), key=lambda r: r["created_at"]
            )
            for record in queued[: max(0, self.cfg.max_concurrent_jobs - running)]:
                self._submit(record)

    def _reconcile(self, record: dict[str, Any]) -> None:
        job_id = record["job_id"]
        job_dir = self.store.job_dir(job_id)
        state = self.backend.status(job_id)
        if state is not None and state not in TERMINAL:
            return
        result = _read_quiet(job_dir / "result.json")
        if result is not None and result.get("status") in FINISHED:
            record.update(status=result["status"], error=result.get("error"))
        elif state == "STOPPED":
            record.update(status="cancelled")
        elif state is not None:
            record.update(status="failed", error=f"job process ended ({state}) without a result")
        else:
            _kill_stale(job_dir, job_id)
            if record["cancel_requested"]:
                record.update(status="cancelled")
            elif self.cfg.resume_lost:
                log.warning("job %s was lost by the backend; queued again to resume", job_id)
                record.update(status="queued", error=None)
                self.store.save_job(record)
                return
            else:
                record.update(
                    status="failed",
                    error="lost: the backend no longer knows the job and it left no result",
                )
        record["finished_at"] = (result or {}).get("finished_at") or now()
        self.store.save_job(record)

    def _submit(self, record: dict[str, Any]) -> None:
        job_id = record["job_id"]
        job_dir = self.store.job_dir(job_id)
        config = {
            **record["overrides"],
            "episodes": [str(self.store.dataset_dir(d) / "data") for d in record["dataset_ids"]],
            "output_dir": str(job_dir / "adapter"),
            "progress": True,
        }
        write_json(
            job_dir / "spec.json",
            {"job_id": job_id, "learner": record["learner"], "config": config},
        )
        (job_dir / "result.json").unlink(missing_ok=True)
        record.update(
            status="running", started_at=now(), attempts=record["attempts"] + 1, error=None
        )
        self.store.save_job(record)
        resources = {} if self.cfg.shared_storage else self.backend.node_resource()
        entrypoint = " ".join(
            shlex.quote(p) for p in (sys.executable, "-m", "serve.job_entry", str(job_dir))
        )
        env = {"WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        try:
            self.backend.submit(
                job_id,
                entrypoint,
                num_cpus=record["resources"]["num_cpus"],
                num_gpus=record["resources"]["num_gpus"],
                resources=resources,
                env_vars=env,
            )
        except Exception as exc:
            log.exception("submitting %s failed", job_id)
            record.update(status="failed", finished_at=now(), error=f"submission failed: {exc}")
            self.store.save_job(record)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "version"}


def _read_quiet(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (ValueError, OSError):
        return None


def _progress(log_path: Path) -> dict[str, int] | None:
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


def _kill_stale(job_dir: Path, job_id: str) -> None:
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


def _type_ok(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a config field's annotation (as written in
    learners.config: int, float, bool, str, list[X], dict[...], joined by |)."""
    for option in (o.strip() for o in annotation.split("|")):
        if option == "None" and value is None:
            return True
        if option == "bool" and isinstance(value, bool):
            return True
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if option == "str" and isinstance(value, str):
            return True
        if option.startswith("list[") and isinstance(value, list):
            inner = option[5:-1]
            if all(_type_ok(v, inner) for v in value):
                return True
        if option.startswith("dict[") and isinstance(value, dict):
            return True
        if option == "Any":
            return True
    return False
