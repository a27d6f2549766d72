"""The training service's queue: reconciliation with the backend and submission.

:class:`SchedulerMixin` is the part of :class:`~serve.service.TrainingService`
that moves jobs along. The queue is the service's own: :meth:`~SchedulerMixin.tick`
(run every ``poll_interval_s`` by a background thread, and after every
submission) folds the backend's states into the running jobs' records and
submits queued jobs while fewer than ``max_concurrent_jobs`` run. A job is
submitted under its own id, written as "running" before the submission, so a
crash in between (or a submission whose answer never came) is reconciled like
any job the backend forgot. Records change only under the state dir's lock
(:class:`~serve.store.StateLock`, which holds across processes): a queued job
is claimed (re-read and written as "running") under it, so of two services on
one state dir (a redeploy's old and new replica) exactly one submits it. Every
backend call runs outside the lock.

The service provides ``cfg`` (:class:`~serve.config.ServeConfig`), ``backend``
(:class:`~serve.backend.JobBackend`), ``store`` (:class:`~serve.store.Store`)
and ``lock`` (its state lock), and calls :meth:`~SchedulerMixin._init_scheduler`
before its first :meth:`~SchedulerMixin.tick`.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

from serve.backend import TERMINAL, BackendTimeout, JobBackend
from serve.config import ServeConfig
from serve.records import (
    FINISHED,
    being_submitted,
    kill_stale,
    now,
    read_quiet,
    relative_to_state,
)
from serve.store import StateLock, Store, write_json

__all__ = ["SchedulerMixin"]

log = logging.getLogger(__name__)


class SchedulerMixin:
    """Scheduler passes and the thread that runs them (see the module docstring)."""

    cfg: ServeConfig
    backend: JobBackend
    store: Store
    lock: StateLock

    def _init_scheduler(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pass_guard = threading.Lock()  # guards the two flags below (see tick)
        self._pass_running = False
        self._pass_wanted = False

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
        if state is None and being_submitted(seen):
            return  # claimed by a replica whose submission is under way: not lost
        if state is not None and state not in TERMINAL:
            if seen["cancel_requested"]:  # a stop that failed, or came before the submission
                self.backend.stop(job_id)
            return
        result = read_quiet(job_dir / "result.json")
        if result is not None and result.get("status") not in FINISHED:
            result = None
        survivor = None  # a lost job's process that would not die
        if result is None and state is None:
            survivor = kill_stale(job_dir, job_id)  # outside the lock: it waits for the process
            # A result the stop made it write ("cancelled") is not the job's
            # outcome: it was lost. One it wrote having finished its work is.
            late = read_quiet(job_dir / "result.json")
            if late is not None and late.get("status") == "succeeded":
                result = late
        with self.lock:
            record = self.store.job(job_id)
            if record is None or record["status"] != "running":
                return
            if state is None and result is None and being_submitted(record):
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
            elif survivor is not None:
                # never two runs of one job: both would write its adapter dir
                log.error("job %s was lost but its process %d still runs", job_id, survivor)
                error = (
                    f"lost: the backend no longer knows the job, and its process (pid {survivor}) "
                    "still runs after SIGTERM and SIGKILL; stop it by hand"
                )
                if self.cfg.resume_lost:
                    error += " (not resumed: two runs would write one adapter dir)"
                record.update(status="failed", error=error)
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
                    error = relative_to_state(f"submission failed: {exc}", self.store.root)
                    current.update(status="failed", finished_at=now(), error=error)
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

        A job process inherits the environment its Ray node was started with:
        ``python -m serve`` keeps the token out of it (:mod:`serve.__main__`),
        a cluster started by hand (``serve deploy``) may have it. Ray's own
        ``RAY_AUTH_TOKEN`` stays: a job is a Ray client (``runner=ray`` joins
        the cluster) and, with no network settings open to clients
        (:data:`SERVER_OWNED`), sends it nowhere else.
        """
        command = [sys.executable, "-m", "serve.job_entry", str(job_dir)]
        if self.cfg.token_env:
            command = ["env", "-u", self.cfg.token_env, *command]
        return shlex.join(command)
