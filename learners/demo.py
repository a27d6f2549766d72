""" "It must actually learn": the offline pipeline, end to end on CPU.

::

    python -m learners.demo out=outputs/learn_demo            # defaults: DemoConfig
    python -m learners.demo tasks=[click-test,click-button] train_seeds=40 sft_steps=300
    python -m learners.demo out=/tmp/tiny export=agents/pretrained/tiny-miniwob  # the embedded policy

1. records scripted-expert episodes (``agents.experts``, labelled scripted)
   on a MiniWoB++ subset, train seeds ``0..N-1``;
2. evaluates the tiny model on held-out seeds (``1000..``), greedy: the
   student (the inference prompt) and the teacher (the same prompt plus the
   expert's action for the current step as a demonstration);
3. SFT of all weights (the tiny model starts random, so this stage makes the
   policy; a LoRA on frozen random weights barely moved: loss 4.5 -> 4.3 in
   140 steps where full fine-tuning reached 0.05) with
   demonstration-conditioned copies (``demo_fraction``) and counterfactual
   copies whose demonstration acts on another element and is the target
   (``counterfactual_fraction``), so the model learns to use an in-context
   demonstration; evaluates again. The result is a small model directory
   (``OUT/sft``);
4. SDFT with a LoRA adapter on that model (teacher = the model with the
   demonstration in context); evaluates again;
5. prints before/after success rates, writes ``results.json`` and
   ``learning_curve.png``; with ``export=DIR`` copies the best student
   (the SFT model, or it with the SDFT adapter merged if that did better) to
   ``DIR`` as a plain Hugging Face model directory whose ``training.json``
   records the command, the arguments and the measured figures -- but only
   when that student beats the untrained model on the held-out seeds, and
   only into a new or empty ``DIR`` or over an earlier export
   (:mod:`learners.demo_export`).

A second run into the same ``out`` reuses the expert episodes recorded there
and records only the missing ones (a task's seed with no complete episode:
a crashed run's), and reuses a finished SFT or SDFT stage trained with the
same settings on the same episodes (:func:`learners.demo_plan.plan_training`; a finished stage
it cannot reuse is refused, never trained on top of); episodes there that this run would not train on (other
tasks, seeds past ``train_seeds``, another agent's) are refused, naming them,
since the learners would train on every episode in ``out/episodes``
(:func:`learners.demo_plan.plan_recording`). What the demo refuses -- an unknown task, one the
scripted expert has no policy for, a setting that would fail later (a count below 1, a
model shape that does not build or run, what SFT or SDFT would refuse of its stage's
settings), an ``out`` or ``export`` it may not write
(an ``out`` holding anything but what a demo writes there,
:func:`learners.demo_plan.check_out`),
an ``out`` another run is writing -- it refuses before recording anything.
An export that cannot be written when the run ends (its ``DIR`` changed
meanwhile) is one line on stderr and exit status 1; the run's results stay.

The config is ``conf/demo.yaml`` over :class:`DemoConfig`; :func:`run` is the
plain function behind the ``@hydra.main`` wrapper, and tests call it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_env.atomic import write_bytes_atomic, write_json_atomic
from browser_env.cli_help import help_field as _f
from browser_env.registration import env_id
from learners.demo_export import check_export_dest, export_policy, export_stage
from learners.demo_plan import (
    check_out,
    check_tasks,
    plan_recording,
    plan_training,
    scan_episodes,
)

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from agents.prompt import Prompt

__all__ = [
    "TASKS",
    "DemoConfig",
    "check_out",
    "command_line",
    "evaluate",
    "export_policy",
    "main",
    "plan_recording",
    "plan_training",
    "record_expert_episodes",
    "register_config",
    "run",
]

#: The default subset (suite ``miniwob_tiny``): tasks the scripted experts solve
#: where a random agent mostly fails (20-45% in 6 steps) and the goal says which
#: element to act on (an order, a tab number, an ordinal, a button label).
TASKS = (
    "click-button-sequence",
    "click-collapsible",
    "click-tab",
    "focus-text-2",
    "click-dialog-2",
)


def record_expert_episodes(
    root: Path, tasks: list[str], seeds: Sequence[int], max_steps: int
) -> dict[str, float]:
    """Roll the scripted expert over ``tasks`` x ``seeds``, recording episodes under
    ``root``; returns each task's success rate over them."""
    import gymnasium as gym

    import browser_env  # noqa: F401
    from agents.experts import ScriptedExpert
    from browser_env.episodes import AgentInfo
    from browser_env.wrappers import RecordEpisode

    success: dict[str, float] = {}
    for task in tasks:
        env = gym.make(
            env_id(task),
            max_episode_steps=max_steps,
            modalities=("elements", "text"),
        )
        env = RecordEpisode(
            env, root, agent=AgentInfo(name="expert"), source="scripted", screenshots=False
        )
        expert, wins = ScriptedExpert(), 0
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            expert.reset(obs["goal"], seed=seed)
            done, info = False, {}
            while not done:
                action, _ = expert.act(obs)
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
            wins += bool(info.get("success"))
        env.close()
        success[task] = wins / len(seeds)
    return success


def _agent_class() -> type:
    from agents.agent import LLMAgent
    from agents.experts import ScriptedExpert

    class DemonstrationAgent(LLMAgent):
        """The teacher at evaluation: each prompt carries the expert's action for this step."""

        def reset(self, goal: str = "", *, seed: int | None = None) -> None:
            super().reset(goal, seed=seed)
            self.expert = ScriptedExpert()
            self.expert.reset(goal, seed=seed)

        def build_prompt(self, obs: Mapping[str, Any], demonstration: str | None = None) -> Prompt:
            action, _ = self.expert.act(obs)
            data = {k: v for k, v in action.to_dict().items() if k != "reasoning"}
            return super().build_prompt(obs, demonstration=json.dumps(data, ensure_ascii=False))

    return DemonstrationAgent


def evaluate(
    model: str,
    adapter: str | None,
    tasks: list[str],
    seeds: list[int],
    max_steps: int,
    *,
    teacher: bool,
) -> dict[str, Any]:
    import gymnasium as gym

    import browser_env  # noqa: F401
    from agents.agent import LLMAgent, PromptConfig
    from agents.backends.base import SamplingParams
    from agents.backends.transformers import TransformersBackend
    from learners.rollout import play

    backend = TransformersBackend(model, adapter=adapter, device="cpu")
    cls = _agent_class() if teacher else LLMAgent
    agent = cls(backend, prompt=PromptConfig(), sampling=SamplingParams(max_new_tokens=40))
    per_task = {}
    for task in tasks:
        env = gym.make(
            env_id(task),
            max_episode_steps=max_steps,
            modalities=("elements", "text"),
        )
        results = [play(env, agent, s) for s in seeds]
        env.close()
        per_task[task] = sum(r.success for r in results) / len(results)
    backend.close()
    return {"success_rate": sum(per_task.values()) / len(per_task), "per_task": per_task}


@dataclasses.dataclass
class DemoConfig:
    """What ``python -m learners.demo`` takes (``key=value`` overrides of ``conf/demo.yaml``).

    The defaults live here only: the dataclass is registered with Hydra as
    the structured config ``demo_schema`` that the YAML builds on.
    """

    out: str = _f("outputs/learn_demo", "The run's directory: episodes, models, results.")
    tasks: list[str] = _f(list(TASKS), "MiniWoB++ tasks (names without miniwob. or -v0).")
    train_seeds: int = _f(150, "Expert episodes recorded per task, on seeds 0..N-1.")
    eval_seeds: int = _f(20, "Held-out evaluation episodes per task, seeds 1000..1000+N-1.")
    max_steps: int = _f(6, "Steps per episode at most (recording and evaluation).")
    sft_steps: int = _f(1200, "Optimiser steps of SFT (all weights of the tiny model).")
    sdft_steps: int = _f(30, "Optimiser steps of SDFT (a LoRA over the SFT model).")
    demo_fraction: float = _f(
        1.0, "SFT samples trained with the demonstration in context (SFTConfig.demo_fraction)."
    )
    counterfactual_fraction: float = _f(
        1.0,
        "Expected counterfactual demonstration copies per SFT sample "
        "(SFTConfig.counterfactual_fraction).",
    )
    port_jitter: bool = _f(
        True,
        "Random ports in SFT prompts' local URLs; false keeps the server's port "
        "(SFTConfig.port_jitter).",
    )
    seed: int = _f(0, "Seed of SFT and SDFT.")
    export: str | None = _f(
        None, "Copy the best student model here as a plain model dir (step 5); null: no copy."
    )
    lora_r: int = _f(16, "LoRA rank of the SDFT adapter.")
    sft_lr: float = _f(2e-3, "SFT learning rate.")
    sdft_lr: float = _f(1e-4, "SDFT learning rate.")
    threads: int = _f(2, "Torch CPU threads (lower it on a busy machine).")
    batch_size: int = _f(8, "SFT batch size.")
    hidden_size: int = _f(128, "The tiny model's width.")
    intermediate_size: int = _f(256, "The tiny model's MLP width.")
    layers: int = _f(2, "The tiny model's depth.")
    heads: int = _f(4, "The tiny model's attention heads (2 key-value heads).")


def register_config() -> None:
    """Register :class:`DemoConfig` as Hydra's ``demo_schema`` (``conf/demo.yaml``'s base); safe to repeat."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="demo_schema", node=DemoConfig)
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)


def command_line(cfg: DemoConfig) -> str:
    """The command that reproduces ``cfg``: every key that differs from its default."""
    defaults = DemoConfig()
    overrides = [
        f"{f.name}={_override_value(getattr(cfg, f.name))}"
        for f in dataclasses.fields(cfg)
        if getattr(cfg, f.name) != getattr(defaults, f.name)
    ]
    return " ".join(["python -m learners.demo", *overrides])


def _override_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def run(cfg: DemoConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The whole pipeline (steps 1-5 above) for ``cfg``; returns the report
    written to ``OUT/results.json``.

    What it will not run with is :class:`browser_env.refusal.Refused` (a
    ``ValueError``), before anything is recorded or trained; ``out`` is held
    (:func:`browser_env.dirlock.hold_dir`) while the demo writes there."""
    from browser_env.dirlock import hold_dir
    from browser_env.refusal import refusing
    from learners.checkpoint import check_output_dir

    if not isinstance(cfg, DemoConfig):
        cfg = DemoConfig(**dict(cfg))
    out = Path(cfg.out)
    with contextlib.ExitStack() as held:
        with refusing():  # what would fail later, before the recording
            check_tasks(list(cfg.tasks))
            _check_settings(cfg, out)
            check_out(out, cfg.export)
            for stage in ("sft", "sdft"):  # what the learners would refuse
                check_output_dir(out / stage, "out", under=cfg.out)
            if cfg.export:
                check_export_dest(Path(cfg.export), out)
            held.enter_context(hold_dir(out, "out"))  # one demo at a time writes there
            todo = plan_recording(out / "episodes", list(cfg.tasks), range(cfg.train_seeds))
        return _pipeline(cfg, out, todo)


#: the settings that count something: each must be >= 1. At 0, ``threads`` and
#: ``heads`` fail in torch and transformers, ``sdft_steps`` once SDFT starts (after the
#: recording and SFT), ``sft_steps`` would train an epoch (SFT's ``max_steps <= 0``), and
#: ``layers``, ``intermediate_size`` or ``lora_r`` leave no model or adapter to train
_COUNTS = (
    "train_seeds",
    "eval_seeds",
    "max_steps",
    "sft_steps",
    "sdft_steps",
    "threads",
    "batch_size",
    "hidden_size",
    "intermediate_size",
    "layers",
    "heads",
    "lora_r",
)
#: the tiny model's key-value heads (grouped-query attention): ``heads`` is a multiple
_KV_HEADS = 2


def _check_settings(cfg: DemoConfig, out: Path) -> None:
    """Raise ``ValueError`` for a setting the pipeline would fail on only later
    (in torch, in the tiny model's build or first forward, in a learner after
    the recording): a count below 1, a model shape that does not build or run,
    a stage's learner setting (:func:`_stages`, built as that learner's config)."""
    from agents.tiny.config import TinyConfig
    from learners.config import SDFTConfig, SFTConfig, from_mapping

    for name in _COUNTS:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.hidden_size % cfg.heads:
        raise ValueError(
            f"hidden_size must be divisible by heads, got hidden_size={cfg.hidden_size} "
            f"and heads={cfg.heads}"
        )
    if cfg.heads % _KV_HEADS:
        raise ValueError(
            f"heads must be a multiple of {_KV_HEADS} (the tiny model's key-value heads), "
            f"got {cfg.heads}"
        )
    if (cfg.hidden_size // cfg.heads) % 2:  # rotary embeddings turn pairs of dimensions
        raise ValueError(
            f"hidden_size / heads (the head dimension) must be even, got {cfg.hidden_size} / "
            f"{cfg.heads} = {cfg.hidden_size // cfg.heads}"
        )
    TinyConfig(kind="text", **_tiny_shape(cfg))  # whatever else the build refuses
    for name in ("sft_lr", "sdft_lr"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    stages = _stages(cfg, out)
    for stage, cls in (("sft", SFTConfig), ("sdft", SDFTConfig)):
        try:
            from_mapping(cls, stages[stage])
        except ValueError as exc:
            raise ValueError(f"the {stage} stage would refuse its settings: {exc}") from None


def _tiny_shape(cfg: DemoConfig) -> dict[str, int]:
    """The shape of the demo's random starting model: ``agents.tiny.TinyConfig`` fields."""
    return {
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": _KV_HEADS,
    }


def _stages(cfg: DemoConfig, out: Path) -> dict[str, dict[str, Any]]:
    """Each stage's learner settings (``learners.sft`` and ``learners.sdft``
    ``run`` values) but the SFT stage's ``model``, the tiny model
    :func:`_pipeline` builds."""
    common = {
        "episodes": [str(out / "episodes")],
        "save_steps": 0,
        "wandb": True,
        "progress": True,
        "seed": cfg.seed,
    }
    return {
        "sft": {
            **common,
            "lora": False,
            "output_dir": str(out / "sft"),
            "batch_size": cfg.batch_size,
            "max_steps": cfg.sft_steps,
            "learning_rate": cfg.sft_lr,
            "demo_fraction": cfg.demo_fraction,
            "counterfactual_fraction": cfg.counterfactual_fraction,
            "port_jitter": cfg.port_jitter,
        },
        "sdft": {
            **common,
            "model": str(out / "sft"),  # the SFT policy: a small model dir; SDFT puts a LoRA on it
            "lora_r": cfg.lora_r,
            "lora_alpha": 2 * cfg.lora_r,
            "output_dir": str(out / "sdft"),
            "batch_size": 4,
            "max_steps": cfg.sdft_steps,
            "learning_rate": cfg.sdft_lr,
            "max_new_tokens": 40,
            "temperature": 1.0,
        },
    }


def _pipeline(cfg: DemoConfig, out: Path, todo: dict[str, list[int]]) -> dict[str, Any]:
    """Steps 1-5 of a checked ``cfg``; ``todo``: :func:`plan_recording`'s."""
    import torch

    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from agents.tiny import tiny_model_path
    from browser_env.refusal import refusing
    from learners.sdft import run as sdft
    from learners.sft import run as sft

    tasks = list(cfg.tasks)
    episodes = out / "episodes"
    sft_dir, sdft_dir = out / "sft", out / "sdft"
    # The random starting point, built offline and cached (agents.tiny).
    model = str(tiny_model_path("text", **_tiny_shape(cfg)))
    held_out = list(range(1000, 1000 + cfg.eval_seeds))
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "tasks": tasks,
        "args": dataclasses.asdict(cfg),
        "model": model,
        "held_out_seeds": held_out,
    }
    stages = _stages(cfg, out)
    stages["sft"] = {"model": model, **stages["sft"]}
    with refusing():  # before the recording, as run's checks
        reused = plan_training(stages, new_episodes=any(todo.values()), episodes=episodes)
    for task, seeds in todo.items():
        if seeds:
            record_expert_episodes(episodes, [task], seeds, cfg.max_steps)
    recorded, _ = scan_episodes(episodes, tasks, range(cfg.train_seeds))
    report["expert_success"] = {t: sum(s.values()) / max(len(s), 1) for t, s in recorded.items()}
    new = sum(len(seeds) for seeds in todo.values())
    print(
        f"[demo] expert episodes in {episodes}: {new} recorded, "
        f"{len(tasks) * cfg.train_seeds - new} reused ({time.perf_counter() - t0:.0f}s)",
        flush=True,
    )

    def both(adapter: str | None) -> dict[str, Any]:
        return {
            "student": evaluate(model, adapter, tasks, held_out, cfg.max_steps, teacher=False),
            "teacher": evaluate(model, adapter, tasks, held_out, cfg.max_steps, teacher=True),
        }

    def train(stage: str, learner: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        if reused[stage] is None:
            return learner(stages[stage])
        where = stages[stage]["output_dir"]
        print(f"[demo] {stage}: reusing the finished run in {where} (same settings and episodes)")
        return {"output_dir": where, "history": reused[stage]}

    report["before"] = both(None)
    print(f"[demo] before: {_fmt(report['before'])}", flush=True)
    sft_result = train("sft", sft)
    model = str(sft_dir)
    report["sft"] = both(None)
    print(f"[demo] after SFT: {_fmt(report['sft'])}", flush=True)
    sdft_result = train("sdft", sdft)
    report["sdft"] = both(str(sdft_dir))
    print(f"[demo] after SDFT: {_fmt(report['sdft'])}", flush=True)
    report["seconds"] = time.perf_counter() - t0
    report["curves"] = {"sft": sft_result["history"], "sdft": sdft_result["history"]}
    write_json_atomic(out / "results.json", report)
    _plot(report, out / "learning_curve.png")
    print(_table(report))
    if cfg.export:
        report["export"] = _export(cfg, out, report)
        write_json_atomic(out / "results.json", report)
    return report


def _export(cfg: DemoConfig, out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Export the run's best student to ``cfg.export``, or say loudly (stderr)
    why not: it did no better than the untrained model. Returns what
    ``results.json`` records of it."""

    def not_exported(why: str) -> None:
        models = f"the trained models are in {out / 'sft'} and {out / 'sdft'}"
        print(f"[demo] NOT EXPORTED: {why} ({models})", file=sys.stderr, flush=True)

    stage = export_stage(report)
    if stage is None:
        best = max(report[s]["student"]["success_rate"] for s in ("sft", "sdft"))
        before = report["before"]["student"]["success_rate"]
        reason = (
            f"held-out student success {best:.2f} after training is no better than "
            f"{before:.2f} before it"
        )
        not_exported(f"{reason}; export={cfg.export} is left as it was")
        return {"path": None, "stage": None, "reason": reason}
    try:
        check_export_dest(Path(cfg.export), out)  # again: DIR may have changed meanwhile
    except ValueError as e:
        not_exported(str(e))
        return {"path": None, "stage": stage, "error": str(e)}
    path = export_policy(out, Path(cfg.export), report, command_line(cfg))
    print(f"[demo] exported the policy ({stage}) to {path}")
    return {"path": str(path), "stage": stage}


def _fmt(stage: dict[str, Any]) -> str:
    return f"student {stage['student']['success_rate']:.2f}, teacher {stage['teacher']['success_rate']:.2f}"


def _table(report: dict[str, Any]) -> str:
    lines = ["stage    student  teacher(demo in context)"]
    for stage in ("before", "sft", "sdft"):
        s = report[stage]
        lines.append(
            f"{stage:<8} {s['student']['success_rate']:>7.2f}  {s['teacher']['success_rate']:>7.2f}"
        )
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    sft = report["curves"]["sft"]
    axes[0].plot([r["step"] for r in sft], [r["loss"] for r in sft])
    axes[0].set(title="SFT loss", xlabel="step", yscale="log")
    sd = report["curves"]["sdft"]
    axes[1].plot([r["step"] for r in sd], [r["kl"] for r in sd], label="KL(student||teacher)")
    axes[1].plot([r["step"] for r in sd], [r["agreement"] for r in sd], label="agreement")
    axes[1].set(title="SDFT", xlabel="step")
    axes[1].legend()
    stages = ["before", "sft", "sdft"]
    x = range(len(stages))
    axes[2].bar(
        [i - 0.2 for i in x],
        [report[s]["student"]["success_rate"] for s in stages],
        0.4,
        label="student",
    )
    axes[2].bar(
        [i + 0.2 for i in x],
        [report[s]["teacher"]["success_rate"] for s in stages],
        0.4,
        label="teacher",
    )
    axes[2].set(title="held-out success", xticks=list(x), xticklabels=stages, ylim=(0, 1))
    axes[2].legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, png.getvalue())


def hydra_entry(cfg: DictConfig) -> dict[str, Any]:
    """The ``@hydra.main`` body: ``cfg`` composed from ``conf/demo.yaml``; a
    refusal is one line on stderr, exit status 2; an export that could not
    be written when the run ended, exit status 1 (the run's results kept)."""
    from omegaconf import OmegaConf

    from browser_env.refusal import exit_on_interrupt, exit_on_refusal

    note = (
        f"[demo] stopped by Ctrl-C: the same command goes on from what out={cfg.out} holds "
        "(its episodes and finished stages)"
    )
    with exit_on_refusal(), exit_on_interrupt(note):
        report = run(OmegaConf.to_container(cfg, resolve=True))
    if (report.get("export") or {}).get("error"):
        sys.exit(1)  # asked to export and could not: said on stderr, results kept
    return report


def main() -> None:
    import hydra

    register_config()
    hydra.main(version_base="1.3", config_path="../conf", config_name="demo")(hydra_entry)()


if __name__ == "__main__":
    main()
