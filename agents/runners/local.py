"""``runner=local``: one env per task, one episode after another."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from agents.rollout import EpisodeResult, rollout
from agents.runners import (
    Job,
    RolloutSpec,
    abort_recording,
    by_env_id,
    collect,
    reset_error_result,
)
from browser_env.vector import close_all

if TYPE_CHECKING:
    import gymnasium as gym

    from agents.agent import Agent


__all__ = ["LocalRunner", "play_job"]


def play_job(
    env: gym.Env, agent: Agent, job: Job, spec: RolloutSpec, *, record_errors: bool = False
) -> EpisodeResult:
    """Play ``job`` in ``env`` (made for ``job.env_id``) with ``agent``, within the
    spec's limits. ``record_errors``: an exception of the episode gives an
    ``error`` result instead of being raised (see :class:`LocalRunner`)."""
    timeout = spec.episode_timeout_s
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        return rollout(
            env,
            agent,
            job.seed,
            options=job.options,
            max_steps=spec.max_steps,
            agent_seed=job.agent_seed,
            deadline=deadline,
            keep_samples=spec.keep_samples,
            record_errors=record_errors,
        )
    except Exception as exc:  # the reset's: a step's is recorded by rollout
        if not record_errors:
            raise
        return reset_error_result(job, exc, env)
    except BaseException as exc:  # Ctrl+C: the episode stays incomplete
        abort_recording(env, exc)
        raise


class LocalRunner:
    """Plays jobs in order with one agent; an env per env id, made on first use.

    With ``keep_envs`` every env id's env stays open for later jobs and runs
    (a learner's few tasks, played every step); otherwise an env is closed
    as soon as a job for another id comes (a suite's many tasks). An
    exception an episode raises ends :meth:`run`, unless ``record_errors``:
    then that episode is recorded with ``status="error"`` (the steps it
    played, and its recording, end there) and the next job plays (what Ray
    actors do). Ctrl+C leaves the recording of the episode under way
    ``complete: false`` (reason ``interrupted: KeyboardInterrupt``).
    """

    def __init__(
        self,
        spec: RolloutSpec,
        agent: Agent,
        *,
        keep_envs: bool = False,
        record_errors: bool = False,
    ) -> None:
        self.spec, self.agent, self.keep_envs = spec, agent, keep_envs
        self.record_errors = record_errors
        self.envs: dict[str, Any] = {}

    def env(self, env_id: str) -> Any:
        if env_id not in self.envs:
            if not self.keep_envs:
                self.close_envs()
            self.envs[env_id] = self.spec.make_env(env_id)
        return self.envs[env_id]

    def run(
        self, jobs: Sequence[Job], on_result: Callable[[EpisodeResult], None] | None = None
    ) -> list[EpisodeResult]:
        return collect(jobs, self.iter_run(jobs), on_result)

    def iter_run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, EpisodeResult]]:
        """Play ``jobs``, yielding each (job, its episode's result) as it ends."""
        for job in by_env_id(jobs):
            env = self.env(job.env_id)
            yield job, play_job(env, self.agent, job, self.spec, record_errors=self.record_errors)

    def close_envs(self) -> None:
        envs, self.envs = list(self.envs.values()), {}
        close_all(envs)

    def close(self) -> None:
        self.close_envs()
