"""What the entry points' structured configs share: fields with help text, and a
check of a config that did not come through Hydra against its dataclass.

An entry point's config dataclass (``agents.run_config.RunConfig``,
``benchmarks.config.BenchmarkConfig``, ...) is registered in Hydra's
ConfigStore and its YAML builds on it, so Hydra checks kinds and keys while
it composes; :func:`check_kinds` gives a config made any other way (a
notebook's, a test's ``OmegaConf.create``) the same check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["check_kinds", "help_field"]


def help_field(default: Any, help: str) -> Any:
    """A dataclass field with ``default`` (a list or dict is copied per instance)
    and its help text in ``metadata["help"]``."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda d=default: type(d)(d), metadata={"help": help}
        )
    return dataclasses.field(default=default, metadata={"help": help})


def check_kinds(cfg: Mapping[str, Any], schema: type) -> DictConfig:
    """``cfg`` over ``schema`` (a dataclass): each value converted to its field's
    kind (``"3"`` to 3, ``"false"`` to False), the keys ``cfg`` leaves out at the
    schema's defaults, so what is checked next is what runs. A config Hydra
    composed over the schema comes back with the same values.

    Raises:
        ValueError: naming the first key that ``schema`` does not have, or whose
            value is not of its field's kind (``episodes: Value 'abc' of type
            'str' could not be converted to Integer``).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        message = str(exc).splitlines()[0]
        raise ValueError(f"{key}: {message}" if key else message) from None
