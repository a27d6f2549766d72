"""Playing the policy in the live env, for GRPO and for the evaluation gate.

Every step keeps its own prompt (the messages the agent built for that
observation) and its own completion token ids: one step, one training sample.
Steps are never concatenated into one sequence across turns (the bug of
huggingface/trl#4543).

The loop is :func:`agents.rollout.rollout`; :func:`play` keeps, for each
step, what learning needs from the agent's info: the prompt messages and the
images sent with them, the completion token ids and the parse outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

__all__ = [
    "EnvPool",
    "attach_env_gate",
    "StepSample",
    "Trajectory",
    "evaluate_success",
    "make_agent",
    "play",
]


@dataclasses.dataclass
class StepSample:
    messages: list[dict[str, Any]]
    images: list[Any]
    completion_ids: list[int]
    parsed: bool


@dataclasses.dataclass
class Trajectory:
    env_id: str
    seed: int
    steps: list[StepSample]
    episode_return: float
    success: bool

    @property
    def parse_rate(self) -> float:
        return sum(s.parsed for s in self.steps) / max(len(self.steps), 1)


class EnvPool:
    """One env per id, reused across episodes (a browser launch is the slow part)."""

    def __init__(self, max_steps: int, modalities: Iterable[str] = ("elements", "text")) -> None:
        self.max_steps = max_steps
        self.modalities = tuple(modalities)
        self._envs: dict[str, Any] = {}

    def get(self, env_id: str) -> Any:
        if env_id not in self._envs:
            import gymnasium as gym

            import browser_env  # noqa: F401 - registers the ids

            self._envs[env_id] = gym.make(
                env_id, max_episode_steps=self.max_steps, modalities=self.modalities
            )
        return self._envs[env_id]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def make_agent(
    backend: Any, cfg: Any, *, temperature: float, top_p: float = 1.0, max_new_tokens: int = 48
) -> Any:
    from agents.agent import LLMAgent
    from agents.backends.base import SamplingParams

    return LLMAgent(
        backend,
        prompt=cfg.prompt,
        sampling=SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        ),
    )


def play(env: Any, agent: Any, seed: int, *, sample_seed: int | None = None) -> Trajectory:
    """One episode; ``sample_seed`` seeds the agent's sampling (distinct per group member)."""
    from agents.rollout import rollout

    steps: list[StepSample] = []

    def keep(t: int, action: Any, reward: float, obs: Any, info: Any, step_info: Any) -> None:
        steps.append(
            StepSample(
                messages=info["prompt"]["messages"],
                images=list(info.get("images") or ()),
                completion_ids=list(info["generation"]["token_ids"]),
                parsed=bool(info["parse"]["ok"]),
            )
        )

    result = rollout(env, agent, seed, agent_seed=sample_seed, on_step=keep)
    return Trajectory(result.env_id, seed, steps, result.episode_return, result.success)


def evaluate_success(
    backend: Any, cfg: Any, pool: EnvPool, env_ids: Iterable[str], seeds: Iterable[int]
) -> dict[str, float]:
    """Greedy success rate (and mean return) over ``env_ids`` x ``seeds``."""
    model = backend.model
    was_training = model.training
    model.eval()
    agent = make_agent(
        backend, cfg, temperature=0.0, max_new_tokens=getattr(cfg, "max_new_tokens", 48)
    )
    results = [play(pool.get(e), agent, s) for e in env_ids for s in seeds]
    model.train(was_training)
    n = max(len(results), 1)
    return {
        "success_rate": sum(r.success for r in results) / n,
        "return_mean": sum(r.episode_return for r in results) / n,
        "parse_rate": sum(r.parse_rate for r in results) / n,
    }


def attach_env_gate(loop: Any, cfg: Any) -> None:
    """Give ``loop`` an evaluation gate on held-out env seeds when the config asks for one."""
    if not (cfg.eval_steps and cfg.eval_env_ids):
        return
    pool = EnvPool(cfg.eval_max_steps)
    loop.closers.append(pool.close)
    loop.set_gate(
        lambda: evaluate_success(loop.backend, cfg, pool, cfg.eval_env_ids, cfg.eval_seeds)[
            "success_rate"
        ]
    )
