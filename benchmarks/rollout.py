"""Rolling an agent out in an env: one episode in, one :class:`EpisodeResult` out.

Shared by ``benchmarks.run``, ``agents.run`` and the learners that roll out
(GRPO, online SDFT). When the env is wrapped in
:class:`~browser_env.wrappers.RecordEpisode`, the agent's prompt, raw output
and guard notes are recorded with each step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from browser_env.wrappers import AnnotatedAction

__all__ = ["EpisodeResult", "rollout"]


@dataclasses.dataclass
class EpisodeResult:
    env_id: str
    seed: int
    goal: str
    success: bool
    episode_return: float
    steps: int
    terminated: bool
    truncated: bool
    answer: str | None
    action_errors: int
    env_step_ms: list[float]
    agent_ms: list[float]
    reset_ms: float
    episode_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def rollout(
    env: gym.Env,
    agent: Any,
    seed: int,
    *,
    options: dict[str, Any] | None = None,
    on_step: Callable[[int, Any, float, dict[str, Any]], None] | None = None,
) -> EpisodeResult:
    """Play one episode of ``agent`` in ``env`` from ``seed``.

    ``agent`` follows :class:`agents.agent.Agent` (``reset(goal, seed=)``,
    ``act(obs) -> (action, info)``). ``on_step(step, action, reward, info)``
    is called after every env step (e.g. to print it).
    """
    recorder = _recorder(env)
    obs, info = env.reset(seed=seed, options=options)
    reset_ms = float(info.get("timings", {}).get("total", 0.0))
    agent.reset(obs["goal"], seed=seed)
    total, steps, errors = 0.0, 0, 0
    env_ms: list[float] = []
    agent_ms: list[float] = []
    terminated = truncated = False
    step_info: dict[str, Any] = {}
    while not (terminated or truncated):
        t0 = time.perf_counter()
        action, act_info = agent.act(obs)
        agent_ms.append((time.perf_counter() - t0) * 1e3)
        annotated = AnnotatedAction(
            action,
            prompt=act_info.get("prompt"),
            raw_output=act_info.get("raw_output"),
            guards=tuple(act_info.get("guards") or ()),
        )
        t1 = time.perf_counter()
        obs, reward, terminated, truncated, step_info = env.step(
            annotated if recorder is not None else action
        )
        env_ms.append((time.perf_counter() - t1) * 1e3)
        total += float(reward)
        steps += 1
        errors += bool(step_info.get("action_error"))
        if on_step is not None:
            on_step(steps, action, float(reward), step_info)
    return EpisodeResult(
        env_id=env.spec.id if env.spec is not None else type(env.unwrapped).__name__,
        seed=seed,
        goal=str(obs["goal"]),
        success=bool(step_info.get("success")),
        episode_return=total,
        steps=steps,
        terminated=bool(terminated),
        truncated=bool(truncated),
        answer=step_info.get("answer"),
        action_errors=errors,
        env_step_ms=env_ms,
        agent_ms=agent_ms,
        reset_ms=reset_ms,
        episode_dir=str(recorder.last_episode_dir)
        if recorder and recorder.last_episode_dir
        else None,
    )


def _recorder(env: gym.Env) -> Any:
    from browser_env.wrappers import RecordEpisode

    while isinstance(env, gym.Wrapper):
        if isinstance(env, RecordEpisode):
            return env
        env = env.env
    return None
