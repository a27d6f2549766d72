"""The process of one training job: ``python -m serve.job_entry JOB_DIR``.

Ray Jobs runs this as the job's entrypoint. It reads ``JOB_DIR/spec.json``
(``{"learner", "config"}``, written by the service), sends its output to
``JOB_DIR/job.log`` (the service serves logs from there, so they outlive
Ray's job history), records its pid in ``JOB_DIR/pid``, calls the learner's
plain ``run(config)`` and writes ``JOB_DIR/result.json``:
``{"status": "succeeded"|"failed"|"cancelled", "error", "metrics", "finished_at"}``.

SIGTERM (what ``ray job stop`` sends first) raises :class:`Stopped` in the
main thread, so the learner's ``finally`` blocks run (progress bar, tracker,
eval envs closed) and the result says "cancelled"; exit status 143.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from browser_env.atomic import write_text_atomic
from serve.store import read_json, write_json

__all__ = ["Stopped", "main", "run_job"]


class Stopped(BaseException):
    """Raised by the SIGTERM handler; a BaseException so ``except Exception`` in
    library code does not swallow it."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills outright
    raise Stopped()


def run_job(job_dir: str | os.PathLike[str]) -> int:
    """Run the job in ``job_dir``; returns the process exit status."""
    from serve.service import LEARNERS, now

    directory = Path(job_dir)
    spec = read_json(directory / "spec.json")
    if spec is None or spec.get("learner") not in LEARNERS:
        raise ValueError(f"{directory}/spec.json is missing or names no known learner")
    # atomic: the service (and its tests) may read it the moment it exists
    write_text_atomic(directory / "pid", f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, _on_sigterm)
    result: dict[str, Any]
    code = 0
    try:
        module = importlib.import_module(f"learners.{spec['learner']}")
        print(f"[serve] job {spec.get('job_id')}: learners.{spec['learner']}.run", flush=True)
        out = module.run(spec["config"])
        result = {"status": "succeeded", "error": None, "metrics": out.get("metrics", {})}
    except Stopped:
        print("[serve] stopped by SIGTERM", flush=True)
        result, code = {"status": "cancelled", "error": "stopped on request"}, 143
    except BaseException as exc:  # the result must say why, whatever it was
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the result reach the disk
    write_json(directory / "result.json", {**result, "finished_at": now()})
    print(f"[serve] {result['status']}", flush=True)
    return code


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m serve.job_entry JOB_DIR")
    directory = Path(args[0])
    print(f"[serve] logging to {directory / 'job.log'}", flush=True)
    log = os.open(directory / "job.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.exit(run_job(directory))


if __name__ == "__main__":
    main()
