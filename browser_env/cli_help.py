"""``--help`` for the Hydra command lines: this command's groups and every key
with its help text, instead of Hydra's list of every group under ``conf/``.

Hydra's default ``--help`` lists all the config groups of the search path
(``agent``, ``learner``, ``suite``, ... for every app, whether it reads them
or not) and the composed YAML, without the help text that the entry points'
config dataclasses carry (``metadata["help"]``, set by :func:`help_field`). Hydra's help template is an OmegaConf
string, resolved when ``--help`` prints it, so one resolver renders the
rest from the composed config: the groups this command composes (Hydra's
``hydra.runtime.choices``), each with its options and this command's
choice, and each key of a structured node (the dataclass behind it) with
its value for this command and its help. ``conf/hydra/help/browser_rl.yaml``
holds the template; each app's YAML picks it (``override hydra/help:
browser_rl``) and names itself in ``hydra.help.app_name``.

The resolver's arguments name groups this command fixes (``learner`` for
``python -m learners.sft``): they are left out of the list of choices.
:func:`register` must run before ``@hydra.main`` (beside the schemas'
registration): without it ``--help`` fails on an unknown resolver.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

__all__ = ["RESOLVER", "help_field", "register", "render"]

#: the resolver's name in the help template (``${browser_rl_help:}``)
RESOLVER = "browser_rl_help"
_WIDTH = 88


def help_field(default: Any, help: str) -> Any:
    """A dataclass field with ``default`` (a list or dict is copied per instance)
    and its help text in ``metadata["help"]``, which ``--help`` shows."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda d=default: type(d)(d), metadata={"help": help}
        )
    return dataclasses.field(default=default, metadata={"help": help})


def register() -> None:
    """Register the ``browser_rl_help`` resolver with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve, use_cache=False)


def _resolve(*fixed: str, _root_: Any) -> str:
    # Hydra fills the template with string.Template: a literal $ is $$
    return render(_root_, fixed=fixed).replace("$", "$$")


def render(cfg: Any, *, fixed: tuple[str, ...] | list[str] = ()) -> str:
    """The help text for the composed ``cfg`` (a Hydra config with its
    ``hydra`` node): the groups (less ``fixed``) and the keys."""
    parts = []
    groups = _groups(cfg, fixed)
    if groups:
        parts.append("== Config groups (group=option; * marks this command's choice) ==")
        parts.extend(groups)
        parts.append("")
    keys = _keys(cfg, "") or _root_keys(cfg)
    if keys:
        parts.append("== Keys (key=value; the values shown are this command's) ==")
        parts.extend(keys)
    return "\n".join(parts).rstrip("\n")


def _groups(cfg: Any, fixed: tuple[str, ...] | list[str]) -> list[str]:
    from omegaconf import OmegaConf

    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}
    lines = []
    for group, choice in sorted(choices.items()):
        if group.startswith("hydra/") or group in fixed or group.endswith("_schema"):
            continue
        options = [o for o in _options(group) if not o.endswith("_schema")]
        marked = [f"*{o}*" if o == choice else o for o in options]
        if choice is None:
            marked.append("*null*")
        lines.append(f"{group}: {', '.join(marked)}")
    return lines


def _options(group: str) -> list[str]:
    """The options of config group ``group`` in the running app's search path."""
    try:
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.object_type import ObjectType

        loader = GlobalHydra.instance().config_loader()
        return sorted(loader.get_group_options(group, results_filter=ObjectType.CONFIG))
    except Exception:  # noqa: BLE001 - no Hydra app running: no options to list
        return []


def _keys(node: Any, prefix: str) -> list[str]:
    """``key=value`` and the help of each field of the dataclass behind
    ``node`` (recursing into fields that are structured configs themselves)."""
    schema = _schema(node)
    if schema is None:
        return []
    own = vars(schema).get("__annotations__", {})
    fields = sorted(dataclasses.fields(schema), key=lambda f: f.name not in own)
    lines = []
    for field in fields:  # the command's own fields first, then the inherited ones
        if field.name.startswith("_") or field.name not in node.keys():  # noqa: SIM118 - `in` skips ???
            continue
        child = node._get_node(field.name)
        key = f"{prefix}{field.name}"
        nested = _keys(child, f"{key}.")
        if nested:
            lines.extend(nested)
            continue
        lines.append(f"{key}={_value(node, field.name)}")
        text = field.metadata.get("help")
        if text:
            lines.extend(
                textwrap.wrap(text, _WIDTH, initial_indent="    ", subsequent_indent="    ")
            )
        if _is_object(child):  # a group's object: its keys
            lines.extend(_plain_keys(child, f"{key}."))
    return lines


def _root_keys(cfg: Any) -> list[str]:
    """The keys of a root with no dataclass behind it (``python -m learners.sft``:
    ``learner`` is structured, ``model`` a plain key beside it): the structured
    nodes' keys, and each plain key, whose help says which structured key of the
    same name it sets (``model`` -> ``learner.model``, as ``learners.entry``
    applies it)."""
    if not _live_dict(cfg):
        return []
    structured = {}
    for name in cfg:
        schema = None if name == "hydra" else _schema(cfg._get_node(name))
        if schema is not None:
            structured[name] = {f.name for f in dataclasses.fields(schema)}
    lines = []
    for name in cfg:
        if name == "hydra" or name in structured:
            continue
        lines.append(f"{name}={_value(cfg, name)}")
        sets = [f"{node}.{name}" for node, fields in structured.items() if name in fields]
        if sets:
            lines.append(f"    When set, sets {' and '.join(sets)} (and wins over it).")
    for name in structured:
        lines.extend(_keys(cfg._get_node(name), f"{name}."))
    return lines


def _plain_keys(node: Any, prefix: str) -> list[str]:
    """``  key=value`` for each key of a config with no dataclass behind it
    (a group's ``_target_`` object), nested dicts flattened."""
    lines = []
    for name in node:
        if name == "_target_":
            continue
        child = node._get_node(name)
        if _live_dict(child) and "_target_" not in child and len(child):  # a plain dict
            lines.extend(_plain_keys(child, f"{prefix}{name}."))
        else:
            lines.append(f"  {prefix}{name}={_value(node, name)}")
    return lines


def _value(node: Any, name: str) -> str:
    """The value as it would be typed on the command line (interpolations and
    ``???`` as written, not resolved)."""
    import json

    from omegaconf import DictConfig, ListConfig, OmegaConf

    if OmegaConf.is_missing(node, name):
        return "???"
    child = node._get_node(name)
    if OmegaConf.is_interpolation(node, name):
        return str(child._value())
    if child._is_none():
        return "null"
    if isinstance(child, DictConfig | ListConfig):
        if _is_object(child):
            return f"<{child._get_node('_target_')._value()}>"
        return json.dumps(OmegaConf.to_container(child, resolve=False), ensure_ascii=False).replace(
            '"', ""
        )
    value = child._value()
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return '""'
    return str(value)


def _live_dict(node: Any) -> bool:
    """Whether ``node`` is a dict config with keys to read: not ``None``, not
    ``???``, not an interpolation."""
    from omegaconf import DictConfig, OmegaConf

    return (
        isinstance(node, DictConfig)
        and not node._is_none()
        and not node._is_missing()
        and not OmegaConf.is_interpolation(node)
    )


def _schema(node: Any) -> type | None:
    """The dataclass behind ``node`` (a structured config), or ``None``."""
    from omegaconf import OmegaConf

    schema = OmegaConf.get_type(node) if _live_dict(node) else None
    return schema if schema is not None and dataclasses.is_dataclass(schema) else None


def _is_object(node: Any) -> bool:
    """Whether ``node`` is a config with a ``_target_`` (a group's object)."""
    return _live_dict(node) and "_target_" in node
