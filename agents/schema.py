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
from typing import Any

__all__ = ["check_kinds", "help_field"]


def help_field(default: Any, help: str) -> Any:
    """A dataclass field with ``default`` (a list or dict is copied per instance)
    and its help text in ``metadata["help"]``."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda d=default: type(d)(d), metadata={"help": help}
        )
    return dataclasses.field(default=default, metadata={"help": help})


def check_kinds(cfg: Mapping[str, Any], schema: type) -> None:
    """Raise ``ValueError`` naming the first key of ``cfg`` that ``schema`` (a
    dataclass) does not have, or whose value is not of its field's kind
    (``episodes: abc: Value 'abc' of type 'str' could not be converted to
    Integer``). Keys ``cfg`` leaves out take the schema's defaults."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        message = str(exc).splitlines()[0]
        raise ValueError(f"{key}: {message}" if key else message) from None
