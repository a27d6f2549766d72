"""The ``backend`` config group (``conf/backend/<name>.yaml``) as the commands read it.

A composed config always holds the group's node (``agents.run`` and
``benchmarks.run`` default to ``backend: transformers``; the learners take
``+backend=NAME``), but not every agent or learner reads it: ``agent=tiny``
builds its own backend (``agent.backend``), ``agent=random`` none, and a
learner builds one from its own config. What a user set on a node nobody
reads would be silently ignored, so the commands refuse it, naming it. This
module says which backend a node selects and which of its settings differ
from that option's own file: those a user set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "backend_name", "changed_settings"]

_CONF = Path(__file__).resolve().parents[1] / "conf" / "backend"
BACKENDS = ("transformers", "mlx", "openai", "tensorrt")
#: the option the commands' configs (conf/run.yaml, conf/benchmark.yaml) select
DEFAULT_BACKEND = "transformers"


def backend_name(node: DictConfig) -> str:
    """``transformers`` for ``agents.backends.transformers.TransformersBackend``
    (one of :data:`BACKENDS`); another ``_target_`` as it is written."""
    target = str(node.get("_target_", ""))
    return next((n for n in BACKENDS if f".{n}." in target), target)


def changed_settings(node: DictConfig) -> list[str]:
    """The keys of ``node`` (not ``_target_``) whose value differs from the one
    in its option's ``conf/backend/<name>.yaml``, or that the file lacks; a
    key left ``???`` counts as unset."""
    from omegaconf import OmegaConf

    path = _CONF / f"{backend_name(node)}.yaml"
    defaults = OmegaConf.load(path) if path.is_file() else OmegaConf.create({})
    changed = []
    for key in node:
        if key == "_target_" or OmegaConf.is_missing(node, key):
            continue
        if (
            key in defaults
            and not OmegaConf.is_missing(defaults, key)
            and OmegaConf.select(node, str(key)) == OmegaConf.select(defaults, str(key))
        ):
            continue
        changed.append(str(key))
    return changed
