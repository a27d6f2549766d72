"""Checkpoints, crash resume, the evaluation gate and the final adapter directory.

Layout of an output directory, the same for the torch learners and MLX SDFT::

    OUT/                          the adapter: PeftModel.from_pretrained(base, OUT)
      adapter_config.json
      adapter_model.safetensors
      training.json               base model, prompt version, data, hyperparameters, metrics
      metrics.jsonl               one line per logged step
      checkpoints/
        step-000050/              adapter (PEFT layout) + step.json + the learner's state
        best/                     the best checkpoint by held-out success (evaluation gate)
        best.prev/                the best the newest step checkpoint records, while best/
                                  holds a newer one (see :meth:`Checkpoints.restore_best`)

``step.json`` holds the step and the learner state that is plain data (the
gate's record); the rest of the state is in the framework's own files:
``state.pt`` for torch (optimiser, RNG, tensors such as SDFT's EMA teacher),
``optimizer.safetensors`` and ``teacher.safetensors`` for MLX
(:class:`learners.sdft_mlx.MLXCheckpoints`). :class:`Checkpoints` owns the
directory: every checkpoint is written whole under ``<name>.tmp``, fsynced and
renamed into place, so a crash (a power cut too) never leaves a half
checkpoint that resuming would pick, and only the newest ``keep`` step
checkpoints stay.

A run that dies leaves ``training.json`` with ``"status": "running"`` (or
none at all), one stopped with Ctrl+C ``"interrupted"``, and its checkpoints;
running the same command again resumes from the latest one (saying so on
stderr), first dropping the lines ``metrics.jsonl`` holds past that checkpoint,
which the resumed run logs again (:func:`learners.tracking.rewind_metrics`).

A resume is refused, in one line naming the keys that differ, unless it is
the same learner's with the same settings, run-control ones aside
(:mod:`learners.resume_rule` states the rule).

A finished run writes ``"status": "complete"`` next to its
adapter (or, with ``lora=false``, its full model: ``model.safetensors``);
training again into the same directory continues from that output, appends
to ``runs`` and first clears the finished run's ``checkpoints/``: they are not
this run's, and resuming or pruning by step number would mix the two. A
continuing run that dies resumes as any other, and from the same start
(``init_from`` is the directory itself). :func:`run_start` decides, for the
torch learners and MLX SDFT alike.

Any other directory is refused before the model loads
(:func:`check_output_dir`): a path that is a file, or a directory that holds
files but no learner's output (no ``training.json``, no ``checkpoints/``; a
benchmark's run directory, say), whose files a run would mix its own into. An
adapter or model saved by anything else (no ``training.json``: a download, a
copy) is refused too: training into it would overwrite it, so the message
names the option that trains on from it instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agents.prompt import PROMPT_VERSION
from browser_env.atomic import fsync_dir, fsync_tree, write_json_atomic
from learners.resume_rule import check_resume

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch

    from learners.config import LearnerConfig

__all__ = [
    "BEST",
    "STEP_FILE",
    "CheckpointManager",
    "Checkpoints",
    "EvalGate",
    "GateCheckpoints",
    "RunStart",
    "check_output_dir",
    "load_model_weights",
    "run_start",
    "saved_kind",
    "write_training_json",
]

STEP_FILE = "step.json"
"""In every checkpoint: ``{"step", "time", "state"}`` (``state``: plain-data learner state)."""

BEST = "best"
"""The evaluation gate's checkpoint (:class:`EvalGate`)."""
_BEST_PREV = "best.prev"


class Checkpoints:
    """The ``OUT/checkpoints`` directory of a run, whatever framework fills it."""

    def __init__(self, output_dir: str | os.PathLike[str], keep: int = 2) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.keep = max(int(keep), 1)

    def write(
        self,
        step: int,
        fill: Callable[[Path], None],
        *,
        name: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> Path:
        """Checkpoint ``step-<step>`` (or ``name``): ``fill(dir)`` writes the weights and
        framework state into a fresh directory, then ``step.json`` is added and the
        directory renamed into place. Step checkpoints past ``keep`` are pruned.

        A new ``best`` sets the one it replaces aside as ``best.prev`` when that may
        be the best the newest step checkpoint's gate record names (the first best
        replaced since that checkpoint); a step checkpoint, whose record names the
        ``best`` in place, removes ``best.prev``."""
        path = self.root / (name or f"step-{step:06d}")
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        fill(tmp)
        record = {"step": step, "time": time.time(), "state": state or {}}
        (tmp / STEP_FILE).write_text(json.dumps(record) + "\n")
        fsync_tree(tmp)  # whole on disk before the rename makes it a checkpoint
        prev = self.root / _BEST_PREV
        if name == BEST and path.exists() and not prev.exists():
            os.replace(path, prev)
        else:
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        fsync_dir(self.root)
        if name is None:
            shutil.rmtree(prev, ignore_errors=True)
            self._prune()
        return path

    def restore_best(self, step: int | None) -> bool:
        """Make ``best`` the best checkpoint of ``step``: the best that the gate record
        of the checkpoint being resumed names. A crashed run may have saved a newer
        best after that checkpoint; its weights come from steps the resumed run has
        not taken, so it is removed, and the record's best (kept as ``best.prev``) put
        back. Returns whether ``best`` now holds ``step``'s (never when ``step`` is
        ``None``: then no ``best`` is left)."""
        best, prev = self.root / BEST, self.root / _BEST_PREV
        if step is not None and self._step_of(best) != step and self._step_of(prev) == step:
            shutil.rmtree(best, ignore_errors=True)
            os.replace(prev, best)
        shutil.rmtree(prev, ignore_errors=True)
        if step is not None and self._step_of(best) == step:
            return True
        shutil.rmtree(best, ignore_errors=True)
        return False

    def _step_of(self, path: Path) -> int | None:
        return int(self.read_step(path)["step"]) if (path / STEP_FILE).is_file() else None

    def _steps(self) -> list[Path]:
        # a renamed directory is complete by construction; .tmp ones are not
        return sorted(p for p in self.root.glob("step-*") if not p.name.endswith(".tmp"))

    def _prune(self) -> None:
        for old in self._steps()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete step checkpoint, or None."""
        steps = self._steps()
        return steps[-1] if steps else None

    @staticmethod
    def read_step(path: Path) -> dict[str, Any]:
        """``step.json`` of checkpoint ``path``."""
        return json.loads((path / STEP_FILE).read_text())

    def clear(self) -> None:
        """Remove every checkpoint (``best`` too): they belong to a finished run."""
        shutil.rmtree(self.root, ignore_errors=True)


_SAVED = {
    "adapter": ("adapter_config.json",),
    "model": ("model.safetensors", "model.safetensors.index.json"),
}


def saved_kind(output_dir: str | os.PathLike[str]) -> str | None:
    """What the final save wrote into ``output_dir``: ``"adapter"`` (a PEFT adapter),
    ``"model"`` (a full model, ``lora=false``), or ``None`` (nothing yet)."""
    out = Path(output_dir)
    for kind, names in _SAVED.items():
        if any((out / name).is_file() for name in names):
            return kind
    return None


@dataclasses.dataclass(frozen=True)
class RunStart:
    """Where a training run into an output directory starts (see the module doc)."""

    continues: str | None = None
    """The output directory, when the run trains on from the finished output there."""
    kind: str | None = None
    """What ``continues`` holds: ``"adapter"`` or ``"model"`` (:func:`saved_kind`)."""
    resume: Path | None = None
    """The newest checkpoint of this run's own interrupted attempt."""
    stale: bool = False
    """``checkpoints/`` is a finished run's: clear it (:meth:`Checkpoints.clear`) once
    the model is loaded, before the first step."""


_PICK = "a new or empty directory, or a learner's earlier output to continue training it"


def check_output_dir(
    output_dir: str | os.PathLike[str],
    key: str = "learner.output_dir",
    *,
    under: str | os.PathLike[str] | None = None,
) -> None:
    """Raise ``ValueError`` (naming ``key``, the setting it came from) unless a
    learner may write into ``output_dir``: a path not there yet (below
    directories, not files), an empty directory (hidden entries such as
    ``.DS_Store`` aside), or a learner's output (``training.json``,
    ``checkpoints/`` or a saved adapter or model), which :func:`run_start`
    continues or resumes. ``under``: the value of ``key`` when ``output_dir``
    is a dir the command makes below it (the demo's ``out``, the study's
    ``output_dir``), which the message then names."""
    out = Path(output_dir)
    if under is None:
        subject, fix = f"{key}={output_dir}", f"set {key} to {_PICK}"
    else:
        subject = f"{output_dir} (where this command trains, below {key}={under})"
        fix = f"set {key} to a new or empty directory"
    first = next((p for p in (out, *out.parents) if p.exists()), None)
    if first is not None and not first.is_dir():
        what = "is a file" if first == out else f"is below {first}, a file"
        raise ValueError(f"{subject} {what}, not a directory: {fix}")
    if not out.is_dir() or _learner_output(out):
        return
    kind = saved_kind(out)
    if kind is not None:
        instead = fix
        if under is None and key.startswith("learner."):
            start = "learner.init_adapter" if kind == "adapter" else "learner.model"
            instead = f"to train on from it, set {start}={output_dir} and {key} to a new directory"
        raise ValueError(
            f"{subject} holds a saved {kind} that no learner run wrote there (no "
            f"training.json): training into it would overwrite it; {instead}"
        )
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    names = [n for n in names if not n.startswith(".")]
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ValueError(
            f"{subject} holds files no learner wrote ({shown}; no training.json or "
            f"checkpoints/): training into it would mix them with its own; {fix}"
        )


def _learner_output(out: Path) -> bool:
    """A learner's run wrote here: it writes ``training.json`` before its first
    step, and a run older than that left ``checkpoints/``."""
    return (out / "training.json").is_file() or (out / "checkpoints").is_dir()


def run_start(
    output_dir: str | os.PathLike[str] | None,
    *,
    learner: str | None = None,
    config: LearnerConfig | None = None,
) -> RunStart:
    """How a run into ``output_dir`` starts: continue a finished output (its
    checkpoints are stale), or resume an interrupted run's newest checkpoint --
    continuing the output again if that run was continuing it -- or start afresh.
    A directory no run may write into is refused (:func:`check_output_dir`).

    Given the run's ``learner`` and ``config``, a resume of another learner's
    run, or of one whose settings differ but for
    :data:`learners.resume_rule.RESUME_MAY_CHANGE`, is refused with a
    ``ValueError`` that names the keys."""
    if output_dir is None:
        return RunStart()
    check_output_dir(output_dir)
    out = Path(output_dir)
    meta_path = out / "training.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    kind = saved_kind(out)
    if meta.get("status") == "complete" and kind is not None:
        return RunStart(continues=os.fspath(out), kind=kind, stale=True)
    init = meta.get("init_from")
    continuing = kind is not None and init is not None and _same_path(init, out)
    resume = Checkpoints(out).latest()
    if resume is not None:
        check_resume(out, resume, meta, learner, config)
    return RunStart(
        continues=os.fspath(out) if continuing else None,
        kind=kind if continuing else None,
        resume=resume,
    )


def _same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def load_model_weights(model: Any, path: str | os.PathLike[str]) -> None:
    """Put the full model saved at ``path`` (``save_pretrained``) into ``model``, in place."""
    import torch

    dtype = next(model.parameters()).dtype
    loaded = type(model).from_pretrained(os.fspath(path), dtype=dtype)
    with torch.no_grad():
        model.load_state_dict(loaded.state_dict())


class Trainable(Protocol):
    """What :class:`CheckpointManager` needs of a
    :class:`~learners.trainable.TrainableModel` (which imports this module)."""

    model: Any
    backend: Any


class GateCheckpoints(Protocol):
    """What :class:`EvalGate` needs of a framework's checkpoints
    (:class:`CheckpointManager` for torch, ``learners.sdft_mlx.MLXCheckpoints``).
    ``optimizer`` is that framework's optimiser (the gate passes none)."""

    root: Path

    def save(
        self,
        step: int,
        optimizer: Any,
        extra: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Path: ...

    def load_weights(self, path: Path) -> None: ...

    def load_learner_state(self, path: Path) -> dict[str, Any]: ...

    def restore_best(self, step: int | None) -> bool: ...


class CheckpointManager(Checkpoints):
    """Torch checkpoints: save and restore ``(trainable weights, optimiser, step, RNG,
    extra state)`` of a :class:`~learners.trainable.TrainableModel`."""

    def __init__(
        self, output_dir: str | os.PathLike[str], trainable: Trainable, keep: int = 2
    ) -> None:
        super().__init__(output_dir, keep)
        self.trainable = trainable

    def save_weights(self, path: Path) -> None:
        """The model's weights (a LoRA's adapter, or the full model and its
        tokenizer) into the new directory ``path``."""
        model = self.trainable.model
        model.save_pretrained(path)
        if not hasattr(model, "peft_config"):
            self.trainable.backend.tokenizer.save_pretrained(path)

    def save(
        self,
        step: int,
        optimizer: torch.optim.Optimizer | None,
        extra: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Path:
        import torch

        def fill(path: Path) -> None:
            self.save_weights(path)
            state = {
                "step": step,
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "extra": extra or {},
                "time": time.time(),
            }
            torch.save(state, path / "state.pt")

        return self.write(step, fill, name=name)

    def load_weights(self, path: Path) -> None:
        """Put the weights stored in checkpoint ``path`` into the live model."""
        model = self.trainable.model
        if hasattr(model, "peft_config"):
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            weights = load_file(str(path / "adapter_model.safetensors"))
            result = set_peft_model_state_dict(model, weights)
            if getattr(result, "unexpected_keys", None):
                raise RuntimeError(f"{path}: unexpected adapter keys {result.unexpected_keys[:3]}")
        else:
            load_model_weights(model, path)

    def load_learner_state(self, path: Path) -> dict[str, Any]:
        """The learner state (``extra``) saved with checkpoint ``path``."""
        import torch

        state = torch.load(path / "state.pt", weights_only=False)
        return dict(state.get("extra") or {})

    def restore(self, path: Path, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """Load weights, optimiser and RNG from ``path``; returns the saved state."""
        import torch

        self.load_weights(path)
        state = torch.load(path / "state.pt", weights_only=False)
        if optimizer is not None and state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        return state


class EvalGate:
    """Keeps the best checkpoint by held-out success and rolls back to it.

    ``evaluate()`` returns a success rate. After each evaluation: a new best
    is saved as ``checkpoints/best``; a success more than ``tolerance`` below
    the best restores the best weights (the optimiser state is kept: the step
    that hurt is undone, the learning goes on).

    ``learner_state()`` is what else the learner keeps that must move with
    the weights (SDFT's EMA teacher): it is saved with the best checkpoint
    and handed back to ``restore_learner_state`` on a rollback, so a rolled-back
    student never meets a teacher that the bad steps already moved.
    """

    def __init__(
        self,
        checkpoints: GateCheckpoints,
        evaluate: Callable[[], float],
        tolerance: float = 0.0,
        *,
        learner_state: Callable[[], dict[str, Any]] | None = None,
        restore_learner_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.checkpoints = checkpoints
        self.evaluate = evaluate
        self.tolerance = tolerance
        self.learner_state = learner_state
        self.restore_learner_state = restore_learner_state
        self.best: float | None = None
        self.best_step: int | None = None
        self.rollbacks = 0

    def __call__(self, step: int) -> dict[str, float]:
        success = float(self.evaluate())
        metrics = {"eval/success_rate": success}
        if self.best is None or success > self.best:
            self.best, self.best_step = success, step
            extra = self.learner_state() if self.learner_state else None
            self.checkpoints.save(step, None, extra, name=BEST)
        elif success < self.best - self.tolerance:
            best = self.checkpoints.root / BEST
            self.checkpoints.load_weights(best)
            if self.restore_learner_state is not None:
                self.restore_learner_state(self.checkpoints.load_learner_state(best))
            self.rollbacks += 1
            metrics["eval/rolled_back"] = 1.0
        metrics["eval/best_success_rate"] = float(self.best)
        return metrics

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "rollbacks": self.rollbacks}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take the record saved in the checkpoint a run resumes, and make the best
        checkpoint on disk the one it names (:meth:`Checkpoints.restore_best`)."""
        self.best = state.get("best")
        self.best_step = state.get("best_step")
        self.rollbacks = int(state.get("rollbacks", 0))
        if not self.checkpoints.restore_best(self.best_step) and self.best_step is not None:
            warnings.warn(
                f"the best checkpoint of step {self.best_step} that the resumed gate record "
                f"names is not in {self.checkpoints.root}: the gate starts a new record",
                stacklevel=2,
            )
            self.best = self.best_step = None


def write_training_json(
    output_dir: str | os.PathLike[str],
    *,
    learner: str,
    base_model: str,
    config: LearnerConfig | Mapping[str, Any],
    data: dict[str, Any],
    metrics: dict[str, Any],
    status: str,
    init_from: str | None = None,
    steps: int = 0,
    metrics_start: int | None = None,
) -> Path:
    """Write ``training.json``, keeping the ``runs`` of earlier trainings into the same dir.

    ``status``: ``running``, ``interrupted`` (Ctrl+C) or ``complete``;
    ``metrics_start``: the lines ``metrics.jsonl`` held before this run's first
    step (:func:`learners.tracking.rewind_metrics`)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "training.json"
    runs: list[dict[str, Any]] = []
    if path.is_file():
        previous = json.loads(path.read_text())
        runs = list(previous.get("runs", []))
        if previous.get("status") == "complete":
            runs.append(
                {k: previous.get(k) for k in ("learner", "steps", "metrics", "data", "finished_at")}
            )
    record = {
        "learner": learner,
        "status": status,
        "base_model": base_model,
        "prompt_version": PROMPT_VERSION,
        "init_from": init_from,
        "steps": steps,
        "metrics_start": metrics_start,
        "data": data,
        "hyperparameters": dataclasses.asdict(config)
        if dataclasses.is_dataclass(config)
        else dict(config),
        "metrics": metrics,
        "runs": runs,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S") if status == "complete" else None,
    }
    return write_json_atomic(path, record)
