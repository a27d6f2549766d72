"""What the learners' ``@hydra.main`` entry points share: the composed config
-> the learner's values, with every setting that would be ignored rejected.

* a top-level ``model=NAME`` (as on ``agents.run`` and ``benchmarks.run``)
  sets ``learner.model``; ``model=smollm2-135m`` works on every command;
* ``+backend=NAME`` picks the training backend where the learner has one:
  ``transformers`` always, ``mlx`` for SDFT. ``openai`` and ``tensorrt`` are
  inference-only (no gradients through a server or an engine): an error;
* settings of the backend group that the learner does not read
  (``backend.model``, ``backend.device``, ``backend.adapter``, ...) are an
  error that names the learner field to set instead, rather than silently
  training something else than was asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["learner_values"]

_CONF = Path(__file__).resolve().parents[1] / "conf" / "backend"
#: backend group option -> the learner field that takes the setting instead
_INSTEAD = {"model": "model", "device": "device", "adapter": "init_adapter"}


def learner_values(
    cfg: DictConfig, learner: str, *, trainable: tuple[str, ...] = ("transformers",)
) -> dict[str, Any]:
    """``cfg.learner`` as a plain dict, with ``model`` and ``+backend`` applied.

    ``trainable`` names the backends this learner trains with; the choice is
    returned under ``"backend"`` only when the learner has that field (SDFT).
    """
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg.learner, resolve=True)
    if cfg.get("model") is not None:
        values["model"] = str(cfg.model)
    backend = cfg.get("backend")
    if backend is None:
        return values
    target = str(backend.get("_target_", ""))
    name = next(
        (n for n in ("transformers", "mlx", "openai", "tensorrt") if f".{n}." in target), target
    )
    if name not in trainable:
        raise ValueError(
            f"learners.{learner} cannot train with +backend={name}: it trains with "
            f"{' or '.join('+backend=' + t for t in trainable)} "
            "(openai and tensorrt backends serve a model, they do not give gradients)"
        )
    defaults_file = _CONF / f"{name}.yaml"
    defaults = OmegaConf.load(defaults_file) if defaults_file.is_file() else OmegaConf.create({})
    for key in backend:
        if key == "_target_" or OmegaConf.is_missing(backend, key):
            continue
        if (
            key in defaults
            and not OmegaConf.is_missing(defaults, key)
            and OmegaConf.select(backend, key) == OmegaConf.select(defaults, key)
        ):
            continue  # the group's own default, not a user's setting
        instead = _INSTEAD.get(str(key))
        hint = f"set learner.{instead} (or {instead}= for model)" if instead else "remove it"
        raise ValueError(
            f"learners.{learner} does not read backend.{key}: {hint}; the learner builds its "
            "own backend from the learner config"
        )
    if len(trainable) > 1:
        values["backend"] = name
    return values
