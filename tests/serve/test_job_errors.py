"""A failed job's error as the API shows it: paths under the state dir relative
to it, as upload messages name paths relative to the upload; ``job.log`` keeps
the whole story."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _serve_helpers import FakeBackend

JOB_ID = "job-" + "0" * 20


def test_paths_under_the_state_dir_are_shown_relative_to_it():
    from serve.records import relative_to_state

    root = Path("/srv/state")
    assert relative_to_state("x=['/srv/state/datasets/ds-1/data']", root) == (
        "x=['datasets/ds-1/data']"
    )
    assert relative_to_state("in /srv/state: bad", root) == "in .: bad"
    for elsewhere in ("/srv/state2/a", "/srv/state.bak", "/srv/stat"):
        assert relative_to_state(elsewhere, root) == elsewhere


def test_a_failed_jobs_error_names_no_server_path(tmp_path, episodes):
    """The real SFT learner refusing its episodes (no task kept: before any
    model loads), run as the job process runs it."""
    pytest.importorskip("torch")
    from serve.job_entry import run_job
    from serve.store import Store, write_json

    store = Store(tmp_path / "state")
    data = store.root / "datasets" / ("ds-" + "a" * 32) / "data"
    shutil.copytree(episodes, data)
    job_dir = store.job_dir(JOB_ID)
    job_dir.mkdir()
    config = {
        "episodes": [str(data)],
        "output_dir": str(job_dir / "adapter"),
        "tasks": ["no-such-task"],
        "max_steps": 1,
        "wandb": False,
    }
    write_json(job_dir / "spec.json", {"job_id": JOB_ID, "learner": "sft", "config": config})
    assert run_job(job_dir) == 1
    error = json.loads((job_dir / "result.json").read_text())["error"]
    assert f"['datasets/ds-{'a' * 32}/data']" in error, error
    assert str(store.root) not in error and str(tmp_path) not in error


def test_a_refused_submissions_error_names_no_server_path(make_service):
    class Refusing(FakeBackend):
        def submit(self, job_id, entrypoint, **options):
            raise RuntimeError(f"cannot run {entrypoint}")

    service, _ = make_service(Refusing())
    job, _ = service.create_job({"learner": "grpo"})
    error = service.job(job["job_id"])["error"]
    assert error.startswith("submission failed: cannot run ")
    assert f"serve.job_entry jobs/{job['job_id']}" in error, error
    assert str(service.store.root) not in error
