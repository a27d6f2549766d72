"""A running job the backend forgot (a restarted Ray) whose process still runs.

Its process is stopped before the job is marked lost or queued again: SIGTERM,
SIGKILL after a grace period, and a job whose process outlives even that is
failed, never resumed (two runs would write one adapter dir).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from _serve_helpers import running_job_record

JOB_ID = "job-" + "ab" * 10

# A job process as serve.records.kill_stale recognises one (`serve.job_entry`
# and the job dir on its command line), slow to honour SIGTERM, or (STOPPED)
# answering it as the job entry does: result.json says "cancelled".
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
)
STOPPED = (
    "import json, signal, sys, time\n"
    "def stop(*_):\n"
    "    open(sys.argv[2] + '/result.json', 'w').write(json.dumps("
    "{'version': 1, 'status': 'cancelled', 'error': 'stopped on request'}))\n"
    "    sys.exit(143)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def orphan(make_service, tmp_path):
    """``start(code) -> Popen``: a running job record on ``tmp_path/state`` and
    its process running ``code``, which outlives the backend (a fresh one)."""
    from serve.store import Store

    store = Store(tmp_path / "state")
    started = []

    def start(code: str) -> subprocess.Popen:
        store.save_job(running_job_record(JOB_ID))
        job_dir = store.job_dir(JOB_ID)
        process = subprocess.Popen([sys.executable, "-c", code, "serve.job_entry", str(job_dir)])
        started.append(process)
        time.sleep(0.5)  # its signal handler in place
        (job_dir / "pid").write_text(f"{process.pid}\n")
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def _dead(process: subprocess.Popen) -> bool:
    """Ended (a zombie until the test reaps it)."""
    import psutil

    try:
        return psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_lost_jobs_process_deaf_to_sigterm_is_killed_before_the_job_resumes(
    make_service, orphan, monkeypatch
):
    import serve.records

    monkeypatch.setattr(serve.records, "STALE_GRACE_S", 1.0, raising=False)
    process = orphan(IGNORES_SIGTERM)
    service, backend = make_service(resume_lost=True)
    assert _dead(process), "the job was resumed while its old process still ran"
    assert process.wait(1) == -9  # SIGKILLed after the grace period
    job = service.job(JOB_ID)
    assert job["status"] == "running" and job["attempts"] == 2
    assert [s[0] for s in backend.submissions] == [JOB_ID]


@pytest.mark.parametrize("resume_lost", [True, False])
def test_a_lost_job_whose_process_survives_sigkill_is_failed_not_resumed(
    make_service, orphan, monkeypatch, resume_lost
):
    import psutil

    import serve.records

    monkeypatch.setattr(serve.records, "STALE_GRACE_S", 0.3, raising=False)
    monkeypatch.setattr(serve.records, "STALE_KILL_WAIT_S", 0.3, raising=False)
    # a process in uninterruptible sleep: no signal ends it
    monkeypatch.setattr(psutil.Process, "kill", lambda self: None)
    process = orphan(IGNORES_SIGTERM)
    service, backend = make_service(resume_lost=resume_lost)
    assert process.poll() is None
    job = service.job(JOB_ID)
    assert job["status"] == "failed", job
    assert job["error"].startswith("lost: ")
    assert f"its process (pid {process.pid}) still runs after SIGTERM and SIGKILL" in job["error"]
    assert backend.submissions == []


def test_a_lost_job_stopped_by_sigterm_is_lost_not_cancelled(make_service, orphan):
    process = orphan(STOPPED)
    service, backend = make_service()
    assert process.wait(5) == 143
    result = json.loads((service.store.job_dir(JOB_ID) / "result.json").read_text())
    assert result["status"] == "cancelled"  # what the process wrote; the record knows better
    job = service.job(JOB_ID)
    assert job["status"] == "failed" and job["error"].startswith("lost: "), job
    assert backend.submissions == []
