"""The rollout engine's options as the entry points take them.

:class:`RolloutOptions` is the one place their defaults and help live: the
entry points' structured configs (:class:`agents.run_config.RunConfig`,
:class:`benchmarks.config.BenchmarkConfig`) extend it, so ``workers=abc`` is
Hydra's error naming the key, before anything runs. What a type cannot say
(at least one worker, Ray-only options with another runner, finite
resources) is :func:`runner_options`' and :func:`ray_spec_options`' to check;
they also take a plain mapping (a learner's values, a test's dict).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from agents.schema import help_field

__all__ = [
    "RUNNERS",
    "RolloutOptions",
    "check_limit",
    "check_runner_options",
    "is_finite_number",
    "ray_spec_options",
    "runner_options",
]

RUNNERS = ("local", "vector", "ray")


@dataclasses.dataclass
class RolloutOptions:
    """How an entry point's episodes are played (:class:`agents.runners.RolloutEngine`).
    A null option is its default (:func:`runner_options`), e.g. in a sweep
    ``workers=null,4``."""

    runner: str | None = help_field(
        "local",
        "local: one episode after another | vector: `workers` envs as contexts of one shared "
        "browser, one batched policy call per step | ray: `workers` Ray actors.",
    )
    workers: int | None = help_field(1, "Envs (runner=vector) or Ray actors (runner=ray).")
    envs_per_worker: int | None = help_field(
        1, "runner=ray: envs per actor, as contexts of one browser (a batched policy inside)."
    )
    cpus_per_worker: float | None = help_field(1.0, "runner=ray: CPUs each actor asks Ray for.")
    gpus_per_worker: float | None = help_field(
        0.0,
        "runner=ray: GPUs each actor asks Ray for (> 0 for a model on a GPU; 0.25 packs four "
        "actors on a GPU).",
    )
    episode_timeout_s: float | None = help_field(
        None,
        "Per-episode wall-clock limit in seconds; past it the episode is recorded as a timeout. "
        "null: no limit.",
    )
    ship_episodes: bool | None = help_field(
        None,
        "runner=ray: actors send their recorded episodes back to the driver. null: those on "
        "another node than the driver's; false: a shared filesystem.",
    )
    startup_timeout_s: float | None = help_field(
        None,
        "runner=ray: an actor not up this long (its agent built) counts as dead: it is "
        "recreated and its episodes retried once. null: no limit.",
    )


def runner_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``runner``, ``workers``, ``envs_per_worker``, ``cpus_per_worker`` and
    ``gpus_per_worker`` of an entry point's config (``benchmarks.run``,
    ``agents.run``) as :class:`RolloutEngine` takes them, checked
    (:func:`check_runner_options`) so a bad one fails before a model loads or a
    browser starts. Missing or null: ``local``, 1 worker, 1 env per worker,
    1 CPU and no GPU; a 0 is an error, not the default."""

    def option(name: str, default: Any, kind: Any) -> Any:
        value = cfg.get(name)
        if value is None:
            return default
        if kind is not str and isinstance(value, bool):  # int(True) would be 1
            raise ValueError(f"{name} must be a number, got {name}={value!r}")
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"{name} must be {what}, got {name}={value!r}") from None
        if kind is int and converted != value and not isinstance(value, str):
            raise ValueError(f"{name} must be an integer, got {name}={value!r}")  # 1.5 -> 1
        if kind is float and not math.isfinite(converted):  # float("nan") converts
            raise ValueError(f"{name} must be a finite number, got {name}={value!r}")
        return converted

    options = {
        "runner": option("runner", "local", str),
        "workers": option("workers", 1, int),
        "envs_per_worker": option("envs_per_worker", 1, int),
        "cpus_per_worker": option("cpus_per_worker", 1.0, float),
        "gpus_per_worker": option("gpus_per_worker", 0.0, float),
    }
    check_runner_options(**options)
    return options


def is_finite_number(value: Any) -> bool:
    """A finite int or float (not a bool: ``True`` is no duration or count)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_limit(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is None (no limit) or seconds > 0."""
    if value is not None and not (is_finite_number(value) and value > 0):
        raise ValueError(f"{name} must be finite seconds > 0, or None (no limit), got {value!r}")


def ray_spec_options(cfg: Mapping[str, Any], runner: str) -> dict[str, Any]:
    """An entry point's Ray-only :class:`RolloutSpec` keys, as it takes them:

    * ``ship_episodes``: missing or null is None (Ray actors on another node
      than the driver's send their episodes back), ``true`` or ``false``
      forces it;
    * ``startup_timeout_s``: missing or null is None (no limit), else seconds.

    Raises:
        ValueError: a value of the wrong kind, or one set with a runner other
            than ``ray`` (the others play in this process).
    """
    ship, startup = cfg.get("ship_episodes"), cfg.get("startup_timeout_s")
    if ship is not None and not isinstance(ship, bool):
        raise ValueError(f"ship_episodes must be true, false or null, got {ship!r}")
    check_limit("startup_timeout_s", startup)
    if startup is not None:
        startup = float(startup)
    if runner != "ray":
        for name, value, what in (
            ("ship_episodes", ship, "whether Ray actors send their recorded episodes back"),
            ("startup_timeout_s", startup, "how long a Ray actor may take to start"),
        ):
            if value is not None:
                raise ValueError(
                    f"{name} is {what}: runner=ray only (runner={runner} plays in this process)"
                )
    return {"ship_episodes": ship, "startup_timeout_s": startup}


def check_runner_options(
    runner: str,
    *,
    workers: int = 1,
    envs_per_worker: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
) -> None:
    """Raise ``ValueError`` for options :class:`RolloutEngine` cannot play (an
    unknown runner, fewer than one worker or env, Ray's per-actor options with
    another runner); a learner calls it before its model loads."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if envs_per_worker < 1:
        raise ValueError(f"envs_per_worker must be >= 1, got {envs_per_worker}")
    for name, amount in (
        ("cpus_per_worker", cpus_per_worker),
        ("gpus_per_worker", gpus_per_worker),
    ):
        if not (is_finite_number(amount) and amount >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {amount!r}")
    if envs_per_worker > 1 and runner != "ray":
        raise ValueError(
            f"envs_per_worker is the number of envs in each Ray actor: runner=ray only "
            f"(runner={runner} plays workers={workers} envs)"
        )
    if (cpus_per_worker, gpus_per_worker) != (1.0, 0.0) and runner != "ray":
        raise ValueError(
            f"cpus_per_worker and gpus_per_worker are each Ray actor's resources: "
            f"runner=ray only (runner={runner} runs in this process)"
        )
