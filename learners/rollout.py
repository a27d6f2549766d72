"""What learners take from the rollout engine: trajectories of per-step samples.

The loop that plays episodes is :mod:`agents.runners` (``runner=local|vector|ray``,
``workers``, ``envs_per_worker``), the same engine ``benchmarks.run`` and
``agents.run`` use; this module adds only what learning needs on top:

* :class:`Trajectory`: an episode as GRPO sees it, built from an
  :class:`~agents.rollout.EpisodeResult` played with ``keep_samples``. Every
  step keeps its own prompt (the messages the agent built for that
  observation) and its own completion token ids: one step, one training
  sample. Steps are never concatenated into one sequence across turns (the
  bug of huggingface/trl#4543).
* :class:`LearnerRollouts`: an engine held for the whole training run (the
  browser, envs and Ray actors start once), with the learner's current
  weights handed to the agents that act: in-process runners share the
  trainer's model; Ray actors load the latest adapter (``generation=local``)
  or switch to the latest served model name (``generation=server``) before
  each batch of episodes.
* :func:`play` (one episode in a given env) and the evaluation gate
  (:func:`attach_env_gate`), also through the engine's loop.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.rollout import StepSample

if TYPE_CHECKING:
    import gymnasium as gym

    from agents.agent import Agent
    from agents.backends.base import Backend
    from agents.rollout import EpisodeResult
    from agents.runners import RolloutSpec
    from learners.config import GRPOConfig, LearnerConfig
    from learners.loop import TrainLoop

__all__ = [
    "LearnerRollouts",
    "StepSample",
    "Trajectory",
    "attach_env_gate",
    "check_eval_env_ids",
    "check_ray_actor_policy",
    "evaluate_success",
    "make_agent",
    "play",
]


@dataclasses.dataclass
class Trajectory:
    env_id: str
    seed: int
    steps: list[StepSample]
    episode_return: float
    success: bool
    status: str = "ok"  # as EpisodeResult.status: "ok", "timeout" or "error"
    error: str | None = None

    @property
    def parse_rate(self) -> float:
        return sum(s.parsed for s in self.steps) / max(len(self.steps), 1)

    @classmethod
    def from_result(cls, result: EpisodeResult) -> Trajectory:
        """From an ``EpisodeResult`` played with ``keep_samples``."""
        return cls(
            result.env_id,
            result.seed,
            result.samples,
            result.episode_return,
            result.success,
            status=result.status,
            error=result.error,
        )


def make_agent(
    backend: Backend,
    cfg: LearnerConfig,
    *,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
) -> Any:
    """The learner's agent: ``cfg.prompt`` (the prompt recipe training uses) and this sampling."""
    from agents.agent import LLMAgent
    from agents.backends.base import SamplingParams

    return LLMAgent(
        backend,
        prompt=cfg.prompt,
        sampling=SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        ),
    )


def play(env: gym.Env, agent: Agent, seed: int, *, sample_seed: int | None = None) -> Trajectory:
    """One episode in ``env``; ``sample_seed`` seeds the agent's sampling (distinct per group member)."""
    from agents.rollout import rollout

    result = rollout(env, agent, seed, agent_seed=sample_seed, keep_samples=True)
    return Trajectory.from_result(result)


# -- agents built inside Ray actors (picklable factories and updates) ---------------------


def _transformers_agent(model: str, device: str, prompt: Any, sampling: Any) -> Any:
    from agents.agent import LLMAgent
    from agents.backends.transformers import TransformersBackend

    backend = TransformersBackend(model, device=device, dtype="float32")
    return LLMAgent(backend, prompt=prompt, sampling=sampling)


def _server_agent(backend_kwargs: dict[str, Any], prompt: Any, sampling: Any) -> Any:
    from agents.agent import LLMAgent
    from agents.backends.openai import OpenAIBackend

    return LLMAgent(OpenAIBackend(**backend_kwargs), prompt=prompt, sampling=sampling)


def _load_adapter(path: str, agent: Agent) -> None:
    agent.backend.load_adapter(path)


def _serve_as(name: str, agent: Agent) -> None:
    agent.backend.model_name = name


def check_ray_actor_policy(runner: str, *, serves_adapters: bool, lora: bool) -> None:
    """Refuse ``runner=ray`` with ``generation=local`` (no adapter server) and
    ``lora=false``: each actor is handed the trainer's current LoRA adapter.
    Learners call it before loading the model, and the engine again when built."""
    if runner == "ray" and not serves_adapters and not lora:
        raise ValueError(
            "runner=ray with generation=local hands each actor the current LoRA "
            "adapter: it needs lora=true (or use generation=server)"
        )


class LearnerRollouts:
    """The rollout engine of one training run, playing with the current policy.

    Args:
        agent: the learner's agent (its backend: the trainer's model, or the
            LoRA server's client with ``generation=server``).
        spec: how envs are made (``keep_samples`` is set here).
        runner, workers, envs_per_worker, cpus_per_worker, gpus_per_worker: as in
            :class:`agents.runners.RolloutEngine`.
        actor_agent: for ``runner=ray``, the picklable factory of each actor's
            agent (see :meth:`for_learner`).
        adapter_dir: ``runner=ray`` with a local model: where the current
            adapter is saved for the actors to load before each batch.
    """

    def __init__(
        self,
        agent: Agent,
        spec: RolloutSpec,
        *,
        runner: str = "local",
        workers: int = 1,
        envs_per_worker: int = 1,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        actor_agent: Any = None,
        adapter_dir: str | None = None,
    ) -> None:
        from agents.runners import RolloutEngine

        self.agent, self.runner, self.adapter_dir = agent, runner, adapter_dir
        self.engine = RolloutEngine(
            dataclasses.replace(spec, keep_samples=True),
            agent=None if runner == "ray" else agent,
            make_agent=actor_agent,
            runner=runner,
            workers=workers,
            envs_per_worker=envs_per_worker,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            keep_envs=True,
        )

    @classmethod
    def for_learner(
        cls,
        agent: Agent,
        cfg: GRPOConfig,
        spec: RolloutSpec,
        *,
        server: Any = None,
        base_model: str | None = None,
    ) -> LearnerRollouts:
        """The engine ``cfg`` asks for (``runner``, ``workers``, ``envs_per_worker``)
        around the learner's ``agent``; ``server``: the :class:`LoRAServer` of
        ``generation=server``; ``base_model``: the trainer's model dir."""
        runner = getattr(cfg, "runner", "local")
        actor_agent, adapter_dir = None, None
        if runner == "ray":
            sampling = agent.sampling
            if server is not None:
                backend = server.backend
                kwargs = {
                    "base_url": backend.base_url,
                    "model": backend.model_name,
                    "api_key_env": cfg.server_token_env or "",
                    "multimodal": backend.multimodal,
                    "timeout": cfg.server_timeout,
                    "request_logprobs": False,
                    "return_token_ids": True,
                    "tokenizer": base_model,
                }
                actor_agent = functools.partial(_server_agent, kwargs, cfg.prompt, sampling)
            else:
                check_ray_actor_policy(runner, serves_adapters=False, lora=cfg.lora)
                actor_agent = functools.partial(
                    _transformers_agent, base_model, cfg.device, cfg.prompt, sampling
                )
                adapter_dir = str(Path(cfg.output_dir) / "rollout_policy")
        return cls(
            agent,
            spec,
            runner=runner,
            workers=int(getattr(cfg, "workers", 1)),
            envs_per_worker=int(getattr(cfg, "envs_per_worker", 1)),
            cpus_per_worker=float(getattr(cfg, "cpus_per_worker", 1.0)),
            gpus_per_worker=float(getattr(cfg, "gpus_per_worker", 0.0)),
            actor_agent=actor_agent,
            adapter_dir=adapter_dir,
        )

    def sync(self, model: Any = None, served_name: str | None = None) -> None:
        """Before a batch: give Ray actors the current policy (``model``'s
        adapter, or the name the server serves it under). In-process runners
        act with the trainer's own model and need nothing."""
        if self.runner != "ray":
            return
        if served_name is not None:
            self.engine.call_agents(functools.partial(_serve_as, served_name), key="policy")
        elif model is not None and self.adapter_dir is not None:
            model.save_pretrained(self.adapter_dir)
            self.engine.call_agents(
                functools.partial(_load_adapter, self.adapter_dir), key="policy"
            )

    def play(self, jobs: Sequence[Any]) -> list[Trajectory]:
        """The jobs' trajectories, in the order of ``jobs`` (whatever order they finished in)."""
        results = self.engine.run(jobs)
        index = {(r.env_id, r.seed, r.agent_seed): r for r in results}
        return [Trajectory.from_result(index[(j.env_id, j.seed, j.agent_seed)]) for j in jobs]

    def close(self) -> None:
        self.engine.close()


def evaluate_success(
    backend: Backend,
    cfg: LearnerConfig,
    rollouts: LearnerRollouts,
    env_ids: Iterable[str],
    seeds: Iterable[int],
) -> dict[str, float]:
    """Greedy success rate (and mean return, parse rate) over ``env_ids`` x ``seeds``;
    ``rollouts`` plays with a greedy agent on ``backend``."""
    from agents.runners import Job

    model = backend.model
    was_training = model.training
    model.eval()
    try:
        results = rollouts.play([Job(e, s) for e in env_ids for s in seeds])
    finally:
        model.train(was_training)
    n = max(len(results), 1)
    return {
        "success_rate": sum(r.success for r in results) / n,
        "return_mean": sum(r.episode_return for r in results) / n,
        "parse_rate": sum(r.parse_rate for r in results) / n,
    }


def success_gate(
    backend: Backend, cfg: LearnerConfig
) -> tuple[Callable[[], float], Callable[[], None]]:
    """``(evaluate, close)`` for an evaluation gate on held-out env seeds: greedy
    episodes of ``backend`` (torch or MLX) on ``cfg.eval_env_ids`` x
    ``cfg.eval_seeds`` through the rollout engine (``runner=local``), envs kept
    open between evaluations until ``close``."""
    from agents.runners import RolloutSpec

    agent = make_agent(
        backend, cfg, temperature=0.0, max_new_tokens=getattr(cfg, "max_new_tokens", 48)
    )
    spec = RolloutSpec(
        env_kwargs={"max_episode_steps": cfg.eval_max_steps, "modalities": ("elements", "text")}
    )
    rollouts = LearnerRollouts(agent, spec)

    def evaluate() -> float:
        return evaluate_success(backend, cfg, rollouts, cfg.eval_env_ids, cfg.eval_seeds)[
            "success_rate"
        ]

    return evaluate, rollouts.close


def check_eval_env_ids(cfg: LearnerConfig) -> None:
    """Raise ``ValueError`` naming ``learner.eval_env_ids`` (with Gymnasium's
    suggestion) for an id there that is no registered env: SFT and SDFT call
    it before the model loads, as GRPO checks its env ids, rather than fail at
    the first evaluation."""
    if not cfg.eval_env_ids:
        return
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the browser_env/* ids
    from agents.runners import Job, check_env_ids

    try:
        check_env_ids(Job(e, 0) for e in cfg.eval_env_ids)
    except gym.error.Error as exc:
        raise ValueError(f"learner.eval_env_ids: {exc}") from exc


def attach_env_gate(loop: TrainLoop, cfg: LearnerConfig) -> None:
    """Give ``loop`` an evaluation gate on held-out env seeds when the config asks
    for one (:func:`success_gate` on the trainer's model)."""
    if not (cfg.eval_steps and cfg.eval_env_ids):
        return
    evaluate, close = success_gate(loop.backend, cfg)
    loop.closers.append(close)
    loop.set_gate(evaluate)
