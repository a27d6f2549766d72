"""Online adaptation: SDFT updates of the acting agent's adapter after its successes.

::

    python -m agents.run agent=tiny env=miniwob.click-button online=sdft episodes=10
    python -m agents.run agent=llm model=M env=miniwob.click-button online=sdft \\
        online.max_updates=3 online.budget_s=600 online.output_dir=runs/online

``agents.run`` (which may not import ``learners``) builds this object from the
``online`` config's ``_target_`` at run time and calls :meth:`OnlineSDFT.update`
with each successful episode it recorded. An update is a short SDFT run
(:mod:`learners.sdft`) on that episode: the teacher is the model with the
agent's own successful action in context, so the student is pulled towards
what worked. The adapter lives in ``output_dir``; every update continues from
it (SDFT's resume-from-finished-adapter rule), is copied to
``output_dir/updates/update-NNNN`` (the checkpoint of that update) and is
loaded into the agent's backend before the next episode. ``online.jsonl``
gets one line per update. Updates stop when ``max_updates`` or ``budget_s``
(wall-clock seconds spent training) is used up; the episodes go on.

The first update starts from the agent's own adapter, if its backend has one.
An ``output_dir`` where an earlier online run finished an update is gone on
from: the agent acts with that adapter from the first episode
(:attr:`OnlineSDFT.goes_on_from`, which ``agents.run`` loads into it), the
updates continue its numbering (``update-0004`` after its ``update-0003``)
and ``online.jsonl`` gets this run's lines after its. ``max_updates`` and
``budget_s`` count this run's updates only.

SDFT loads its own copy of the base model: fine for small models; on a large
one, give the learner a GPU and keep ``steps_per_update`` small.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.agent import LLMAgent

__all__ = ["OnlineSDFT"]

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "training.json")


@dataclasses.dataclass
class OnlineSDFT:
    """Attributes:
    output_dir: the adapter: a new or empty dir, or an earlier online run's to go on
        from; ``null`` -> ``<hydra run dir>/online_adapter``.
    max_updates: updates at most (one per successful episode).
    budget_s: wall-clock seconds of training in all (``None``: no limit).
    steps_per_update: SDFT optimiser steps per update.
    sdft: further :class:`learners.config.SDFTConfig` fields (learning_rate, lora_r, ...).
    """

    output_dir: str | None = None
    max_updates: int = 5
    budget_s: float | None = None
    steps_per_update: int = 4
    sdft: dict[str, Any] = dataclasses.field(default_factory=dict)
    updates: int = dataclasses.field(default=0, init=False)
    spent_s: float = dataclasses.field(default=0.0, init=False)
    first_update: int = dataclasses.field(default=1, init=False)
    """The number this run's first update gets: one past an earlier run's last."""
    goes_on_from: str | None = dataclasses.field(default=None, init=False)
    """The finished adapter in ``output_dir`` this run goes on from, if any."""

    def __post_init__(self) -> None:
        if self.max_updates < 0 or self.steps_per_update < 1:
            raise ValueError("max_updates must be >= 0 and steps_per_update >= 1")
        self.sdft = dict(self.sdft or {})
        if self.output_dir is None:
            from learners.loop import default_output_dir

            self.output_dir = str(Path(default_output_dir("online")).with_name("online_adapter"))
        from learners.checkpoint import check_output_dir, run_start

        check_output_dir(self.output_dir, "online.output_dir")  # before any episode is played
        start = run_start(self.output_dir)
        if start.stale and start.kind == "adapter":  # an earlier run's finished update
            self.goes_on_from = start.continues
        self.first_update = 1 + _last_update(Path(self.output_dir))

    @property
    def exhausted(self) -> bool:
        """True once no further update may run."""
        over_time = self.budget_s is not None and self.spent_s >= self.budget_s
        return self.updates >= self.max_updates or over_time

    def update(
        self, agent: LLMAgent, episode_dir: str | os.PathLike[str] | None
    ) -> dict[str, Any] | None:
        """Train on the successful episode in ``episode_dir`` and load the new
        adapter into ``agent.backend``; ``None`` when the budget is spent or
        there is no episode. Returns what was logged to ``online.jsonl``."""
        if self.exhausted or episode_dir is None:
            return None
        from learners.sdft import run as sdft

        backend = agent.backend
        out = Path(self.output_dir)
        start = time.perf_counter()
        cfg = {
            "learning_rate": 1e-4,
            "batch_size": 2,
            "max_new_tokens": 40,
            "progress": False,
            **self.sdft,
            "model": backend.model_name,
            "episodes": [os.fspath(episode_dir)],
            "output_dir": os.fspath(out),
            # a first update starts from the agent's adapter (or goes on from output_dir's)
            "init_adapter": backend.adapter if self.updates == 0 else None,
            "max_steps": self.steps_per_update,
            "save_steps": 0,
        }
        result = sdft(cfg)
        number = self.first_update + self.updates
        checkpoint = out / "updates" / f"update-{number:04d}"
        _copy_adapter(out, checkpoint)
        self.updates += 1
        backend.load_adapter(out)
        self.spent_s += time.perf_counter() - start
        record = {
            "update": number,
            "episode_dir": os.fspath(episode_dir),
            "checkpoint": os.fspath(checkpoint),
            "seconds": round(time.perf_counter() - start, 3),
            "spent_s": round(self.spent_s, 3),
            "metrics": result["metrics"],
        }
        with (out / "online.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record


def _last_update(out: Path) -> int:
    """The number of the last update an earlier run checkpointed in ``out``
    (``updates/update-NNNN``); 0 for none."""
    numbers = [
        int(p.name.removeprefix("update-"))
        for p in (out / "updates").glob("update-*")
        if p.name.removeprefix("update-").isdigit()
    ]
    return max(numbers, default=0)


def _copy_adapter(out: Path, checkpoint: Path) -> None:
    """Copy ``out``'s adapter files into ``checkpoint`` (a new directory) atomically,
    as :class:`learners.checkpoint.Checkpoints` saves: written beside it and synced,
    then renamed, so a crash leaves no half checkpoint."""
    from browser_env.atomic import fsync_dir, fsync_tree

    partial = checkpoint.with_name(f".{checkpoint.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in _ADAPTER_FILES:
        if (out / name).is_file():
            shutil.copy2(out / name, partial / name)
    fsync_tree(partial)  # whole on disk before the rename makes it the checkpoint
    os.replace(partial, checkpoint)
    fsync_dir(checkpoint.parent)
