"""Which settings a resumed learner run may change: the rest must match.

The resume takes the checkpoint's state as it is (the optimiser's learning
rate and weight decay with it, the LoRA's shape, the data order its seed
draws), so it is refused, in one line naming the keys that differ, unless the
run is the same learner's (``training.json``'s ``learner``) with the same
settings (its ``hyperparameters``) but for those in :data:`RESUME_MAY_CHANGE`:
how long it trains (``max_steps``, SFT's ``num_epochs``), how often it saves,
evaluates and logs and how many checkpoints it keeps, the gate's
``rollback_tolerance``, wandb and the progress bar, and where GRPO's rollouts
are played and generated (its runner and server settings). Every other
setting shapes the saved state or what the steps still to come would have
done: the base model and ``init_adapter``, the LoRA (``lora``, rank, alpha,
dropout, targets), the optimiser (learning rate, weight decay, clipping),
``batch_size``, ``seed``, ``device`` (where the saved tensors are), the data
and the prompt, the held-out set the gate's record was measured on, and
each algorithm's own settings (SDFT's ``backend`` among them). A key the
saved record lacks (a run of an older version) is not compared. The check
needs the run's settings: :func:`learners.checkpoint.run_start` makes it
when :class:`learners.loop.TrainLoop` or MLX SDFT (``learners.sdft_mlx``)
pass them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from learners.config import LearnerConfig

__all__ = ["RESUME_MAY_CHANGE", "check_resume"]

RESUME_MAY_CHANGE: frozenset[str] = frozenset(
    {
        "output_dir",  # the same directory, however it is spelled
        "max_steps",
        "num_epochs",  # SFT's max_steps when that is <= 0
        "save_steps",
        "save_total_limit",
        "eval_steps",
        "rollback_tolerance",
        "logging_steps",
        "wandb",
        "wandb_project",
        "run_name",
        "progress",
        # GRPO: where and how fast its rollouts are played and generated, not what they are
        "runner",
        "workers",
        "envs_per_worker",
        "cpus_per_worker",
        "gpus_per_worker",
        "episode_timeout_s",
        "startup_timeout_s",
        "generation",
        "server_url",
        "server_token_env",
        "server_lora_name",
        "server_adapter_dir",
        "server_timeout",
    }
)
"""The learner settings a resumed run may change (see the module doc); any
other that differs from the interrupted run's refuses the resume."""


def check_resume(
    out: Path,
    resume: Path,
    meta: Mapping[str, Any],
    learner: str | None,
    config: LearnerConfig | None,
) -> None:
    """Refuse (``ValueError``) resuming ``resume``, the checkpoint of the run
    ``meta`` (its ``training.json``) records, as ``learner`` with ``config``
    when that run was another learner's or its settings differ from
    ``config``'s but for :data:`RESUME_MAY_CHANGE`."""
    saved_learner = meta.get("learner")
    run = f"{saved_learner} run" if saved_learner else "run"
    subject = f"learner.output_dir={out} holds an interrupted {run} ({resume.name})"
    instead = (
        f"or set learner.output_dir to a new directory (or delete {out / 'checkpoints'} "
        "to give up its steps)"
    )
    if learner is not None and saved_learner is not None and saved_learner != learner:
        raise ValueError(
            f"{subject}, which {learner} cannot resume: resume it with learners.{saved_learner}, "
            f"{instead}"
        )
    saved = meta.get("hyperparameters")
    if config is None or not isinstance(saved, dict):
        return
    # as training.json wrote them (write_json_atomic): lists, not tuples, str of the rest
    now = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    changed = [
        diff
        for key in sorted((saved.keys() & now.keys()) - RESUME_MAY_CHANGE)
        for diff in _differences(f"learner.{key}", saved[key], now[key])
    ]
    if changed:
        raise ValueError(
            f"{subject} with other settings: {'; '.join(changed)}. Resume it with the same "
            "settings (only run-control ones such as learner.max_steps may change), "
            f"{instead}"
        )


def _differences(key: str, saved: Any, now: Any) -> list[str]:
    """``"KEY=SAVED there, NOW now"`` for ``key`` (one per differing sub-key of a
    mapping such as ``prompt``), or nothing when they are equal."""
    if saved == now:
        return []
    if isinstance(saved, dict) and isinstance(now, dict):
        return [
            diff
            for sub in sorted(saved.keys() | now.keys())
            for diff in _differences(f"{key}.{sub}", saved.get(sub), now.get(sub))
        ]
    return [f"{key}={_shown(saved)} there, {_shown(now)} now"]


def _shown(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
