"""Episode format v1: the typed records behind ``episode.json`` and ``steps.jsonl``.

One directory per episode::

    <episode>/
      episode.json        EpisodeFile: meta + complete flag + outcome + timings
      steps.jsonl         one StepRecord per line, in step order
      screenshots/        step_00000.png ... and final.png (only with screenshots on)

Every record converts to and from plain JSON with ``to_json``/``from_json``;
``from_json`` validates types and raises :class:`EpisodeFormatError`. The full
field reference is ``docs/episode_format.md``.

Observations are stored in their JSON form (:func:`observation_to_json`):
element ``bbox`` arrays become ``[x, y, w, h]`` lists and the screenshot
becomes the PNG's path relative to the episode directory (or ``None``).
:func:`observation_from_json` restores the env's form (float32 ``bbox``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA_VERSION",
    "SOURCES",
    "AgentInfo",
    "EpisodeFile",
    "EpisodeFormatError",
    "EpisodeMeta",
    "Outcome",
    "StepRecord",
    "observation_from_json",
    "observation_to_json",
    "to_jsonable",
]

SCHEMA_VERSION = 1
SOURCES = ("agent", "human", "scripted")
EPISODE_FILE = "episode.json"
STEPS_FILE = "steps.jsonl"
SCREENSHOT_DIR = "screenshots"


class EpisodeFormatError(ValueError):
    """A file of an episode that does not match format v1.

    ``path`` is the offending file and ``line`` its 1-based line (``steps.jsonl``)
    or ``None``; both are part of the message.
    """

    def __init__(self, path: Any, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message  # the message without the path
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


# --- JSON helpers -------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples, sets and dataclasses turned into
    plain JSON types. Non-finite floats become ``None``; unknown objects their ``str``."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):  # Enums
        return value.value
    return str(value)


_ELEMENT_FLAGS = ("enabled", "visible", "focused", "checked")


def observation_to_json(observation: Mapping[str, Any], screenshot: str | None = None) -> dict:
    """The JSON form of an env observation. Pixels are dropped; ``screenshot`` is
    the relative path of the PNG that holds them (or ``None``)."""
    out: dict[str, Any] = {}
    for key, value in observation.items():
        if key == "screenshot":
            continue
        if key == "elements":
            out["elements"] = [_element_to_json(e) for e in value]
        else:
            out[key] = to_jsonable(value)
    out["screenshot"] = screenshot
    return out


def _element_to_json(element: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in element.items():
        if key == "bbox":
            out["bbox"] = [round(float(v), 2) for v in np.asarray(value, dtype=np.float64).ravel()]
        elif key in _ELEMENT_FLAGS:
            out[key] = int(value)
        else:
            out[key] = to_jsonable(value)
    return out


def observation_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """The env form of a stored observation: ``bbox`` as float32 arrays and the
    elements as a tuple. ``screenshot`` stays the stored relative path; use
    :meth:`~browser_env.episodes.loader.Episode.observation` for pixels."""
    out = dict(data)
    if "elements" in out:
        out["elements"] = tuple(
            {**e, "bbox": np.asarray(e.get("bbox", (0, 0, 0, 0)), dtype=np.float32)}
            for e in out["elements"]
        )
    return out


# --- validation helpers ---------------------------------------------------------


class _Fields:
    """Pull typed fields out of a JSON object, raising one clear error per problem."""

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
        self.data, self.what = data, what

    def get(
        self, key: str, types: type | tuple[type, ...], default: Any = ..., *, none: bool = False
    ):
        if key not in self.data:
            if default is ...:
                raise ValueError(f"{self.what} lacks required key {key!r}")
            return default
        value = self.data[key]
        if value is None and none:
            return None
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise ValueError(f"{self.what}.{key} must be {_names(types)}, got bool")
        if not isinstance(value, types):
            raise ValueError(
                f"{self.what}.{key} must be {_names(types)}, got {type(value).__name__}"
            )
        return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


_NUMBER = (int, float)


def _number(value: Any) -> float:
    # JSON has no NaN; to_jsonable stored non-finite numbers as null.
    return math.nan if value is None else float(value)


# --- records ---------------------------------------------------------------------


@dataclasses.dataclass
class AgentInfo:
    """Who acted. Every field is optional; agents fill what they know.

    ``name`` is the agent (``random``, ``expert``, ``llm``, ``human``), ``backend``
    the inference backend (``transformers``, ``mlx``, ``openai``, ``tensorrt``),
    ``model`` the model id or path, ``adapter`` the LoRA adapter dir, ``prompt_version``
    the prompt builder's version, ``config`` anything else (sampling, guards, ...).
    """

    name: str | None = None
    backend: str | None = None
    model: str | None = None
    adapter: str | None = None
    prompt_version: str | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: Any) -> AgentInfo:
        f = _Fields(data, "agent")
        kwargs = {k: f.get(k, str, None, none=True) for k in _AGENT_STR_FIELDS}
        return cls(**kwargs, config=f.get("config", dict, {}))


_AGENT_STR_FIELDS = ("name", "backend", "model", "adapter", "prompt_version")


@dataclasses.dataclass
class EpisodeMeta:
    """What is known when an episode starts.

    ``env_kwargs`` and ``reset_options`` are what :mod:`browser_env.replay` needs to
    rebuild the env (``gymnasium.make(env_id, **env_kwargs)``) and reset it
    (``reset(seed=seed, options=reset_options)``). ``task_server`` is the base
    URL of the bundled server the task's pages came from in the recording
    process (``None``: no bundled server, or not recorded: episodes written
    before the key existed); replay maps URLs under it to its own server's.
    """

    env_id: str
    task: str
    seed: int | None
    goal: str = ""
    source: str = "agent"
    agent: AgentInfo = dataclasses.field(default_factory=AgentInfo)
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    reset_options: dict[str, Any] | None = None
    task_server: str | None = None
    episode_id: str = ""
    created_at: str = ""
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if isinstance(self.agent, Mapping):
            self.agent = AgentInfo(**self.agent)

    def to_json(self) -> dict[str, Any]:
        out = {"schema_version": SCHEMA_VERSION}
        out.update(to_jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}))
        out["agent"] = self.agent.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any) -> EpisodeMeta:
        f = _Fields(data, "episode")
        version = f.get("schema_version", int)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version} is not supported (this reader knows {SCHEMA_VERSION})"
            )
        return cls(
            env_id=f.get("env_id", str),
            task=f.get("task", str),
            seed=f.get("seed", int, none=True),
            goal=f.get("goal", str, ""),
            source=f.get("source", str, "agent"),
            agent=AgentInfo.from_json(f.get("agent", dict, {})),
            env_kwargs=f.get("env_kwargs", dict, {}),
            reset_options=f.get("reset_options", dict, None, none=True),
            task_server=f.get("task_server", str, None, none=True),
            episode_id=f.get("episode_id", str, ""),
            created_at=f.get("created_at", str, ""),
            versions=f.get("versions", dict, {}),
            extra=f.get("extra", dict, {}),
        )


@dataclasses.dataclass
class Outcome:
    """How an episode ended. ``return_`` is stored as ``"return"``; ``success`` is
    ``None`` when the task cannot judge.

    ``reason`` is the env's reason for the last step (e.g. ``"success"``,
    ``"max_steps"``), or ``"abandoned"`` when the episode was reset or closed
    before it ended, or ``"interrupted: <error>"`` when the writer was aborted.
    """

    success: bool | None = False
    return_: float = 0.0
    steps: int = 0
    answer: str | None = None
    terminated: bool = False
    truncated: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out = to_jsonable(dataclasses.asdict(self))
        out["return"] = out.pop("return_")
        return out

    @classmethod
    def from_json(cls, data: Any) -> Outcome:
        f = _Fields(data, "outcome")
        return cls(
            success=f.get("success", bool, none=True),
            return_=_number(f.get("return", _NUMBER, none=True)),
            steps=f.get("steps", int),
            answer=f.get("answer", str, None, none=True),
            terminated=f.get("terminated", bool, False),
            truncated=f.get("truncated", bool, False),
            reason=f.get("reason", str, ""),
        )


@dataclasses.dataclass
class EpisodeFile:
    """The whole of ``episode.json``.

    ``complete`` is false from the moment the episode directory exists until the
    writer is closed; an episode cut off by a crash or Ctrl+C stays false and
    its ``outcome`` covers the steps written so far (or is ``None``).
    """

    meta: EpisodeMeta
    complete: bool = False
    outcome: Outcome | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    final_observation: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.meta.to_json()
        out["complete"] = self.complete
        out["outcome"] = None if self.outcome is None else self.outcome.to_json()
        out["timings"] = to_jsonable(self.timings)
        out["final_observation"] = self.final_observation
        return out

    @classmethod
    def from_json(cls, data: Any) -> EpisodeFile:
        meta = EpisodeMeta.from_json(data)
        f = _Fields(data, "episode")
        outcome = f.get("outcome", dict, None, none=True)
        final = f.get("final_observation", dict, None, none=True)
        if final is not None:
            _check_observation(final, "episode.final_observation")
        return cls(
            meta=meta,
            complete=f.get("complete", bool),
            outcome=None if outcome is None else Outcome.from_json(outcome),
            timings=f.get("timings", dict, {}),
            final_observation=final,
        )


@dataclasses.dataclass
class StepRecord:
    """One line of ``steps.jsonl``: the observation the policy saw, what it did,
    and what the env answered.

    ``observation`` is the JSON form of the observation BEFORE the action.
    ``action`` is the canonical action dict the env executed, or ``None`` when
    the policy's output was not a valid action (then ``error`` says why and
    ``action_input`` holds what the policy passed). ``prompt``/``raw_output``/
    ``guards`` are what an LLM agent saw, said and had corrected; scripted and
    human sources leave them empty. ``timings`` are milliseconds. ``success``
    is ``None`` when the task cannot judge (an open task without an answer).
    """

    index: int
    observation: dict[str, Any]
    action: dict[str, Any] | None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    success: bool | None = False
    error: str = ""
    reason: str = ""
    raw_reward: float | None = None
    answer: str | None = None
    action_input: Any = None
    prompt: Any = None
    raw_output: str | None = None
    guards: list[Any] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    time: float = 0.0
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_json(cls, data: Any) -> StepRecord:
        f = _Fields(data, "step")
        observation = f.get("observation", dict)
        _check_observation(observation, "step.observation")
        action = f.get("action", dict, none=True)
        if action is not None:
            from browser_env.actions import ActionError, coerce_action

            try:
                coerce_action(action)
            except ActionError as exc:
                raise ValueError(f"step.action is not a valid action: {exc}") from None
        raw_reward = f.get("raw_reward", _NUMBER, None, none=True)
        return cls(
            index=f.get("index", int),
            observation=observation,
            action=action,
            reward=_number(f.get("reward", _NUMBER, none=True)),
            terminated=f.get("terminated", bool, False),
            truncated=f.get("truncated", bool, False),
            success=f.get("success", bool, False, none=True),
            error=f.get("error", str, ""),
            reason=f.get("reason", str, ""),
            raw_reward=None if raw_reward is None else float(raw_reward),
            answer=f.get("answer", str, None, none=True),
            action_input=data.get("action_input"),
            prompt=data.get("prompt"),
            raw_output=f.get("raw_output", str, None, none=True),
            guards=f.get("guards", list, []),
            timings=f.get("timings", dict, {}),
            time=float(f.get("time", _NUMBER, 0.0)),
            extras=f.get("extras", dict, {}),
        )


def _check_observation(obs: dict[str, Any], what: str) -> None:
    f = _Fields(obs, what)
    f.get("url", str)
    f.get("goal", str, "")
    f.get("screenshot", str, None, none=True)
    elements = f.get("elements", list, [])
    for i, element in enumerate(elements):
        e = _Fields(element, f"{what}.elements[{i}]")
        e.get("element_id", str)
        bbox = e.get("bbox", list, [0, 0, 0, 0])
        if len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox):
            raise ValueError(f"{what}.elements[{i}].bbox must be 4 numbers, got {bbox!r}")
