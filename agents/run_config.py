"""The config of ``python -m agents.run``: every key, its default and its help.

:class:`RunConfig` is registered in Hydra's ConfigStore as ``run_schema``,
which ``conf/run.yaml`` builds on through its defaults list, so a default
lives here only, and ``episodes=abc`` or ``episdoes=3`` is Hydra's error
naming the key before anything runs. ``python -m agents.run --cfg job``
prints the whole config.

:func:`check_options` is what a type cannot say (``episodes >= 1``, a known
modality), for this entry point and ``benchmarks.run``'s
(:class:`benchmarks.config.BenchmarkConfig`); it also takes a config that
did not come through Hydra (a test's, a notebook's) and checks its kinds
against the schema.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

if TYPE_CHECKING:
    from omegaconf import DictConfig

from agents.runners.options import RolloutOptions, check_limit
from agents.schema import check_kinds, help_field

__all__ = ["RunConfig", "check_options", "register_config"]


@dataclasses.dataclass
class RunConfig(RolloutOptions):
    """``python -m agents.run``: one agent on one task, or ``episodes`` of them."""

    agent: Any = help_field(
        MISSING, "The policy, from the agent group: random | tiny | llm | expert (`_target_`)."
    )
    backend: Any = help_field(
        None,
        "The inference backend of agent=llm, from the backend group: "
        "transformers | mlx | openai | tensorrt.",
    )
    online: Any = help_field(
        None,
        "online=sdft: update the agent's adapter after each successful episode (conf/online).",
    )
    env: str | None = help_field(
        "miniwob.click-test",
        "miniwob.<task>, open, or a full id such as browser_env/miniwob.click-test-v0.",
    )
    url: str | None = help_field(
        None, "With url (and goal), runs the open-ended task browser_env/open-v0 instead of env."
    )
    goal: str | None = help_field(None, "The goal of a url=... task.")
    answer: str | None = help_field(None, "The expected FINISH answer of a url=... task, if any.")
    model: str | None = help_field(None, "Overrides backend.model when set.")
    adapter: str | None = help_field(
        None, "Overrides backend.adapter when set (a PEFT LoRA directory)."
    )
    max_steps: int = help_field(15, "Steps per episode at most.")
    headless: bool = help_field(True, "Run Chromium without a window.")
    seed: int | None = help_field(
        0,
        "The first episode's seed (then seed+1, ...); null: drawn at random (an unseeded reset "
        "for one episode; with more, a random first seed, printed).",
    )
    episodes: int = help_field(
        1, "Episodes on seeds seed, seed+1, ... (more than one plays through the rollout engine)."
    )
    record: bool = help_field(True, "Write each episode (browser_env.wrappers.RecordEpisode).")
    episodes_dir: str | None = help_field(
        None, "Where episodes are written; null: <hydra run dir>/episodes."
    )
    env_kwargs: dict[str, Any] = help_field(
        {},
        "Extra BrowserEnv arguments, one key each on the command line: "
        "+env_kwargs.modalities=[elements,text].",
    )


def register_config() -> None:
    """Store :class:`RunConfig` in Hydra's ConfigStore as ``run_schema``
    (``conf/run.yaml``'s base); call before Hydra composes it. Registers the ``--help``
    resolver too (:mod:`browser_env.cli_help`). Safe to repeat."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)


def _check_url_task(cfg: Mapping[str, Any]) -> None:
    """``url``, ``goal`` and ``answer`` make an open-v0 task, together: a goal
    without its page was ignored (the task's own goal played), and so was a
    page without a goal, or ``env=open`` with no page at all (about:blank)."""
    from browser_env.registration import resolve_env_id, task_name
    from browser_env.tasks.open import check_start_url

    url = cfg.get("url")
    if url is None:
        extra = [key for key in ("goal", "answer") if cfg.get(key) is not None]
        if extra:
            given = " and ".join(f"{key}=" for key in extra)
            verb = "belongs" if len(extra) == 1 else "belong"
            raise ValueError(
                f"{given} {verb} to a url=... task; env={cfg.get('env')} has its own goal: "
                f"add url=... (the page to start on) or drop {given}"
            )
        env = cfg.get("env")
        if env and task_name(resolve_env_id(str(env))) == "open":
            raise ValueError(f"env={env} needs url=... and goal=...: the page and what to do there")
        return
    check_start_url(str(url))
    if cfg.get("goal") is None:
        raise ValueError(f"url={url} needs goal=...: what the agent is to do there")


_LEAST = {"episodes": 1, "max_steps": 1, "seed": 0}
"""Integer options -> their least value."""


def check_options(cfg: Mapping[str, Any], schema: type = RunConfig) -> DictConfig:
    """``cfg`` (an entry point's top level, ``schema`` its dataclass) as it will
    run (:func:`agents.schema.check_kinds`: of its fields' kinds, defaults
    filled in), once nothing in it stops it, before a model loads or a
    browser starts.

    Raises:
        ValueError: naming the first option that cannot be played: a value of
            the wrong kind (``episodes=abc``) or an unknown key, when ``cfg``
            did not come through Hydra with the schema; ``episodes=0``,
            ``seed=-1``, ``modalities=[nope]``, a timeout that is not seconds
            > 0. The rollout engine's options (``runner``, ``workers``, ...)
            are :func:`agents.runners.runner_options`', which the entry points
            call next.
    """
    cfg = check_kinds(cfg, schema)
    if "url" in cfg:
        _check_url_task(cfg)
    for name, least in _LEAST.items():
        value = cfg.get(name)
        if value is not None and value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {name}={value!r}")
    check_limit("episode_timeout_s", cfg.get("episode_timeout_s"))
    modalities = cfg.get("modalities")  # a list of strings by now (the schema's kind)
    if modalities is not None:
        from browser_env.observation import MODALITIES

        if not all(m in MODALITIES for m in modalities):
            raise ValueError(
                f"modalities must be a list of {', '.join(MODALITIES)} "
                f"(e.g. modalities=[elements,text]), got modalities={modalities!r}"
            )
    return cfg
