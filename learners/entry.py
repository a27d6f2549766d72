"""What the learners' ``@hydra.main`` entry points share: the composed config
-> the learner's values, with every setting that would be ignored rejected.

* a top-level ``model=NAME`` (as on ``agents.run`` and ``benchmarks.run``)
  sets ``learner.model``; ``model=smollm2-135m`` works on every command; a
  model that is no preset, no local path and no hub id that could load is an
  error here, not the hub's ``OSError`` after the setup
  (:func:`agents.models.check_model`, also importable from here);
* ``+backend=NAME`` picks the training backend where the learner has one:
  ``transformers`` always, ``mlx`` for SDFT. ``openai`` and ``tensorrt`` are
  inference-only (no gradients through a server or an engine): an error;
* settings of the backend group that the learner does not read
  (``backend.model``, ``backend.device``, ``backend.adapter``, ...) are an
  error that names the learner field to set instead, rather than silently
  training something else than was asked.

Each learner's ``hydra_entry`` checks these and its ``run`` its own settings,
the model and the data inside :func:`browser_env.refusal.refusing`, so on the
command line a refused config is one line, ``error: <why>``, and exit status
2; what fails once training has started keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.backend_group import backend_name, changed_settings
from agents.models import check_model

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["check_model", "learner_values", "say_where"]

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

    _check_top_level(cfg)
    values = OmegaConf.to_container(cfg.learner, resolve=True)
    top_level = cfg.get("model") is not None
    if top_level:
        values["model"] = str(cfg.model)
    check_model(
        str(values["model"]), "model" if top_level else "learner.model", "learner.init_adapter"
    )
    backend = cfg.get("backend")
    if backend is None:
        return _checked(values, learner)
    name = backend_name(backend)
    if name not in trainable:
        raise ValueError(
            f"learners.{learner} cannot train with +backend={name}: it trains with "
            f"{' or '.join('+backend=' + t for t in trainable)} "
            "(openai and tensorrt backends serve a model, they do not give gradients)"
        )
    changed = changed_settings(backend)
    if changed:
        key = changed[0]
        instead = _INSTEAD.get(key)
        hint = f"set learner.{instead} (or {instead}= for model)" if instead else "remove it"
        raise ValueError(
            f"learners.{learner} does not read backend.{key}: {hint}; the learner builds its "
            "own backend from the learner config"
        )
    if len(trainable) > 1:
        values["backend"] = name
    return _checked(values, learner)


#: top-level keys that set the learner field of the same name (conf/{sft,sdft,grpo}.yaml)
_TOP_LEVEL = ("model", "runner", "workers")


def _check_top_level(cfg: DictConfig) -> None:
    """A top-level ``workers=abc`` is held to ``learner.workers``'s type, as
    ``learner.workers=abc`` is by the structured config, before any model loads."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    for key in _TOP_LEVEL:
        if cfg.get(key) is None or key not in cfg.learner:
            continue
        try:
            OmegaConf.merge(cfg.learner, {key: cfg[key]})
        except ValidationError as exc:
            raise ValueError(
                f"{key}={cfg[key]!r} (it sets learner.{key}): {str(exc).splitlines()[0]}"
            ) from None


def say_where(result: dict[str, Any]) -> dict[str, Any]:
    """Print where a finished learner run put what it trained (``adapter: DIR``
    or ``model: DIR``), the command line's last line; return ``result``."""
    from learners.checkpoint import saved_kind

    out = result.get("output_dir")
    if out:
        print(f"{saved_kind(out) or 'output'}: {out}")
    return result


#: the data settings only SFT and SDFT read (GRPO plays its own episodes)
_DATA_KEYS = ("episodes", "success_only", "tasks", "sources")


def _checked(values: dict[str, Any], learner: str) -> dict[str, Any]:
    """``values``, once the episode or run directories SFT and SDFT read are
    known to exist (the check would otherwise come after the model loads), and
    GRPO is known not to be given data settings it would not read."""
    if learner not in ("sft", "sdft"):
        from learners.config import GRPOConfig

        defaults = GRPOConfig()
        ignored = [k for k in _DATA_KEYS if k in values and values[k] != getattr(defaults, k)]
        if ignored:
            raise ValueError(
                f"{learner} plays its own episodes and does not read "
                f"{', '.join(f'learner.{k}' for k in ignored)} (SFT and SDFT do): "
                "remove it, or set learner.env_ids=[...]"
            )
        return values
    episodes = values.get("episodes") or []
    if not episodes:
        raise ValueError("no episodes given: set learner.episodes=[DIR, ...]")
    missing = [str(e) for e in episodes if not Path(e).expanduser().exists()]
    if missing:
        raise ValueError(f"learner.episodes: no such episode or run directory: {missing}")
    files = [str(e) for e in episodes if not Path(e).expanduser().is_dir()]
    if files:
        raise ValueError(
            f"learner.episodes takes directories (an episode's, or a run's), not files: {files}"
        )
    return values
