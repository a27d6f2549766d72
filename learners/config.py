"""One config dataclass per learner, every field with help text (TRL style).

These dataclasses are the one place a learner default lives.
:func:`register_configs` stores them in Hydra's ConfigStore as the structured
configs ``learner/{sft,sdft,grpo}_schema``, which ``conf/learner/*.yaml``
build on through their defaults lists and override only what differs; so
``learner.max_stpes=3`` on a command line is an error that names the key.
:func:`from_mapping` builds a config from a plain mapping (the composed
``cfg.learner``, the training service's overrides, a test's dict) and
rejects unknown keys the same way. A config refuses, as it is made, the values
that would otherwise fail only after the model loaded (in PEFT, torch or the
learner's sampling) or train what was not asked (no steps at all).

Shared fields live in :class:`LearnerConfig`; :class:`SFTConfig`,
:class:`SDFTConfig` and :class:`GRPOConfig` add their algorithm's own.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any, TypeVar

from agents.agent import PromptConfig
from agents.backends.base import SamplingParams
from agents.schema import help_field

__all__ = [
    "LEARNER_CONFIGS",
    "GRPOConfig",
    "LearnerConfig",
    "SDFTConfig",
    "SFTConfig",
    "from_mapping",
    "register_configs",
]


_f = help_field  # a field with its help text


@dataclasses.dataclass
class LearnerConfig:
    """What every learner shares: the model, the LoRA, the optimiser, outputs and logging."""

    model: str = _f(
        "tiny-random",
        "Base model: local dir, hub id or preset (agents.models): tiny-random (agents.tiny's "
        "random-weight text model, for tests), smollm2-135m (SmolLM2-135M-Instruct, offline).",
    )
    output_dir: str | None = _f(
        None,
        "Adapter directory written (adapter + training.json; default: <hydra run dir>/adapter "
        "or outputs/<learner>/adapter). If it already holds a finished "
        "adapter, training continues from it; if it holds checkpoints of an unfinished run, "
        "that run resumes. A file, or a non-empty dir no learner wrote, is refused.",
    )
    init_adapter: str | None = _f(
        None, "Start from this PEFT adapter (e.g. SDFT after SFT) instead of a fresh LoRA."
    )
    device: str = _f("cpu", "auto | cpu | cuda | cuda:N (passed to TransformersBackend).")
    seed: int = _f(0, "Seed for data order, sampling and LoRA initialisation.")
    # LoRA
    lora: bool = _f(
        True, "Train a LoRA adapter (False trains all weights; output is then a model dir)."
    )
    lora_r: int = _f(8, "LoRA rank r.")
    lora_alpha: int = _f(16, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = _f(0.0, "LoRA dropout (0 keeps on-policy log-probs exact).")
    lora_target_modules: list[str] | str = _f(
        "all-linear", "Modules to adapt: 'all-linear' or a list such as [q_proj, v_proj]."
    )
    # optimisation
    learning_rate: float = _f(1e-4, "AdamW learning rate.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables).")
    max_steps: int = _f(
        100, "Optimiser steps in this run (>= 1; SFT: <= 0 trains num_epochs passes instead)."
    )
    batch_size: int = _f(4, "Prompts (SFT/SDFT) or episodes' steps (GRPO) per optimiser step.")
    # data
    episodes: list[str] = _f([], "Episode dirs or run dirs to read (learners.samples).")
    success_only: bool = _f(True, "Use only successful episodes.")
    tasks: list[str] | None = _f(None, "Keep only these tasks (e.g. [click-button]).")
    sources: list[str] | None = _f(None, "Keep only these sources: human, scripted, agent.")
    prompt: PromptConfig = field(
        default_factory=PromptConfig,
        metadata={
            "help": "The agent's prompt settings (agents.agent.PromptConfig: budget_tokens, "
            "max_history, max_text_chars, rules, system_role, use_screenshot); must match the "
            "agent's, so training prompts equal inference prompts. A mapping is accepted."
        },
    )
    # checkpoints, evaluation, logging
    save_steps: int = _f(50, "Checkpoint every N optimiser steps (0: only at the end).")
    save_total_limit: int = _f(2, "Checkpoints kept (the best one is always kept).")
    eval_steps: int = _f(0, "Evaluate on held-out seeds every N steps (0: never).")
    eval_env_ids: list[str] = _f(
        [],
        "Envs for evaluation, e.g. [miniwob.click-test] (any spelling "
        "browser_env.registration.resolve_env_id accepts; stored as full ids).",
    )
    eval_seeds: list[int] = _f([1000, 1001, 1002], "Held-out seeds for evaluation.")
    eval_max_steps: int = _f(8, "Step limit of an evaluation episode.")
    rollback_tolerance: float = _f(
        0.0,
        "Evaluation gate: when held-out success falls more than this below the best so far, "
        "the weights roll back to the best checkpoint.",
    )
    logging_steps: int = _f(1, "Log metrics every N steps.")
    wandb: bool = _f(
        True, "Log to wandb (offline unless WANDB_API_KEY is set; WANDB_MODE respected)."
    )
    wandb_project: str = _f("browser-rl", "wandb project.")
    run_name: str | None = _f(None, "wandb run name (default: learner name + output dir).")
    progress: bool = _f(True, "Show a tqdm progress bar.")

    def __post_init__(self) -> None:
        from browser_env.registration import resolve_env_id

        self.prompt = PromptConfig.from_value(self.prompt)
        # one spelling everywhere: miniwob.click-test works where the full id does
        self.eval_env_ids = [resolve_env_id(e) for e in self.eval_env_ids]
        # what would otherwise fail only after the model loaded, inside PEFT or torch
        for name in ("lora_r", "lora_alpha", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        device = self.device
        if not (
            device in ("auto", "cpu", "cuda")
            or (device.startswith("cuda:") and device[5:].isdigit())
        ):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


@dataclasses.dataclass
class SFTConfig(LearnerConfig):
    """Behaviour cloning: cross-entropy on the target action JSON only."""

    lora_dropout: float = _f(0.05, "LoRA dropout.")
    learning_rate: float = _f(2e-4, "AdamW learning rate.")
    num_epochs: float = _f(
        1.0, "Passes over the data when max_steps <= 0 (then a finite number > 0)."
    )
    demo_fraction: float = _f(
        0.0,
        "Fraction of samples (in [0, 1]) trained with the teacher prompt (demonstration in "
        "context) instead of the student prompt: teaches the model to use an in-context demo, "
        "which SDFT's teacher relies on.",
    )
    port_jitter: bool = _f(
        False,
        "Replace the port of 127.0.0.1 URLs in each drawn prompt with a random one: local task "
        "servers pick a free port per run, and a small model otherwise keys on the port seen "
        "in training (the tiny model's action changed with the port alone).",
    )
    counterfactual_fraction: float = _f(
        0.0,
        "Expected counterfactual copies per sample (>= 0; 2.5 = two, plus a third for half of "
        "them): the teacher prompt with a demonstration on another listed element, and that "
        "demonstration as the target. Copying the demonstration is the only way to be right on "
        "these, so the model learns to follow an in-context demo rather than ignore it.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # max_steps <= 0 means num_epochs passes: a negative count trained one step,
        # nan failed after the model loaded
        if self.max_steps <= 0 and not (math.isfinite(self.num_epochs) and self.num_epochs > 0):
            raise ValueError(
                f"num_epochs must be a finite number > 0 when max_steps <= 0 (it sets the "
                f"steps then), got {self.num_epochs}"
            )
        if not 0.0 <= self.demo_fraction <= 1.0:
            raise ValueError(f"demo_fraction must be in [0, 1], got {self.demo_fraction}")
        if not (math.isfinite(self.counterfactual_fraction) and self.counterfactual_fraction >= 0):
            raise ValueError(
                "counterfactual_fraction must be a finite number >= 0, got "
                f"{self.counterfactual_fraction}"
            )


@dataclasses.dataclass
class SDFTConfig(LearnerConfig):
    """Self-Distillation Fine-Tuning (arXiv 2601.19897)."""

    learning_rate: float = _f(5e-5, "AdamW learning rate.")
    kl_direction: str = _f(
        "reverse",
        "reverse: KL(student || teacher), the paper's choice; forward: KL(teacher || student).",
    )
    top_k: int | None = _f(
        None, "Compute the KL on the student's top-k tokens (renormalised); None: full vocabulary."
    )
    ema_rate: float = _f(
        0.05,
        "Teacher EMA rate alpha: after each step teacher <- (1 - alpha) teacher + alpha student "
        "(over the trainable weights, i.e. the LoRA adapter); the paper's EMA teacher, 0.05 as "
        "TRL's teacher_update_rate. 0 keeps the teacher frozen at the initial student.",
    )
    temperature: float = _f(1.0, "Sampling temperature of the student's on-policy completions.")
    top_p: float = _f(1.0, "Nucleus sampling of the student's completions.")
    max_new_tokens: int = _f(48, "Completion length limit.")
    enrich: dict[str, Any] | None = _f(
        None,
        "Optional rationale per expert action in the teacher's demonstration: "
        "learners.enrich.Enricher arguments (model, base_url, api_key_env, cache_dir); "
        "null: the raw action. Falls back to the raw action on any failure.",
    )
    backend: str = _f("transformers", "transformers (torch + PEFT) or mlx (mlx-lm LoRA).")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_steps(self)
        _check_sampling(self)
        if self.kl_direction not in ("reverse", "forward"):
            raise ValueError(
                f"kl_direction must be 'reverse' or 'forward', got {self.kl_direction!r}"
            )
        if not 0.0 <= self.ema_rate <= 1.0:
            raise ValueError(f"ema_rate must be in [0, 1], got {self.ema_rate}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1 or null")
        if self.backend not in ("transformers", "mlx"):
            raise ValueError(f"backend must be 'transformers' or 'mlx', got {self.backend!r}")


@dataclasses.dataclass
class GRPOConfig(LearnerConfig):
    """Group Relative Policy Optimization on the live browser env, per-step samples."""

    learning_rate: float = _f(1e-5, "AdamW learning rate.")
    batch_size: int = _f(1, "Groups (task seeds) per optimiser step.")
    env_ids: list[str] = _f(
        ["browser_env/miniwob.click-test-v0"],
        "Envs to train on (any spelling resolve_env_id accepts, e.g. miniwob.click-test); "
        "a group's task is drawn from these.",
    )
    train_seeds: list[int] = _f([0, 1, 2, 3, 4, 5, 6, 7], "Task seeds to draw groups from.")
    num_generations: int = _f(4, "G: rollouts per group (same env id and seed).")
    max_episode_steps: int = _f(6, "Step limit of a training episode.")
    temperature: float = _f(1.0, "Sampling temperature of the rollouts.")
    top_p: float = _f(1.0, "Nucleus sampling of the rollouts.")
    max_new_tokens: int = _f(48, "Completion length limit per step.")
    reward: str = _f(
        "success",
        "Episode reward: success (1 if the task judged it solved, else 0 -- the default: the "
        "env's raw return scores a stall (WAIT until truncation, 0) above a wrong final answer "
        "(negative)) | return (the episode's return as the env gives it).",
    )
    format_reward: float = _f(
        0.0, "Added to the episode reward times the fraction of steps whose output parsed as JSON."
    )
    scale_rewards: bool = _f(
        True, "Divide group advantages by the group's reward std (Dr. GRPO: False)."
    )
    epsilon: float = _f(0.2, "PPO clip range of the importance ratio.")
    beta: float = _f(
        0.0,
        "KL penalty (k3 estimator) to the reference policy -- the policy as training started, "
        "init_adapter included (0: none, as in current TRL defaults).",
    )
    modalities: list[str] = _f(["elements", "text"], "Observation parts the env computes.")
    # how rollouts are played (agents.runners, the engine benchmarks.run and agents.run use)
    runner: str = _f(
        "local",
        "local: one env, one episode after another | vector: `workers` contexts of one browser, "
        "one batched generate per step | ray: `workers` Ray actors (each loads the current "
        "adapter, or the served one with generation=server, before every batch).",
    )
    workers: int = _f(1, "Envs (runner=vector) or Ray actors (runner=ray) playing a batch.")
    envs_per_worker: int = _f(
        1, "runner=ray: envs per actor, as contexts of one browser with a batched policy."
    )
    cpus_per_worker: float = _f(1.0, "runner=ray: CPUs each actor asks Ray for.")
    gpus_per_worker: float = _f(
        0.0,
        "runner=ray: GPUs each actor asks Ray for; > 0 when the actors' model runs on a GPU "
        "(a fraction packs several actors onto one).",
    )
    episode_timeout_s: float | None = _f(
        None,
        "Wall-clock limit per rollout (null: none); past it the episode stops as `timeout` "
        "(runner=ray: an actor stuck past it plus kill_grace_s, 30 s, is killed and "
        "recreated). Timed-out and failed "
        "rollouts are left out of their group's advantages.",
    )
    startup_timeout_s: float | None = _f(
        None,
        "runner=ray: seconds an actor may take to start (schedule, load its model) before "
        "it counts as dead (null: as long as it takes).",
    )
    # where rollouts are generated
    generation: str = _f(
        "local",
        "local: the trainer's own transformers model generates (CPU or GPU, no vLLM). server: "
        "an OpenAI-compatible server with runtime LoRA loading generates -- vLLM started with "
        "--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or serve.openai_server with "
        "write_api_key_env -- and gets the adapter before every batch of rollouts "
        "(learners.lora_server). The loss always uses the local policy's log-probs.",
    )
    server_url: str = _f(
        "http://127.0.0.1:8000/v1", "generation=server: the server's API root (ending in /v1)."
    )
    server_token_env: str | None = _f(
        None,
        "generation=server: environment variable holding the bearer token (vLLM's --api-key; "
        "serve.openai_server's write token). None: no token is sent.",
    )
    server_lora_name: str = _f(
        "grpo-policy", "generation=server: adapters are served as <server_lora_name>-<step>."
    )
    server_adapter_dir: str | None = _f(
        None,
        "generation=server: where adapter versions are written for the server to read (same "
        "machine or shared filesystem); default <output_dir>/served.",
    )
    server_timeout: float = _f(300.0, "generation=server: seconds per request.")

    def __post_init__(self) -> None:
        from browser_env.registration import resolve_env_id

        super().__post_init__()
        self.env_ids = [resolve_env_id(e) for e in self.env_ids]
        _check_steps(self)
        _check_sampling(self)
        if self.num_generations < 2:
            raise ValueError(
                "num_generations (G) must be >= 2: advantages are relative to the group"
            )
        if not self.env_ids or not self.train_seeds:
            raise ValueError("env_ids and train_seeds must not be empty")
        if self.generation not in ("local", "server"):
            raise ValueError(f"generation must be 'local' or 'server', got {self.generation!r}")
        if self.generation == "server" and not self.lora:
            raise ValueError("generation=server serves LoRA adapters: it needs lora=true")
        if self.reward not in ("success", "return"):
            raise ValueError(f"reward must be 'success' or 'return', got {self.reward!r}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")
        if not self.temperature > 0:
            raise ValueError(
                f"temperature must be > 0, got {self.temperature}: rollouts are sampled, and "
                "the loss scores them under softmax(logits / temperature)"
            )


def _check_steps(cfg: SDFTConfig | GRPOConfig) -> None:
    """SDFT and GRPO train ``max_steps`` steps: fewer than one saved an
    untrained adapter marked complete."""
    if cfg.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {cfg.max_steps}")


def _check_sampling(cfg: SDFTConfig | GRPOConfig) -> None:
    """Refuse, as the config is made, the sampling settings the learner's
    :class:`SamplingParams` would refuse at its first step, after the model
    loaded (it builds them from these)."""
    SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)


C = TypeVar("C", bound=LearnerConfig)

LEARNER_CONFIGS: dict[str, type[LearnerConfig]] = {
    "sft": SFTConfig,
    "sdft": SDFTConfig,
    "grpo": GRPOConfig,
}
"""Learner name -> its config dataclass (``conf/learner/<name>.yaml`` builds on it)."""


def register_configs() -> None:
    """Store every learner config in Hydra's ConfigStore as ``learner/<name>_schema``.

    Call before Hydra composes ``conf/{sft,sdft,grpo}.yaml`` (each learner's
    ``main`` does); safe to repeat.
    """
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    store = ConfigStore.instance()
    for name, cls in LEARNER_CONFIGS.items():
        store.store(group="learner", name=f"{name}_schema", node=_schema(cls))
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)


def _schema(cls: type) -> type:
    """``cls`` as a dataclass OmegaConf can hold, with the same fields, defaults and help.

    Two things OmegaConf 2.3 refuses are loosened, nothing else: a union of a
    container and a scalar (``list[str] | str``) becomes ``Any``, and a nested
    frozen dataclass (``PromptConfig``) a mutable copy, so that
    ``learner.prompt.max_history=2`` is an override, not a read-only error.
    :func:`from_mapping` builds the real dataclass and checks it again.
    """
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        spec: dict[str, Any] = {"metadata": f.metadata}
        if dataclasses.is_dataclass(kind):
            kind = _schema(kind)
            spec["default_factory"] = kind
        elif f.default_factory is not dataclasses.MISSING:
            spec["default_factory"] = f.default_factory
        else:
            spec["default"] = f.default
        if _container_union(kind):
            kind = Any
        fields.append((f.name, kind, field(**spec)))
    return dataclasses.make_dataclass(cls.__name__, fields)


def _container_union(kind: Any) -> bool:
    args = typing.get_args(kind) if isinstance(kind, types.UnionType) else ()
    return any(typing.get_origin(a) in (list, dict, tuple) for a in args) and any(
        a not in (type(None),) and typing.get_origin(a) is None for a in args
    )


def from_mapping(cls: type[C], values: Mapping[str, Any]) -> C:
    """``cls(**values)`` that names unknown keys; ``_target_``-style keys are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in values.items() if not str(k).startswith("_")}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}; known: {sorted(names)}")
    return cls(**{k: _plain(v) for k, v in values.items()})


def _plain(value: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ModuleNotFoundError:  # pragma: no cover
        pass
    return value
