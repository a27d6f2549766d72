"""One rollout engine, three runners: ``local``, ``vector`` and ``ray``.

::

    from agents.runners import Job, RolloutSpec, run_rollouts

    jobs = [Job("browser_env/miniwob.click-button-v0", seed) for seed in range(8)]
    results = run_rollouts(jobs, RolloutSpec(env_kwargs={"headless": True}),
                           agent=agent, runner="vector", workers=4)

* ``local``: one env per task, one episode after another (:func:`agents.rollout.rollout`).
* ``vector``: ``workers`` envs as isolated contexts of one shared Chromium
  (:class:`browser_env.vector.SharedBrowserVectorEnv`), and one batched
  policy call for all of them per step (``agent.act_batch``).
* ``ray``: ``workers`` Ray actors, each owning an env and an agent built by
  ``make_agent``; episodes stream back as they finish (``on_result``); an
  actor that dies is recreated and its episode retried once; an episode past
  ``RolloutSpec.episode_timeout_s`` is recorded with ``status="timeout"``.
  Embedded local Ray by default, a cluster through ``RAY_ADDRESS``.

Whatever the runner, the results come back sorted by (env id, seed), so
tables never depend on the order in which episodes finished; with the same
seeds the success table is the same across runners (the scripted expert's is,
by test).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agents.rollout import EpisodeResult

__all__ = ["RUNNERS", "Job", "RolloutSpec", "failed_result", "run_rollouts"]

RUNNERS = ("local", "vector", "ray")

ResultCallback = Callable[[EpisodeResult], None]


@dataclasses.dataclass(frozen=True)
class Job:
    """One episode to play: the env id, its seed and reset options."""

    env_id: str
    seed: int | None
    options: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """How every runner makes envs and records episodes (picklable, for Ray).

    Attributes:
        env_kwargs: ``gymnasium.make`` keyword arguments for every env id
            (``headless``, ``modalities``, ``max_episode_steps``, ...).
        record_dir: when set, each env is wrapped in
            :class:`~browser_env.wrappers.RecordEpisode` writing there.
        agent_info: the recorded agent description (an ``AgentInfo`` or mapping).
        source: the recorded episode source (``agent``, ``scripted``).
        max_steps: the runner's own step limit per episode (None: the env's).
        episode_timeout_s: wall-clock limit per episode; past it the episode
            stops between steps with ``status="timeout"`` (ray: an actor stuck
            in one step longer than that plus ``kill_grace_s`` is killed and
            recreated, and the episode recorded as a timeout).
        kill_grace_s: see ``episode_timeout_s``.
    """

    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    record_dir: str | None = None
    agent_info: Any = None
    source: str = "agent"
    max_steps: int | None = None
    episode_timeout_s: float | None = None
    kill_grace_s: float = 30.0

    def wrap(self, env: Any) -> Any:
        """``env`` wrapped for recording when ``record_dir`` is set."""
        if self.record_dir is None:
            return env
        from browser_env.wrappers import RecordEpisode

        return RecordEpisode(env, self.record_dir, agent=self.agent_info, source=self.source)

    def make_env(self, env_id: str) -> Any:
        import gymnasium as gym

        import browser_env  # noqa: F401 - registers the ids

        return self.wrap(gym.make(env_id, **dict(self.env_kwargs)))


def failed_result(job: Job, status: str, error: str, retries: int = 0) -> EpisodeResult:
    """The result of an episode that could not be played to its end."""
    return EpisodeResult(
        env_id=job.env_id,
        seed=job.seed,
        goal="",
        success=False,
        episode_return=0.0,
        steps=0,
        terminated=False,
        truncated=True,
        answer=None,
        action_errors=0,
        env_step_ms=[],
        agent_ms=[],
        reset_ms=0.0,
        status=status,
        error=error,
        retries=retries,
    )


def run_rollouts(
    jobs: Sequence[Job],
    spec: RolloutSpec,
    *,
    agent: Any = None,
    make_agent: Callable[[], Any] | None = None,
    runner: str = "local",
    workers: int = 1,
    on_result: ResultCallback | None = None,
) -> list[EpisodeResult]:
    """Play every job and return the results sorted by (env id, seed).

    ``local`` and ``vector`` use ``agent`` (or ``make_agent()``, closed at the
    end); ``ray`` builds one agent per actor with ``make_agent`` (picklable).
    ``on_result`` is called with each result as it arrives.
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if agent is None and make_agent is None:
        raise ValueError("give agent= or make_agent=")
    if runner == "ray":
        if make_agent is None:
            raise ValueError("runner=ray builds an agent in every actor: give make_agent=")
        from agents.runners.ray_runner import run_ray

        results = run_ray(jobs, spec, make_agent, workers=workers, on_result=on_result)
    else:
        own = agent is None
        agent = make_agent() if own else agent
        try:
            if runner == "vector":
                from agents.runners.vector import run_vector

                results = run_vector(jobs, spec, agent, workers=workers, on_result=on_result)
            else:
                from agents.runners.local import run_local

                results = run_local(jobs, spec, agent, on_result=on_result)
        finally:
            if own and hasattr(agent, "close"):
                agent.close()
    return sorted(results, key=lambda r: (r.env_id, -1 if r.seed is None else r.seed))
