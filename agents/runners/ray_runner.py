"""``runner=ray``: Ray actors, each owning an env and an agent.

Each :class:`RolloutWorker` actor builds its agent once (``make_agent``) and
keeps one env, remade when the task changes. The driver hands every idle
actor the next job and collects episodes as they finish (``on_result``).

* An actor that dies (its process killed, out of memory, a node lost) is
  recreated and its episode played again, once; a second death records the
  episode with ``status="error"``. ``EpisodeResult.retries`` says which were
  replayed.
* ``episode_timeout_s``: the actor stops the episode between steps and
  returns it with ``status="timeout"``; an actor stuck inside one step longer
  than the timeout plus ``kill_grace_s`` is killed (its Playwright driver
  takes its browser down with it) and recreated, and the episode recorded as
  a timeout.
* At the end every actor closes its env (and browser) and agent, and only then
  is killed.

Ray runs embedded by default (:func:`browser_env.ray_vector.init_ray`: ``ray.init(address="local")``
on 127.0.0.1, no dashboard, usage stats off, a temp dir of its own under
/tmp); with ``RAY_ADDRESS`` set it joins that cluster, where ``browser-rl``
must be installed on every node. A Ray already initialised by the caller is
used as it is and left running.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from agents.rollout import EpisodeResult
from agents.runners import Job, RolloutSpec, failed_result
from browser_env.ray_vector import init_ray

__all__ = ["RolloutWorker", "init_ray", "run_ray"]


class RolloutWorker:
    """A Ray actor's state: one agent, one env at a time. Also usable in-process."""

    def __init__(self, make_agent: Callable[[], Any], spec: RolloutSpec) -> None:
        import browser_env  # noqa: F401 - registers the ids in the actor's process

        self.spec = spec
        self.agent = make_agent()
        self.env: Any = None
        self.env_id: str | None = None

    def pid(self) -> int:
        return os.getpid()

    def play(self, job: Job) -> EpisodeResult:
        from agents.runners.local import play_job

        if self.env_id != job.env_id:
            self._close_env()
            self.env = self.spec.make_env(job.env_id)
            self.env_id = job.env_id
        return play_job(self.env, self.agent, job, self.spec)

    def _close_env(self) -> None:
        env, self.env, self.env_id = self.env, None, None
        if env is not None:
            env.close()

    def close(self) -> None:
        """Close the env (its browser) and the agent; safe twice."""
        self._close_env()
        agent, self.agent = self.agent, None
        if agent is not None and hasattr(agent, "close"):
            agent.close()


def run_ray(
    jobs: Sequence[Job],
    spec: RolloutSpec,
    make_agent: Callable[[], Any],
    *,
    workers: int,
    on_result: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    import ray

    started = init_ray(num_cpus=max(os.cpu_count() or 1, workers))
    actor_cls = ray.remote(num_cpus=1, max_restarts=0)(RolloutWorker)
    actors: list[Any] = [actor_cls.remote(make_agent, spec) for _ in range(workers)]
    queue = collections.deque((job, 0) for job in jobs)
    # in flight: object ref -> (actor index, job, attempt, start time)
    running: dict[Any, tuple[int, Job, int, float]] = {}
    idle = collections.deque(range(workers))
    results: list[EpisodeResult] = []
    hard_limit = (
        None if spec.episode_timeout_s is None else spec.episode_timeout_s + spec.kill_grace_s
    )

    def finish(result: EpisodeResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    def replace(index: int) -> None:
        ray.kill(actors[index], no_restart=True)
        actors[index] = actor_cls.remote(make_agent, spec)

    try:
        while queue or running:
            while queue and idle:
                index = idle.popleft()
                job, attempt = queue.popleft()
                running[actors[index].play.remote(job)] = (index, job, attempt, time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                index, job, attempt, _ = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    replace(index)
                    if attempt == 0:
                        queue.appendleft((job, 1))
                    else:
                        finish(failed_result(job, "error", f"worker died twice: {exc}", attempt))
                except ray.exceptions.RayTaskError as exc:
                    finish(failed_result(job, "error", str(exc).splitlines()[0], attempt))
                else:
                    result.retries = attempt
                    finish(result)
                idle.append(index)
            if hard_limit is not None:
                now = time.monotonic()
                for ref, (index, job, attempt, began) in list(running.items()):
                    if now - began > hard_limit:
                        del running[ref]
                        replace(index)
                        error = f"no result within {hard_limit:.0f} s: the worker was killed"
                        finish(failed_result(job, "timeout", error, attempt))
                        idle.append(index)
    finally:
        for closing in [actor.close.remote() for actor in actors]:
            try:
                ray.get(closing, timeout=120)
            except Exception:  # noqa: BLE001 - a dead actor has nothing left to close
                pass
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()
    return results
