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
   records the command, the arguments and the measured figures.

The config is ``conf/demo.yaml`` over :class:`DemoConfig`; :func:`run` is the
plain function behind the ``@hydra.main`` wrapper, and tests call it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_env.cli_help import help_field as _f
from browser_env.registration import env_id

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from agents.prompt import Prompt

__all__ = [
    "TASKS",
    "DemoConfig",
    "command_line",
    "evaluate",
    "export_policy",
    "main",
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
    root: Path, tasks: list[str], seeds: range, max_steps: int
) -> dict[str, float]:
    """Roll the scripted expert over ``tasks`` x ``seeds``, recording episodes under ``root``."""
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
    written to ``OUT/results.json``."""
    if not isinstance(cfg, DemoConfig):
        cfg = DemoConfig(**dict(cfg))
    import torch

    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from agents.tiny import tiny_model_path
    from browser_env.refusal import refusing
    from learners.checkpoint import check_output_dir
    from learners.sdft import run as sdft
    from learners.sft import run as sft

    tasks = list(cfg.tasks)
    out = Path(cfg.out)
    episodes = out / "episodes"
    sft_dir, sdft_dir = out / "sft", out / "sdft"
    with refusing():  # what the learners would refuse, before the recording
        for stage in (sft_dir, sdft_dir):
            check_output_dir(stage, "out", under=cfg.out)
    # The random starting point, built offline and cached (agents.tiny).
    model = str(
        tiny_model_path(
            "text",
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=2,
        )
    )
    held_out = list(range(1000, 1000 + cfg.eval_seeds))
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "tasks": tasks,
        "args": dataclasses.asdict(cfg),
        "model": model,
        "held_out_seeds": held_out,
    }
    if not any(episodes.glob("*/episode.json")):
        report["expert_success"] = record_expert_episodes(
            episodes, tasks, range(cfg.train_seeds), cfg.max_steps
        )
    print(f"[demo] expert episodes in {episodes} ({time.perf_counter() - t0:.0f}s)", flush=True)

    def both(adapter: str | None) -> dict[str, Any]:
        return {
            "student": evaluate(model, adapter, tasks, held_out, cfg.max_steps, teacher=False),
            "teacher": evaluate(model, adapter, tasks, held_out, cfg.max_steps, teacher=True),
        }

    report["before"] = both(None)
    print(f"[demo] before: {_fmt(report['before'])}", flush=True)
    common = {
        "episodes": [str(episodes)],
        "save_steps": 0,
        "wandb": True,
        "progress": True,
        "seed": cfg.seed,
    }
    sft_result = sft(
        {
            **common,
            "model": model,
            "lora": False,
            "output_dir": str(sft_dir),
            "batch_size": cfg.batch_size,
            "max_steps": cfg.sft_steps,
            "learning_rate": cfg.sft_lr,
            "demo_fraction": cfg.demo_fraction,
            "counterfactual_fraction": cfg.counterfactual_fraction,
            "port_jitter": cfg.port_jitter,
        }
    )
    model = str(sft_dir)  # the SFT policy: a small model dir; SDFT puts a LoRA on it
    report["sft"] = both(None)
    print(f"[demo] after SFT: {_fmt(report['sft'])}", flush=True)
    sdft_result = sdft(
        {
            **common,
            "model": model,
            "lora_r": cfg.lora_r,
            "lora_alpha": 2 * cfg.lora_r,
            "output_dir": str(sdft_dir),
            "batch_size": 4,
            "max_steps": cfg.sdft_steps,
            "learning_rate": cfg.sdft_lr,
            "max_new_tokens": 40,
            "temperature": 1.0,
        }
    )
    report["sdft"] = both(str(sdft_dir))
    print(f"[demo] after SDFT: {_fmt(report['sdft'])}", flush=True)
    report["seconds"] = time.perf_counter() - t0
    report["curves"] = {"sft": sft_result["history"], "sdft": sdft_result["history"]}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out / "learning_curve.png")
    print(_table(report))
    if cfg.export:
        path = export_policy(out, Path(cfg.export), report, command_line(cfg))
        print(f"[demo] exported the policy to {path}")
    return report


def export_policy(out: Path, dest: Path, report: dict[str, Any], command: str) -> Path:
    """Write the best student of the run in ``out`` to ``dest`` (replacing it).

    The SFT model is taken as is, or with the SDFT adapter merged into it when
    SDFT raised held-out student success. ``dest/training.json`` holds the
    command, the stage, the SFT ``training.json`` and the measured figures.
    """
    stage = "sft"
    if report["sdft"]["student"]["success_rate"] > report["sft"]["student"]["success_rate"]:
        stage = "sdft"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if stage == "sft":
        for f in (out / "sft").iterdir():
            if f.is_file() and f.name not in ("metrics.jsonl", "training.json"):
                shutil.copy2(f, dest / f.name)
    else:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = AutoModelForCausalLM.from_pretrained(out / "sft")
        merged = PeftModel.from_pretrained(base, out / "sdft").merge_and_unload()
        merged.save_pretrained(dest)
        AutoTokenizer.from_pretrained(out / "sft").save_pretrained(dest)
    meta = {
        "produced_by": command,
        "stage": stage,
        "tasks": report["tasks"],
        "args": report["args"],
        "held_out_seeds": report["held_out_seeds"],
        "success": {s: report[s] for s in ("before", "sft", "sdft")},
        "expert_success": report.get("expert_success"),
        "sft_training": json.loads((out / "sft" / "training.json").read_text()),
    }
    if stage == "sdft":
        meta["sdft_training"] = json.loads((out / "sdft" / "training.json").read_text())
    (dest / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    return dest


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
    fig.savefig(path, dpi=100)


def hydra_entry(cfg: DictConfig) -> dict[str, Any]:
    """The ``@hydra.main`` body: ``cfg`` composed from ``conf/demo.yaml``; a
    refusal is one line on stderr, exit status 2."""
    from omegaconf import OmegaConf

    from browser_env.refusal import exit_on_refusal

    with exit_on_refusal():
        return run(OmegaConf.to_container(cfg, resolve=True))


def main() -> None:
    import hydra

    register_config()
    hydra.main(version_base="1.3", config_path="../conf", config_name="demo")(hydra_entry)()


if __name__ == "__main__":
    main()
