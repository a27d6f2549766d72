"""The config of ``python -m benchmarks.run``: every key, its default and its help.

:class:`BenchmarkConfig` is registered in Hydra's ConfigStore as
``benchmark_schema``, which ``conf/benchmark.yaml`` builds on through its
defaults list, so a default lives here only, and ``episodes=abc`` is Hydra's
error naming the key before anything runs. ``python -m benchmarks.run --cfg
job`` prints the whole config; :func:`agents.run_config.check_options` checks
what a type cannot say.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import MISSING

from agents.runners.options import RolloutOptions
from agents.schema import help_field

__all__ = ["BenchmarkConfig", "register_config"]


@dataclasses.dataclass
class BenchmarkConfig(RolloutOptions):
    """``python -m benchmarks.run``: an agent rolled over every task of a suite."""

    suite: Any = help_field(
        MISSING, "The tasks, from the suite group (conf/suite; a benchmarks.suites.Suite)."
    )
    agent: Any = help_field(
        MISSING, "The policy, from the agent group: tiny | random | expert | llm (`_target_`)."
    )
    backend: Any = help_field(
        None,
        "The inference backend of agent=llm, from the backend group: "
        "transformers | mlx | openai | tensorrt.",
    )
    episodes: int = help_field(5, "Seeded episodes per task: seed, seed+1, ...")
    seed: int | None = help_field(
        None, "The first seed; null: the suite's (0, or 1000 for miniwob_tiny)."
    )
    max_steps: int | None = help_field(
        None, "Steps per episode at most; null: the suite's, else the registered limit."
    )
    headless: bool = help_field(True, "Run Chromium without a window.")
    record: bool = help_field(True, "Write every episode under <output dir>/episodes.")
    progress: bool = help_field(True, "Show a progress bar.")
    modalities: list[str] | None = help_field(
        None,
        "What observations hold, e.g. [elements, text] for a text-only agent (no screenshots "
        "taken); null: the env's default.",
    )
    env_kwargs: dict[str, Any] = help_field(
        {}, "Extra BrowserEnv arguments for every task: +env_kwargs.modalities=[elements,text]."
    )
    model: str | None = help_field(None, "Overrides backend.model (agent=llm).")
    adapter: str | None = help_field(None, "Overrides backend.adapter (agent=llm).")
    resume: bool = help_field(
        False,
        "With output_dir=: play only the episodes missing from output_dir's results.jsonl "
        "(refused where there is none); episodes= may grow on resume, not shrink.",
    )
    output_dir: str | None = help_field(
        None,
        "Where results.jsonl, results.json, episodes/ go. null: Hydra's run dir "
        "(outputs/benchmarks/<date>/<time>). Set: a single run's Hydra run dir too (.hydra/, "
        "run.log); --multirun: one per job, 'runs/${hydra:job.num}', whose .hydra/ and log "
        "stay in the sweep dir (results.json records the overrides).",
    )
    wandb: bool = help_field(
        True, "Log to wandb under <output dir>/wandb: offline unless WANDB_API_KEY is set."
    )
    wandb_project: str = help_field("browser-rl", "The wandb project.")
    run_name: str | None = help_field(
        None, "The wandb run name; null: <agent>-<suite>-<output dir name>."
    )


def register_config() -> None:
    """Store :class:`BenchmarkConfig` in Hydra's ConfigStore as ``benchmark_schema``
    (``conf/benchmark.yaml``'s base); call before Hydra composes it. Registers the ``--help``
    resolver too (:mod:`browser_env.cli_help`). Safe to repeat."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="benchmark_schema", node=BenchmarkConfig)
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)
