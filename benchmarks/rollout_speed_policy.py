"""The ``policy`` rows of :mod:`benchmarks.rollout_speed`: the tiny LLM policy
played through ``runner=vector``, batched (one ``generate_batch`` per step) and
unbatched (one ``generate`` per env), at N = 1 and at the largest N;
:func:`measure_policy` says how the rows are made comparable."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

__all__ = ["measure_policy"]


class _Unbatched:
    """An agent whose ``act_batch`` calls ``act`` per env (the unbatched baseline)."""

    def __init__(self, agent: Any) -> None:
        self.agent, self.name = agent, agent.name

    def fork(self) -> Any:
        return self.agent.fork()

    def act_batch(self, observations: Sequence[Any], agents: Sequence[Any]) -> list[Any]:
        return [a.act(o) for a, o in zip(agents, observations, strict=True)]


def measure_policy(
    sizes: Sequence[int],
    episodes_per_env: int,
    task: str,
    env_kwargs: dict[str, Any] | None = None,
    rounds: int = 3,
) -> list[dict]:
    """Episodes/s of the tiny policy through ``runner=vector``, batched and unbatched.

    Every row plays the same episodes (``episodes_per_env`` per env of the
    largest N, on the same seeds), so the rows differ only in how the policy
    is called: episodes of a task differ in length, and a prompt grows with
    an episode's history. The rows' engines are opened together and warmed
    up with one episode per env first (reported as ``startup_s``, not
    counted), so the rates are those of a running rollout loop, as a
    learner's is between optimiser steps; each then plays the jobs once
    uncounted (a batched engine is not at its steady rate before), and the
    rows take turns for ``rounds`` rounds, each round starting with another
    row; the figures are those of each row's median round. All engines stay
    open meanwhile (idle contexts cost ~2 CPU-ms a second each). The prompt
    holds the page's URL, whose port is each engine's own, so rows can
    differ by a step or so in all (``steps_runs``).
    ``model_ms_per_step`` is the policy's time per decision (a batch call's
    time over its batch size).
    """
    import contextlib

    from agents.runners import Job, RolloutEngine, RolloutSpec
    from benchmarks.backends import tiny_agent

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    agent = tiny_agent()
    env_id = f"browser_env/miniwob.{task}-v0"
    spec = RolloutSpec(env_kwargs={**(env_kwargs or {}), "modalities": ("elements", "text")})
    plan = [
        (n, batched)
        for n in sorted({min(sizes), max(sizes)})
        for batched in ((True, False) if n > 1 else (True,))
    ]
    jobs = [Job(env_id, 1000 + i) for i in range(max(sizes) * episodes_per_env)]
    runs: dict[tuple[int, bool], list[dict[str, Any]]] = {key: [] for key in plan}
    try:
        with contextlib.ExitStack() as stack:
            engines, startup = {}, {}
            for n, batched in plan:
                t0 = time.perf_counter()
                engine = stack.enter_context(
                    RolloutEngine(
                        spec,
                        agent=agent if batched else _Unbatched(agent),
                        runner="vector",
                        workers=n,
                        keep_envs=True,
                    )
                )
                engine.run([Job(env_id, 500 + i) for i in range(n)])
                engines[(n, batched)], startup[(n, batched)] = engine, time.perf_counter() - t0
            from tqdm.auto import tqdm

            # a first round of the very jobs, not counted: a batched engine is
            # not at its steady rate after one episode per env (measured: the
            # N = 8 rows' rates rose round after round); the rows then take turns,
            # each round starting with another row
            turns = list(plan) + [
                key for r in range(rounds) for key in plan[r % len(plan) :] + plan[: r % len(plan)]
            ]
            for turn, key in enumerate(tqdm(turns, desc="tiny policy", unit="run")):
                t0 = time.perf_counter()
                results = engines[key].run(jobs)
                wall = time.perf_counter() - t0
                steps = sum(r.steps for r in results)
                if turn < len(plan):
                    continue  # the warm-up round
                runs[key].append(
                    {
                        "episodes_per_s": len(results) / wall,
                        "steps_per_s": steps / wall,
                        "model_ms_per_step": sum(sum(r.agent_ms) for r in results) / max(steps, 1),
                        "success_rate": sum(r.success for r in results) / len(results),
                        "steps": steps,
                    }
                )
    finally:
        agent.close()
    return [
        {
            "n": n,
            "batched": batched,
            **_median_round(runs[(n, batched)], "episodes_per_s"),
            "episodes_per_s_runs": [r["episodes_per_s"] for r in runs[(n, batched)]],
            "steps_runs": [r["steps"] for r in runs[(n, batched)]],
            "startup_s": startup[(n, batched)],
            "episodes": len(jobs),
            "rounds": rounds,
        }
        for n, batched in plan
    ]


def _median_round(rounds: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The round whose ``key`` is the median (the lower one of an even count), all
    its figures together (a median per figure could mix rounds)."""
    ordered = sorted(rounds, key=lambda r: r[key])
    return dict(ordered[(len(ordered) - 1) // 2])
