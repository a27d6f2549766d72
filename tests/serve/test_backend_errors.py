"""The real :class:`~serve.backend.RayJobBackend` over a stand-in Jobs API that
answers with errors: only Ray's own "no such job" (404) makes a job unknown.

A job the backend reports unknown is lost: its process is killed and the job
failed or queued again. A 500 whose text happens to hold "404" or "does not
exist" (a traceback's line number, a message about something else) must not
do that to a running job.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from _serve_helpers import JobsAPIHandler, running_job_record, serving

pytest.importorskip("ray.job_submission")

JOB_ID = "job-" + "cd" * 10
TRACEBACK_500 = (
    "Traceback (most recent call last):\n"
    '  File "job_head.py", line 404, in get_job_info\n'
    "TimeoutError: the GCS does not exist yet"
)


@pytest.fixture
def dashboard():
    """``(url, answers)``: a Jobs API answering ``/api/jobs/...`` with
    ``answers["status"], answers["body"]``."""
    answers = {"status": 404, "body": f"Job {JOB_ID} does not exist"}

    class Handler(JobsAPIHandler):
        def job_call(self):
            self.answer(answers["status"], answers["body"])

    with serving(Handler) as url:
        yield url, answers


def test_only_rays_404_for_the_job_means_unknown(dashboard):
    from serve.backend import RayJobBackend

    url, answers = dashboard
    backend = RayJobBackend(url, timeout=10)
    assert backend.status(JOB_ID) is None
    backend.stop(JOB_ID)  # stopping a job Ray does not know: nothing to do

    answers.update(status=500, body=TRACEBACK_500)
    with pytest.raises(RuntimeError, match="status code 500"):
        backend.status(JOB_ID)
    with pytest.raises(RuntimeError, match="status code 500"):
        backend.stop(JOB_ID)
    # a 404 about another job, or from a route the dashboard has not loaded yet
    for body in (f"Job {'ef' * 10} does not exist", "404: Not Found"):
        answers.update(status=404, body=body)
        with pytest.raises(RuntimeError, match="status code 404"):
            backend.status(JOB_ID)


def test_a_jobs_api_error_mentioning_404_leaves_a_running_job_alone(make_service, dashboard):
    from serve.backend import RayJobBackend

    url, answers = dashboard
    answers.update(status=500, body=TRACEBACK_500)
    service, _ = make_service(RayJobBackend(url, timeout=10))
    record = running_job_record(JOB_ID)
    service.store.save_job(record)
    job_dir = service.store.job_dir(JOB_ID)
    # the job's process, as kill_stale recognises one
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "serve.job_entry", str(job_dir)]
    )
    try:
        (job_dir / "pid").write_text(f"{process.pid}\n")
        with pytest.raises(RuntimeError, match="status code 500"):
            service.tick()  # the pass ends on the error, as on a timeout
        time.sleep(0.3)
        assert process.poll() is None, "a running job's process was killed"
        job = service.job(JOB_ID)
        assert job["status"] == "running" and job["error"] is None
    finally:
        process.kill()
        process.wait()
