"""The job process without Ray: ``python -m serve.job_entry`` runs the real SFT
learner on the tiny model, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from _serve_helpers import click_observation, write_click_episode

# The Ray tier (test_ray_service.py) covers the same path through Ray Jobs;
# this one runs it without Ray, for machines where Ray cannot start.
pytestmark = [pytest.mark.slow, pytest.mark.exhaustive]
pytest.importorskip("peft")


def _spec(job_dir, episodes, **overrides):
    from serve.store import write_json

    config = {
        "episodes": [str(episodes)],
        "output_dir": str(job_dir / "adapter"),
        "max_steps": 2,
        "batch_size": 2,
        "save_steps": 0,
        "wandb": False,
        "learning_rate": 1e-2,
        "progress": True,
        **overrides,
    }
    write_json(job_dir / "spec.json", {"job_id": "job-t", "learner": "sft", "config": config})


@pytest.fixture(scope="module")
def click_episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("click")
    for seed, target in enumerate(["ONE", "TWO", "THREE", "TWO"]):
        write_click_episode(root, seed, target)
    return root


def test_job_entry_trains_an_adapter_that_drives_an_agent(tmp_path, click_episodes):
    from serve.service import _progress

    _spec(tmp_path, click_episodes)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", "serve.job_entry", str(tmp_path)], env=env, timeout=600
    )
    log = (tmp_path / "job.log").read_text()
    assert done.returncode == 0, log[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "succeeded" and result["metrics"]["loss"] > 0
    assert _progress(tmp_path / "job.log") == {"step": 2, "total": 2}  # from the real tqdm bar

    from agents.backends.transformers import TransformersBackend
    from agents.tiny import tiny_model_path
    from browser_env.actions import Action

    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    from agents.agent import LLMAgent

    backend = TransformersBackend(str(tiny_model_path("text")), adapter=str(adapter), device="cpu")
    agent = LLMAgent(backend)
    agent.reset('Click on the "TWO" button.')
    action, info = agent.act(click_observation("TWO"))
    assert isinstance(action, Action) and info
    backend.close()


def test_job_entry_stops_cleanly_on_sigterm(tmp_path, click_episodes):
    _spec(tmp_path, click_episodes, max_steps=100_000)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve.job_entry", str(tmp_path)],
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # wait until training steps run
            log = (tmp_path / "job.log").read_text() if (tmp_path / "job.log").exists() else ""
            if "/100000 [" in log:
                break
            time.sleep(0.5)
        else:
            pytest.fail("training did not start")
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)  # what `ray job stop` sends first
        assert proc.wait(timeout=15) == 143
        assert time.monotonic() - start < 15
    finally:  # a job left training (a SIGTERM that did not stop it) would burn a core on
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "cancelled"
    assert int((tmp_path / "pid").read_text()) == proc.pid


def test_the_service_knows_exactly_the_learners_that_have_configs():
    from learners.config import LEARNER_CONFIGS
    from serve.service import LEARNERS

    assert sorted(LEARNERS) == sorted(LEARNER_CONFIGS)
