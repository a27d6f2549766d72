"""Playing an agent in an env: one episode in, one :class:`EpisodeResult` out.

The one rollout loop of ``agents.run`` and ``benchmarks.run``. When the env is
wrapped in :class:`~browser_env.wrappers.RecordEpisode`, every step is
recorded with what the agent said about it (:func:`annotate`: prompt, raw
output, parse outcome, guards, prompt version).

``learners.rollout`` keeps a loop of its own: GRPO needs each step's
completion token ids and nothing of the timing and recording kept here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym

from browser_env.actions import Action
from browser_env.wrappers import AnnotatedAction, RecordEpisode

__all__ = ["EpisodeResult", "StepCallback", "annotate", "find_recorder", "rollout", "token_usage"]

# on_step(t, action, reward, obs, agent_info, step_info), after env step t (1-based).
StepCallback = Callable[
    [int, Action, float, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], None
]


@dataclasses.dataclass
class EpisodeResult:
    """One played episode. Times are milliseconds; ``actions`` are canonical dicts."""

    env_id: str
    seed: int | None
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
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    prompt_tokens: int = 0  # summed over the episode's model calls (0: no model, e.g. random)
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def annotate(action: Action, info: Mapping[str, Any]) -> AnnotatedAction:
    """``action`` with what ``Agent.act`` said about it, for :class:`RecordEpisode`."""
    prompt = info.get("prompt")
    extras = {k: info[k] for k in ("parse", "proposed", "latency_s") if k in info}
    if isinstance(prompt, Mapping):
        extras["prompt_version"] = prompt.get("version")
        extras["truncation"] = prompt.get("truncation")
    return AnnotatedAction(
        action=action,
        prompt=prompt.get("messages") if isinstance(prompt, Mapping) else prompt,
        raw_output=info.get("raw_output"),
        guards=list(info.get("guards") or ()),
        extras=extras or None,
    )


def token_usage(info: Mapping[str, Any]) -> tuple[int, int]:
    """``(prompt_tokens, completion_tokens)`` of one ``Agent.act`` info: the
    backend's own counts (transformers, MLX, TensorRT-LLM), else the server's
    OpenAI ``usage``, else the number of returned completion token ids; ``(0, 0)``
    for agents without a model."""
    generation = info.get("generation")
    if not isinstance(generation, Mapping):
        return 0, 0
    backend_info = generation.get("info") or {}
    usage = backend_info.get("usage") or {}
    prompt = backend_info.get("prompt_tokens", usage.get("prompt_tokens"))
    completion = backend_info.get("completion_tokens", usage.get("completion_tokens"))
    if completion is None:
        completion = len(generation.get("token_ids") or ())
    return int(prompt or 0), int(completion or 0)


def find_recorder(env: gym.Env) -> RecordEpisode | None:
    """The :class:`RecordEpisode` in ``env``'s wrapper stack, or None."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, RecordEpisode):
            return env
        env = env.env
    return None


def rollout(
    env: gym.Env,
    agent: Any,
    seed: int | None,
    *,
    options: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    agent_seed: int | None = None,
    on_step: StepCallback | None = None,
) -> EpisodeResult:
    """Play one episode of ``agent`` in ``env`` from ``seed``.

    ``agent`` follows :class:`agents.agent.Agent` (``reset(goal, seed=)``,
    ``act(obs) -> (action, info)``). The episode ends when the env terminates
    or truncates, or after ``max_steps`` steps (then it counts as truncated).
    The agent is reset with ``agent_seed`` (its sampling seed), default ``seed``.
    ``on_step`` is called after every env step (e.g. to print it, or to keep
    the agent's info for learning).
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    recorder = find_recorder(env)
    obs, info = env.reset(seed=seed, options=dict(options) if options else None)
    reset_ms = float(info.get("timings", {}).get("total", 0.0))
    goal = str(obs.get("goal") or (options or {}).get("goal") or "")
    agent.reset(goal, seed=seed if agent_seed is None else agent_seed)
    total, steps, errors = 0.0, 0, 0
    tokens = [0, 0]
    env_ms: list[float] = []
    agent_ms: list[float] = []
    actions: list[dict[str, Any]] = []
    terminated = truncated = False
    step_info: Mapping[str, Any] = {}
    while not (terminated or truncated):
        if max_steps is not None and steps >= max_steps:
            truncated = True
            if recorder is not None:
                recorder.end_episode("max_steps")
            break
        t0 = time.perf_counter()
        action, act_info = agent.act(obs)
        agent_ms.append((time.perf_counter() - t0) * 1e3)
        tokens = [a + b for a, b in zip(tokens, token_usage(act_info), strict=True)]
        t1 = time.perf_counter()
        obs, reward, terminated, truncated, step_info = env.step(
            annotate(action, act_info) if recorder is not None else action
        )
        env_ms.append((time.perf_counter() - t1) * 1e3)
        total += float(reward)
        steps += 1
        errors += bool(step_info.get("action_error"))
        actions.append(action.to_dict())
        if on_step is not None:
            on_step(steps, action, float(reward), obs, act_info, step_info)
    last_dir = recorder.last_episode_dir if recorder is not None else None
    return EpisodeResult(
        env_id=env.spec.id if env.spec is not None else type(env.unwrapped).__name__,
        seed=seed,
        goal=goal,
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
        episode_dir=None if last_dir is None else str(last_dir),
        actions=actions,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
    )
