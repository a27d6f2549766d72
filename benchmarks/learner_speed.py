"""Step time and peak memory of our learners against TRL's trainers, in one run.

::

    python -m benchmarks.learner_speed                            # tiny-random, all arms
    python -m benchmarks.learner_speed model=smollm2-135m warmup_steps=2 steps=5 batch_size=4
    python -m benchmarks.learner_speed algorithms=[sft] episodes=runs/expert/episodes

For each algorithm of ``algorithms`` and each implementation of
``implementations`` (``ours``, ``trl``) that exists (:data:`benchmarks.learner_arms.ARMS`:
SFT against ``trl.SFTTrainer``, the GRPO update against ``trl.GRPOTrainer``,
SDFT ours only), it trains a fresh LoRA on the same model, float32, the same
LoRA targets/r/alpha, batch and token ids for ``warmup_steps + steps``
optimiser steps, and times the last ``steps`` from outside the trainer
(:mod:`benchmarks.learner_clock`). Arms run interleaved (ours, then TRL, per
algorithm), each in a fresh process when ``isolate=true`` (the default: peak
memory is then the arm's own and no arm inherits another's allocator state);
``isolate=false`` runs them in this process (faster to start: the test uses
it).

Prints a table (median seconds per step and its range, completion tokens per
step, peak memory and what the timed steps added to it, the norm of the
trained ``lora_B`` weights -- zero would mean no update -- and the ratios
ours/TRL) and writes into the run's output dir ``results.json`` (every step's
time, the setup, the load average before and after) and ``learner_speed.png``.

The data are recorded episodes (``episodes=DIR``) or, by default, synthetic
one-step click episodes written with the real episode writer
(``data.samples`` pages of ``data.elements`` buttons and ``data.text_words``
words of text: the prompt length). Wall-clock figures depend on what else the
machine runs; the ratios, measured interleaved, are what carries over.

The config is ``conf/learner_speed.yaml`` over :class:`LearnerSpeedConfig`
(every key's default and help), so ``steps=abc`` or a misspelt key is
Hydra's error naming the key; ``python -m benchmarks.learner_speed --cfg
job`` prints the whole config. :func:`check` says what a type cannot.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from agents.schema import help_field
from browser_env.rundir import register_resolvers

__all__ = [
    "LearnerSpeedConfig",
    "LoraSettings",
    "SyntheticData",
    "check",
    "format_table",
    "main",
    "plot",
    "register_config",
    "run",
]


@dataclasses.dataclass
class LoraSettings:
    """The fresh LoRA every arm trains, ours and TRL's alike."""

    r: int = help_field(8, "LoRA rank r.")
    alpha: int = help_field(16, "LoRA alpha (scale = alpha / r).")
    dropout: float = help_field(0.0, "LoRA dropout.")
    # Any: OmegaConf 2.3 holds no union of a list and a string
    target_modules: Any = help_field(
        "all-linear", "Modules to adapt: 'all-linear' or a list such as [q_proj, v_proj]."
    )


@dataclasses.dataclass
class SyntheticData:
    """The synthetic one-step click pages trained on when ``episodes`` is null."""

    samples: int = help_field(16, "Pages (one-step episodes) written.")
    elements: int = help_field(12, "Buttons per page.")
    text_words: int = help_field(200, "Words of page text (the prompt length).")


@dataclasses.dataclass
class LearnerSpeedConfig:
    """``python -m benchmarks.learner_speed``: our learners against TRL's trainers."""

    model: str = help_field("tiny-random", "Preset (agents.models), local dir or hub id.")
    algorithms: list[str] = help_field(["sft", "sdft", "grpo"], "What to train: sft | sdft | grpo.")
    implementations: list[str] = help_field(
        ["ours", "trl"],
        "Whose trainer: ours | trl; pairs without an arm (sdft/trl) are listed, not run.",
    )
    batch_size: int = help_field(
        4,
        "Sequences per step: prompts (SFT, SDFT), completions (GRPO: batch_size / "
        "num_generations groups).",
    )
    num_generations: int = help_field(2, "GRPO: completions per group (G), >= 2.")
    warmup_steps: int = help_field(2, "Untimed steps first (>= 1).")
    steps: int = help_field(5, "Timed steps (>= 1).")
    learning_rate: float = help_field(
        1.0e-4, "Constant, AdamW, no weight decay, grad-norm clip 1.0."
    )
    lora: LoraSettings = dataclasses.field(
        default_factory=LoraSettings,
        metadata={"help": "The fresh LoRA every arm trains (float32, the same targets)."},
    )
    max_new_tokens: int = help_field(24, "SDFT's on-policy completions: length limit.")
    seed: int = help_field(0, "Seed of the LoRA initialisation, data order and sampling.")
    device: str = help_field("cpu", "cpu | cuda.")
    threads: int | None = help_field(None, "Torch threads in each arm; null: torch's default.")
    isolate: bool = help_field(
        True, "Each arm in a fresh process (its own peak memory); false: all in this one."
    )
    episodes: str | None = help_field(
        None, "Recorded episodes (an episode or run dir) to train on; null: synthetic click pages."
    )
    data: SyntheticData = dataclasses.field(
        default_factory=SyntheticData,
        metadata={"help": "The synthetic pages (episodes=null)."},
    )
    prompt: dict[str, Any] = help_field(
        {}, "agents.agent.PromptConfig fields, as the learners take them."
    )
    plot: bool = help_field(True, "Write learner_speed.png.")
    progress: bool = help_field(True, "Show a progress bar.")
    output_dir: str | None = help_field(
        None, "null: Hydra's run dir (outputs/learner_speed/...); set: Hydra's run dir too."
    )


def register_config() -> None:
    """Store :class:`LearnerSpeedConfig` in Hydra's ConfigStore as
    ``learner_speed_schema`` (``conf/learner_speed.yaml``'s base); call before
    Hydra composes it. Registers the ``--help``
    resolver too (:mod:`browser_env.cli_help`). Safe to repeat."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="learner_speed_schema", node=LearnerSpeedConfig)
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)


def _output_dir(cfg: DictConfig) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    from browser_env.rundir import run_dir

    return run_dir(Path("outputs") / "learner_speed")


def _call(isolate: bool) -> Callable[..., Any]:
    """``call(fn, *args)``: in a fresh spawned process when ``isolate``, else here."""
    if not isolate:
        return lambda fn, *args: fn(*args)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(fn, *args).result()

    return call


def check(cfg: DictConfig) -> None:
    """Raise ``ValueError`` for a setting no arm could run with, naming it, before
    anything is written or a model loads."""
    from agents.models import check_model
    from benchmarks.learner_arms import ARMS

    unknown = sorted(set(cfg.algorithms) - {a for a, _ in ARMS})
    if unknown:
        raise ValueError(f"unknown algorithms {unknown}; known: sft, sdft, grpo")
    unknown = sorted(set(cfg.implementations) - {i for _, i in ARMS})
    if unknown:
        raise ValueError(f"unknown implementations {unknown}; known: ours, trl")
    if int(cfg.warmup_steps) < 1 or int(cfg.steps) < 1:
        raise ValueError("warmup_steps and steps must be >= 1")
    if int(cfg.num_generations) < 2:
        raise ValueError("num_generations must be >= 2 (GRPO's advantages are group-relative)")
    if "grpo" in cfg.algorithms and int(cfg.batch_size) % int(cfg.num_generations):
        raise ValueError(
            f"batch_size ({cfg.batch_size}) must be a multiple of num_generations "
            f"({cfg.num_generations}): GRPO's batch is whole groups"
        )
    check_model(str(cfg.model), adapter_option=None)  # it trains a fresh adapter
    if cfg.get("episodes") and not Path(cfg.episodes).expanduser().exists():
        raise ValueError(f"episodes={cfg.episodes}: no such episode or run directory")


def _setup(cfg: DictConfig, out: Path) -> Any:
    """The :class:`benchmarks.learner_arms.Setup` of ``cfg`` (:func:`check` first);
    writes the synthetic episodes when ``cfg.episodes`` is not set."""
    from benchmarks.learner_arms import Setup, write_episodes

    targets = cfg.lora.target_modules
    if cfg.get("episodes"):
        episodes = Path(cfg.episodes)
    else:
        episodes = write_episodes(
            out / "episodes",
            int(cfg.data.samples),
            elements=int(cfg.data.elements),
            text_words=int(cfg.data.text_words),
        )
    return Setup(
        model=str(cfg.model),
        episodes=str(episodes),
        device=str(cfg.device),
        batch_size=int(cfg.batch_size),
        num_generations=int(cfg.num_generations),
        warmup_steps=int(cfg.warmup_steps),
        steps=int(cfg.steps),
        learning_rate=float(cfg.learning_rate),
        lora_r=int(cfg.lora.r),
        lora_alpha=int(cfg.lora.alpha),
        lora_dropout=float(cfg.lora.dropout),
        lora_target_modules=OmegaConf.to_container(targets)
        if OmegaConf.is_config(targets)
        else str(targets),
        max_new_tokens=int(cfg.max_new_tokens),
        seed=int(cfg.seed),
        prompt=OmegaConf.to_container(cfg.prompt, resolve=True) if cfg.get("prompt") else {},
        threads=cfg.get("threads"),
        tokens=str(out / "tokens.json"),
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Measure every arm; print the table; return the ``results.json`` content."""
    from tqdm.auto import tqdm

    from benchmarks.learner_arms import ARMS, prepare
    from benchmarks.learner_clock import measure
    from benchmarks.report import write_json_atomic

    check(cfg)
    out = _output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    setup = _setup(cfg, out)
    call = _call(bool(cfg.isolate))
    load_before = os.getloadavg()
    data_info = call(prepare, setup)
    arms = [(a, i) for a in cfg.algorithms for i in cfg.implementations if (a, i) in ARMS]
    results: dict[str, Any] = {
        "schema": 1,
        "model": setup.model,
        "data": {**data_info, "episodes": setup.episodes},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "load_average": {"before": list(load_before), "after": None},
        "cpu_count": os.cpu_count(),
        "rows": [],
        "ratios": {},
        "complete": False,
        "not_compared": [
            f"{a}/{i}" for a in cfg.algorithms for i in cfg.implementations if (a, i) not in ARMS
        ],
    }
    for algorithm, implementation in tqdm(arms, desc="learner speed", disable=not cfg.progress):
        results["rows"].append(call(measure, algorithm, implementation, dataclasses.asdict(setup)))
        results["ratios"] = _ratios(results["rows"])
        results["load_average"]["after"] = list(os.getloadavg())
        write_json_atomic(out / "results.json", results)  # what is measured survives a kill
    results["complete"] = True
    write_json_atomic(out / "results.json", results)
    print(format_table(results))
    picture = plot(results, out / "learner_speed.png") if cfg.get("plot", True) else None
    print(f"\nresults: {out / 'results.json'}" + (f"\nplot:    {picture}" if picture else ""))
    return results


def _ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """algorithm -> ours/TRL ratios of median step time and of peak memory."""
    by = {(r["algorithm"], r["implementation"]): r for r in rows}
    out = {}
    for (algorithm, implementation), ours in by.items():
        theirs = by.get((algorithm, "trl"))
        if implementation != "ours" or theirs is None:
            continue
        out[algorithm] = {
            "time": ours["median_s"] / theirs["median_s"],
            "cpu": ours["median_cpu_s"] / theirs["median_cpu_s"],
            "peak_mib": ours["peak_mib"] / theirs["peak_mib"],
            "step_mib": ours["step_mib"] / theirs["step_mib"] if theirs["step_mib"] > 0 else None,
        }
    return out


def format_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table, with the data and the load average under it."""
    header = (
        "| algorithm | implementation | s/step (median) | min-max | CPU s/step | "
        "completion tok/step | peak MiB | step MiB | LoRA B norm | ours/TRL time | "
        "ours/TRL CPU | ours/TRL peak |"
    )
    lines = [header, "|" + "---|" * 12]
    ratios = results["ratios"]
    for r in results["rows"]:
        ratio = ratios.get(r["algorithm"]) if r["implementation"] == "ours" else None
        time_ratio = f"{ratio['time']:.2f}" if ratio else ""
        cpu_ratio = f"{ratio['cpu']:.2f}" if ratio else ""
        peak_ratio = f"{ratio['peak_mib']:.2f}" if ratio else ""
        lines.append(
            f"| {r['algorithm']} | {r['implementation']} | {r['median_s']:.3f} "
            f"| {min(r['step_s']):.3f}-{max(r['step_s']):.3f} | {r['median_cpu_s']:.3f} "
            f"| {r['completion_tokens_per_step']:.0f} | {r['peak_mib']:.0f} | {r['step_mib']:.0f} "
            f"| {r['lora_b_norm']:.3g} "
            f"| {time_ratio} | {cpu_ratio} | {peak_ratio} |"
        )
    data = results["data"]
    first = results["rows"][0]["setup"] if results["rows"] else {}
    before = results["load_average"]["before"]
    after = results["load_average"]["after"] or before
    lines += [
        "",
        f"model {results['model']}; {data['samples']} samples, prompt {data['prompt_tokens']:.0f} "
        f"tokens, completion {data['completion_tokens']:.0f} tokens (mean); batch "
        f"{first.get('batch_size')} sequences (GRPO: groups of {first.get('num_generations')}); "
        f"{first.get('warmup_steps')} warm-up + {first.get('steps')} timed steps; "
        f"torch threads {results['rows'][0]['torch_threads'] if results['rows'] else '?'}",
        f"load average (1/5/15 min) before {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f}, "
        f"after {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f}; {results['cpu_count']} CPUs",
    ]
    if results["not_compared"]:
        lines.append(f"no counterpart: {', '.join(results['not_compared'])}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Bars of median s/step and peak MiB per algorithm, ours beside TRL; ``None``
    without matplotlib."""
    try:  # a bare Figure, not pyplot: leaves the caller's backend alone
        from matplotlib.figure import Figure
    except ImportError:
        return None
    rows = results["rows"]
    algorithms = list(dict.fromkeys(r["algorithm"] for r in rows))
    implementations = list(dict.fromkeys(r["implementation"] for r in rows))
    by = {(r["algorithm"], r["implementation"]): r for r in rows}
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(implementations), 1)
    colours = {"ours": "#4C72B0", "trl": "#DD8452"}
    for ax, key, label in (
        (axes[0], "median_s", "s / optimiser step (median)"),
        (axes[1], "peak_mib", "peak memory (MiB)"),
    ):
        for k, implementation in enumerate(implementations):
            xs = [i + (k - (len(implementations) - 1) / 2) * width for i in range(len(algorithms))]
            values = [
                by[(a, implementation)][key] if (a, implementation) in by else 0.0
                for a in algorithms
            ]
            ax.bar(xs, values, width, label=implementation, color=colours.get(implementation))
        ax.set_xticks(range(len(algorithms)), algorithms)
        ax.set_ylabel(label)
    axes[0].legend()
    fig.suptitle(f"{results['model']}: our learners vs TRL")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


register_resolvers()  # output_dir= is Hydra's run dir too (conf: hydra.run.dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="learner_speed")
def _hydra_main(cfg: DictConfig) -> None:
    from browser_env.refusal import exit_on_refusal, refusing

    with exit_on_refusal():
        with refusing():  # a setting, not a bug: its message, no traceback
            check(cfg)
        run(cfg)


def main() -> None:
    register_config()  # conf/learner_speed.yaml builds on learner_speed_schema
    _hydra_main()


if __name__ == "__main__":
    main()
