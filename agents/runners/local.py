"""``runner=local``: one env per task, one episode after another."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from agents.rollout import EpisodeResult, rollout
from agents.runners import Job, RolloutSpec

__all__ = ["play_job", "run_local"]


def play_job(env: Any, agent: Any, job: Job, spec: RolloutSpec) -> EpisodeResult:
    """Play ``job`` in ``env`` (made for ``job.env_id``) with ``agent``, within the spec's limits."""
    timeout = spec.episode_timeout_s
    deadline = None if timeout is None else time.monotonic() + timeout
    return rollout(
        env, agent, job.seed, options=job.options, max_steps=spec.max_steps, deadline=deadline
    )


def run_local(
    jobs: Sequence[Job],
    spec: RolloutSpec,
    agent: Any,
    *,
    on_result: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    results: list[EpisodeResult] = []
    for env_id, group in itertools.groupby(jobs, key=lambda job: job.env_id):
        env = spec.make_env(env_id)
        try:
            for job in group:
                results.append(play_job(env, agent, job, spec))
                if on_result is not None:
                    on_result(results[-1])
        finally:
            env.close()
    return results
