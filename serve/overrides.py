"""What a training job's request may set: the learners it may name, the config
fields that stay the server's, and a JSON value's fit to a field's type.

Kept apart from :mod:`serve.service` so the rules read in one place; the
learners' config module is imported by the caller (it is heavy)."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

__all__ = ["LEARNERS", "SERVER_OWNED", "override_problem"]

LEARNERS = ("sft", "sdft", "grpo")
"""The learners a job may name: the keys of :data:`learners.config.LEARNER_CONFIGS`
(a test checks they agree; importing it here would load the learners' config
module into every process that only serves HTTP)."""

SERVER_OWNED = frozenset(
    {
        # paths on the server, the log format
        "output_dir",
        "episodes",
        "init_adapter",
        "enrich",
        "progress",
        # GRPO's generation server: a client's URL would receive the bearer
        # token read from an environment variable of the client's choosing
        "generation",
        "server_url",
        "server_token_env",
        "server_lora_name",
        "server_adapter_dir",
        "server_timeout",
    }
)
"""Config fields a job request may not set: the service's own paths and log
format, and every network setting (jobs generate locally)."""


def override_problem(config_class: type, learner: str, overrides: dict[str, Any]) -> str | None:
    """Why ``overrides`` (a job request's config fields) cannot be applied to
    ``config_class`` (``learner``'s config dataclass), or None when they can.

    Only the names and the types are checked here; what the config itself
    refuses of values of the right type (``batch_size=0``, an unknown env id)
    is :func:`serve.job_request.check_learner_config`'s."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = _type_hints(config_class)
    for key, value in overrides.items():
        if key in SERVER_OWNED or key.startswith(("hydra", "_")):
            return f"override {key!r} is set by the server"
        if key not in fields:
            return f"unknown {learner} setting {key!r}"
        if not _finite(value):
            return f"{key} holds NaN or Infinity (the parser takes them, JSON has neither)"
        if not _type_ok(value, hints[key]):
            return f"{key}={value!r} is not a {fields[key].type}"
    return None


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types as objects (its annotations are strings)."""
    return typing.get_type_hints(cls)


def _finite(value: Any) -> bool:
    """Whether no number anywhere in a JSON value (nested lists and objects
    included) is NaN or Infinity; iterative, so any depth the parser took is fine."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return True


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a config field's type: int, float, bool, str,
    None, unions of them, list[X], tuple[X, ...] (a JSON list), dict[...],
    Any, and a nested config dataclass (an object of some of its fields)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is types.UnionType or origin is typing.Union:
        return any(_type_ok(value, option) for option in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float, str):
        wanted = int | float if hint is float else hint
        return isinstance(value, wanted) and not isinstance(value, bool)
    if origin is list or (origin is tuple and args[1:] == (Ellipsis,)):
        return isinstance(value, list) and all(_type_ok(v, args[0]) for v in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        fields = _type_hints(hint)
        names = {f.name for f in dataclasses.fields(hint)}
        return isinstance(value, dict) and all(
            key in names and _type_ok(v, fields[key]) for key, v in value.items()
        )
    return False
