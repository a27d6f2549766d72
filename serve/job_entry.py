"""The process of one training job: ``python -m serve.job_entry JOB_DIR``.

Ray Jobs runs this as the job's entrypoint. It reads ``JOB_DIR/spec.json``
(``{"learner", "config"}``, written by the service), sends its output to
``JOB_DIR/job.log`` (the service serves logs from there, so they outlive
Ray's job history), records its pid in ``JOB_DIR/pid``, calls the learner's
plain ``run(config)`` and writes ``JOB_DIR/result.json``:
``{"status": "succeeded"|"failed"|"cancelled", "error", "metrics", "finished_at"}``.
The ``error`` (what ``GET /v1/jobs/{id}`` shows) names paths under the state
dir relative to it (``datasets/<id>/data``); the traceback in ``job.log`` is
whole.

SIGTERM (what ``ray job stop`` sends first) raises :class:`Stopped` in the
main thread, so the learner's ``finally`` blocks run (progress bar, tracker,
eval envs closed) and the result says "cancelled"; exit status 143. A second
SIGTERM, once the first has been raised, kills outright.

Python drops an exception raised inside a weakref callback or a ``__del__``
(it reports it to ``sys.unraisablehook`` and goes on), so a SIGTERM whose
handler ran there would be lost and the job would train on. The job has no
loop of its own that could poll a flag instead (the learner's ``run`` is the
loop), so :func:`stop_on_sigterm` raises a dropped :class:`Stopped` again in
the main thread (:func:`browser_env.dropped_signals.raising_dropped`).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from browser_env.atomic import write_text_atomic
from browser_env.dropped_signals import raising_dropped
from serve.records import relative_to_state
from serve.store import read_json, write_json

__all__ = ["Stopped", "main", "run_job", "stop_on_sigterm"]


class Stopped(BaseException):
    """Raised by the SIGTERM handler; a BaseException so ``except Exception`` in
    library code does not swallow it."""


@contextmanager
def stop_on_sigterm(then: Any = None) -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Stopped` in the main thread, once:
    a SIGTERM after a raised :class:`Stopped` kills the process (the default
    action). A :class:`Stopped` that Python dropped (raised in a weakref callback
    or a ``__del__``, see the module docstring) does not count as raised: it is
    raised again at the main thread's next check for signals. Main thread only.
    On exit the unraisable hook comes back, and the SIGTERM handler becomes
    ``then`` (e.g. ``signal.SIG_IGN``), by default the one before the block."""
    raised = False  # a Stopped is on its way up

    def on_sigterm(signum: int, frame: Any) -> None:
        nonlocal raised
        if raised:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        raised = True
        raise Stopped()

    def dropped() -> None:
        nonlocal raised
        raised = False  # raised again by the resent SIGTERM

    with raising_dropped(
        Stopped, signal.SIGTERM, on_sigterm, ours=lambda: raised, on_drop=dropped, then=then
    ):
        yield


def run_job(job_dir: str | os.PathLike[str]) -> int:
    """Run the job in ``job_dir``; returns the process exit status."""
    from serve.service import LEARNERS, now

    directory = Path(job_dir)
    spec = read_json(directory / "spec.json")
    if spec is None or spec.get("learner") not in LEARNERS:
        raise ValueError(f"{directory}/spec.json is missing or names no known learner")
    # atomic: the service (and its tests) may read it the moment it exists
    write_text_atomic(directory / "pid", f"{os.getpid()}\n")
    result: dict[str, Any]
    code = 0
    try:
        # then: SIGTERM is ignored from the learner's end, so the result reaches the disk
        with stop_on_sigterm(then=signal.SIG_IGN):
            module = importlib.import_module(f"learners.{spec['learner']}")
            print(f"[serve] job {spec.get('job_id')}: learners.{spec['learner']}.run", flush=True)
            out = module.run(spec["config"])
        result = {"status": "succeeded", "error": None, "metrics": out.get("metrics", {})}
    except Stopped:
        print("[serve] stopped by SIGTERM", flush=True)
        result, code = {"status": "cancelled", "error": "stopped on request"}, 143
    except BaseException as exc:  # the result must say why, whatever it was
        traceback.print_exc()  # the whole story, server paths and all, in job.log
        error = f"{type(exc).__name__}: {exc}"
        if directory.resolve().parent.name == "jobs":  # state_dir/jobs/<job-id>
            error = relative_to_state(error, directory.resolve().parent.parent)
        result = {"status": "failed", "error": error}
        code = 1
    write_json(directory / "result.json", {**result, "finished_at": now()})
    print(f"[serve] {result['status']}", flush=True)
    return code


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m serve.job_entry",
        description="Run one training job of the training service (Ray Jobs runs this; "
        "see docs/serve.md): reads JOB_DIR/spec.json, writes JOB_DIR/job.log and result.json.",
    )
    parser.add_argument("job_dir", help="the job's directory under the service's state dir")
    directory = Path(parser.parse_args(argv).job_dir)
    if not (directory / "spec.json").is_file():
        parser.error(f"{directory} holds no spec.json: not a job directory")
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
