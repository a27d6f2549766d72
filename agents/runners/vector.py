"""``runner=vector``: N envs in one shared Chromium, one batched policy call per step.

Per task, a :class:`~browser_env.vector.SharedBrowserVectorEnv` of
``workers`` sub-envs (all tasks share one :class:`~browser_env.vector.SharedBrowser`)
plays the task's jobs, refilling a sub-env with the next seed as soon as its
episode ends. Each sub-env has its own fork of the agent (its episode state);
the leader agent's ``act_batch`` decides for every running sub-env in one
model call. The sub-envs are stepped through the vector env's ``envs``
rather than ``step``: episodes start and end at different steps, and
Gymnasium's vector ``step`` steps every sub-env.

``agent_ms`` of a step is the batch call's time divided by the batch size
(the model time each decision cost).
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from agents.rollout import Episode, EpisodeResult
from agents.runners import Job, RolloutSpec

__all__ = ["run_vector"]

_BROWSER_KWARGS = ("headless", "executable_path", "slow_mo_ms")


def run_vector(
    jobs: Sequence[Job],
    spec: RolloutSpec,
    agent: Any,
    *,
    workers: int,
    on_result: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    from browser_env.browser import BrowserConfig
    from browser_env.vector import SharedBrowser, SharedBrowserVectorEnv

    if not hasattr(agent, "fork") or not hasattr(agent, "act_batch"):
        raise ValueError(
            f"runner=vector needs an agent with fork() and act_batch(); "
            f"{type(agent).__name__} has not: use runner=local or runner=ray"
        )
    env_kwargs = dict(spec.env_kwargs)
    browser_kwargs = {k: env_kwargs.pop(k) for k in _BROWSER_KWARGS if k in env_kwargs}
    results: list[EpisodeResult] = []
    forks = [agent.fork() for _ in range(workers)]
    with SharedBrowser(BrowserConfig(**browser_kwargs)) as shared:
        for env_id, group in itertools.groupby(jobs, key=lambda job: job.env_id):
            pending = collections.deque(group)
            vec = SharedBrowserVectorEnv(
                min(workers, len(pending)),
                env_id=env_id,
                browser=shared,
                wrappers=[spec.wrap],
                autoreset_mode="Disabled",
                **env_kwargs,
            )
            try:
                for result in _play(vec.envs, forks, agent, pending, spec):
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
            finally:
                vec.close()
    return results


def _play(envs: Sequence[Any], forks: Sequence[Any], leader: Any, pending: Any, spec: RolloutSpec):
    """Yield each episode's result as it ends, refilling the sub-env with the next job."""
    slots: list[Episode | None] = [None] * len(envs)
    deadlines: list[float] = [float("inf")] * len(envs)

    def start(i: int) -> None:
        slots[i] = None
        if pending:
            job = pending.popleft()
            slots[i] = Episode(
                envs[i], forks[i], job.seed, options=job.options, max_steps=spec.max_steps
            )
            timeout = spec.episode_timeout_s
            deadlines[i] = float("inf") if timeout is None else time.monotonic() + timeout

    for i in range(len(envs)):
        start(i)
    while any(slot is not None for slot in slots):
        for i, slot in enumerate(slots):
            if slot is None:
                continue
            if not slot.done and time.monotonic() > deadlines[i]:
                yield slot.stop("timeout")
                start(i)
            elif slot.done:  # ended on reset (a zero-step limit) or on its last step
                yield slot.result()
                start(i)
        active = [i for i, slot in enumerate(slots) if slot is not None and not slot.done]
        if not active:
            continue
        t0 = time.perf_counter()
        decisions = leader.act_batch([slots[i].obs for i in active], [forks[i] for i in active])
        per_env_ms = (time.perf_counter() - t0) * 1e3 / len(active)
        for i, (action, info) in zip(active, decisions, strict=True):
            slots[i].step(action, info, per_env_ms)
