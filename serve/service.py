"""The training service's logic, free of HTTP and of Ray: datasets, the job queue,
reconciliation with the backend, logs and adapters.

A :class:`TrainingService` owns a :class:`~serve.store.Store` and a
:class:`~serve.backend.JobBackend`. Records change only under one lock, and
only by re-reading the record under it; long work (unpacking an upload,
building an archive) and every backend call run outside it, so a slow or
hung backend never holds a request that only reads or writes records. The
queue is the service's own: :meth:`tick` (run every ``poll_interval_s`` by
a background thread, and after every submission) folds the backend's states
into the records and submits queued jobs while fewer than
``max_concurrent_jobs`` run. A job is submitted under its own id, written as
"running" before the submission, so a crash in between (or a submission
whose answer never came) is reconciled like any job the backend forgot.

The lock is the state dir's (:class:`~serve.store.StateLock`) and holds
across processes: a queued job is claimed (re-read and written as "running")
under it, so of two services on one state dir (a redeploy's old and new
replica) exactly one submits it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import math
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

from serve.backend import TERMINAL, BackendTimeout, JobBackend
from serve.config import ServeConfig
from serve.overrides import LEARNERS, SERVER_OWNED, override_problem
from serve.store import Store, read_json, write_json
from serve.uploads import Limits, check_episodes, unpack

__all__ = ["LEARNERS", "SERVER_OWNED", "ServiceError", "TrainingService", "now"]

log = logging.getLogger(__name__)

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
        # Across processes too: during a redeploy the old and the new replica
        # share the state dir, and a queued job must be claimed by one of them.
        self.lock = self.store.lock()
        self.limits = Limits(
            max_uncompressed_bytes=cfg.max_uncompressed_bytes,
            max_members=cfg.max_members,
            max_depth=cfg.max_depth,
            max_image_side=cfg.max_image_side,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pass_guard = threading.Lock()  # guards the two flags below (see tick)
        self._pass_running = False
        self._pass_wanted = False
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
        return [_public(m) for m in self.store.datasets()]

    # --- jobs ------------------------------------------------------------
    def create_job(self, request: dict[str, Any], idempotency_key: str | None = None):
        """Validate and queue a job; ``(view, created)``, then run a scheduler pass.

        A repeated idempotency key returns the job it first created (409 if the
        request differs). A key whose job was refused (429 when
        ``max_queued_jobs`` wait) is released, so a retry with it makes the
        job. Once the record is written the job exists: a failing scheduler
        pass (the backend down) is logged, not raised; the scheduler retries.
        """
        learner, dataset_ids, overrides, resources = self._validate(request)
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
        problem = override_problem(lc.LEARNER_CONFIGS[learner], learner, overrides)
        if problem is not None:
            raise ServiceError(422, problem)
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
            # `not 0 <= value < inf`: the JSON parser takes NaN and Infinity too
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < math.inf
            ):
                raise ServiceError(422, f"{key} must be a finite number >= 0")
            resources[key] = float(value)
        for key, limit in self._capacity().items():
            if limit is not None and resources[key] > limit:
                raise ServiceError(
                    422,
                    f"{key}={resources[key]:g} is more than one job can be given here "
                    f"({limit:g}); it would wait for ever",
                )
        return learner, dataset_ids, overrides, resources

    def _capacity(self) -> dict[str, float | None]:
        """The most ``num_cpus``/``num_gpus`` a job may ask for (None: unchecked).

        ``max_num_cpus``/``max_num_gpus`` where configured, else what the
        backend reports at this submission: Ray leaves a request no node can
        hold pending for ever (it only warns of an "infeasible" task), and such
        a job would hold a ``max_concurrent_jobs`` slot until cancelled. The
        largest node counts, not the cluster's sum (a job runs on one node),
        and only the service's node when jobs are pinned to it (no
        ``shared_storage``), less the ``replica_num_cpus`` that this service's
        replica holds there for good (a job asking for the node's whole count
        would never be placed, and Ray would not call it infeasible either).
        Ray cannot report the nodes an autoscaler may add, hence the
        configured maximums. A backend that cannot answer leaves the request
        unchecked, as a submission while it is down is queued rather than
        refused.
        """
        limits = {"num_cpus": self.cfg.max_num_cpus, "num_gpus": self.cfg.max_num_gpus}
        if None in limits.values():
            pinned = not self.cfg.shared_storage
            try:
                reported = dict(self.backend.capacity(pinned=pinned))
            except Exception as exc:
                log.warning("the job backend did not report its capacity (%s)", exc)
                reported = {}
            if pinned and reported.get("num_cpus") is not None:
                reported["num_cpus"] = max(0.0, reported["num_cpus"] - self.cfg.replica_num_cpus)
            limits = {k: reported.get(k) if v is None else v for k, v in limits.items()}
        return limits

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
                _check_offset(offset, size)
                f.seek(offset)
                chunk = f.read(self.cfg.max_log_chunk)
        except FileNotFoundError:
            _check_offset(offset, 0)
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

    # --- scheduling ------------------------------------------------------
    def tick(self) -> None:
        """One scheduler pass: fold backend states into running jobs, then start queued ones.

        Passes never overlap: a call while one runs asks it to go round once
        more and returns at once. A backend error ends the pass and is raised
        (the scheduler thread logs it and tries again).
        """
        with self._pass_guard:
            self._pass_wanted = True
            if self._pass_running:
                return
            self._pass_running = True
        try:
            while True:
                with self._pass_guard:
                    if not self._pass_wanted:
                        self._pass_running = False
                        return
                    self._pass_wanted = False
                self._pass()
        except BaseException:
            with self._pass_guard:
                self._pass_running = False
            raise

    def _pass(self) -> None:
        with self.lock:
            running = [r for r in self.store.jobs() if r["status"] == "running"]
        for record in running:
            self._reconcile(record, self.backend.status(record["job_id"]))
        with self.lock:
            records = list(self.store.jobs())
            free = self.cfg.max_concurrent_jobs - sum(r["status"] == "running" for r in records)
            queued = sorted(
                (r for r in records if r["status"] == "queued"), key=lambda r: r["created_at"]
            )
            starting = [self._mark_started(r) for r in queued[: max(0, free)]]
        for record in starting:
            self._submit(record)

    def _reconcile(self, seen: dict[str, Any], state: str | None) -> None:
        """Fold the backend's ``state`` into the running job ``seen`` (a snapshot)."""
        job_id = seen["job_id"]
        job_dir = self.store.job_dir(job_id)
        if state is None and _being_submitted(seen):
            return  # claimed by a replica whose submission is under way: not lost
        if state is not None and state not in TERMINAL:
            if seen["cancel_requested"]:  # a stop that failed, or came before the submission
                self.backend.stop(job_id)
            return
        result = _read_quiet(job_dir / "result.json")
        if result is not None and result.get("status") not in FINISHED:
            result = None
        if result is None and state is None:
            _kill_stale(job_dir, job_id)  # outside the lock: it waits for the process to go
        with self.lock:
            record = self.store.job(job_id)
            if record is None or record["status"] != "running":
                return
            if state is None and result is None and _being_submitted(record):
                return  # claimed again meanwhile (resume_lost): its submission runs
            if result is not None:
                record.update(status=result["status"], error=result.get("error"))
            elif state == "STOPPED":
                record.update(status="cancelled")
            elif state is not None:
                record.update(
                    status="failed", error=f"job process ended ({state}) without a result"
                )
            elif record["cancel_requested"]:
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

    def _mark_started(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write the job's spec and record it as running (under the lock, before
        the submission: a crash in between is reconciled as a lost job)."""
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
            status="running",
            started_at=now(),
            attempts=record["attempts"] + 1,
            error=None,
            # until the submission returns (or this time passes), another replica's
            # pass must not take the job that its backend does not know yet for lost
            submitting_until=time.time() + self._submit_deadline_s(),
        )
        self.store.save_job(record)
        return record

    def _submit_deadline_s(self) -> float:
        """The longest a submission can take: its two backend calls' deadlines."""
        return 2 * self.cfg.ray_jobs_timeout_s + 5.0

    def _submit(self, record: dict[str, Any]) -> None:
        """Hand a job marked running to the backend (outside the lock). A refusal
        fails the job; a timeout leaves it running for the next pass to ask about."""
        job_id = record["job_id"]
        env = {"WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        try:
            resources = {} if self.cfg.shared_storage else self.backend.node_resource()
            self.backend.submit(
                job_id,
                self._entrypoint(self.store.job_dir(job_id)),
                num_cpus=record["resources"]["num_cpus"],
                num_gpus=record["resources"]["num_gpus"],
                resources=resources,
                env_vars=env,
            )
        except BackendTimeout:
            log.warning("submitting %s got no answer; the next pass asks the backend", job_id)
        except Exception as exc:
            log.exception("submitting %s failed", job_id)
            with self.lock:
                current = self.store.job(job_id)
                if current is not None and current["status"] == "running":
                    current.update(
                        status="failed", finished_at=now(), error=f"submission failed: {exc}"
                    )
                    current.pop("submitting_until", None)
                    self.store.save_job(current)
            return
        with self.lock:  # submitted (or unanswered): from now on the backend's word counts
            current = self.store.job(job_id)
            if current is not None and current.pop("submitting_until", None) is not None:
                self.store.save_job(current)

    def _entrypoint(self, job_dir: Path) -> str:
        """The job's shell command: ``python -m serve.job_entry JOB_DIR`` without
        the service's token variable (``token_env``) in its environment.

        A job process inherits the environment its Ray node was started with
        (``python -m serve`` starts the embedded one, token and all). Ray's own
        ``RAY_AUTH_TOKEN`` stays: a job is a Ray client (``runner=ray`` joins
        the cluster) and, with no network settings open to clients
        (:data:`SERVER_OWNED`), sends it nowhere else.
        """
        command = [sys.executable, "-m", "serve.job_entry", str(job_dir)]
        if self.cfg.token_env:
            command = ["env", "-u", self.cfg.token_env, *command]
        return shlex.join(command)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("version", "submitting_until")}


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


def _check_offset(offset: int, size: int) -> None:
    if not 0 <= offset <= size:
        raise ServiceError(422, f"offset must be in 0..{size} (the log's size), got {offset}")


def _being_submitted(record: dict[str, Any]) -> bool:
    """Whether a replica claimed ``record``'s job and its submission may still be
    under way (``_mark_started``): a crash in it is lost only after the deadline."""
    until = record.get("submitting_until")
    return isinstance(until, (int, float)) and time.time() < until
