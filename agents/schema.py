"""What the entry points' structured configs share: fields with help text
(:func:`browser_env.cli_help.help_field`, re-exported), and a
check of a config that did not come through Hydra against its dataclass.

An entry point's config dataclass (``agents.run_config.RunConfig``,
``benchmarks.config.BenchmarkConfig``, ...) is registered in Hydra's
ConfigStore and its YAML builds on it, so Hydra checks kinds and keys while
it composes; :func:`check_kinds` gives a config made any other way (a
notebook's, a test's ``OmegaConf.create``) the same check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from browser_env.cli_help import help_field  # the fields --help reads

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["check_kinds", "help_field"]


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
