"""Gymnasium wrappers around :class:`~browser_env.env.BrowserEnv`.

:class:`RecordEpisode` writes every episode the wrapped env plays to its own
directory (format v1, see ``docs/episode_format.md``)::

    env = RecordEpisode(gymnasium.make("browser_env/miniwob.click-button-v0"), "runs/r1",
                        agent=AgentInfo(name="llm", backend="openai", model="m", prompt_version="v1"))
    obs, info = env.reset(seed=0)
    env.set_step_extras(prompt=prompt, raw_output=text, guards=["FINISH->PRESS_ENTER"])
    obs, reward, terminated, truncated, info = env.step(action)

What an agent saw and said at a step reaches the episode in one of two ways:

* :meth:`RecordEpisode.set_step_extras` before ``step``: for one env the
  agent holds directly. The extras apply to the next step only.
* an :class:`AnnotatedAction` passed to ``step`` in place of the action: the
  wrapper records its annotations and passes ``.action`` on. This works where
  the agent cannot reach the wrapper, e.g. inside ``SyncVectorEnv`` /
  ``AsyncVectorEnv`` (each sub-env gets its own wrapper and directory; wrap in
  the env factory) -- pass one ``AnnotatedAction`` per sub-env.

Both may be used together; the annotated action's fields win.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium

from browser_env.episodes.format import AgentInfo, EpisodeMeta, to_jsonable
from browser_env.episodes.writer import EpisodeWriter
from browser_env.tasks.base import task_server_url

__all__ = ["AnnotatedAction", "RecordEpisode"]


@dataclasses.dataclass(frozen=True)
class AnnotatedAction:
    """An action plus what the agent wants recorded with it.

    ``action`` is anything the env accepts (an ``Action``, a dict or a JSON
    string). ``prompt`` (a string or chat messages), ``raw_output`` (the model's
    text), ``guards`` (notes of guard corrections) and ``extras`` (any JSON-able
    mapping) are written to the step record; the env never sees them.
    """

    action: Any
    prompt: Any = None
    raw_output: str | None = None
    guards: tuple[Any, ...] | list[Any] = ()
    extras: Mapping[str, Any] | None = None


_EXTRA_FIELDS = ("prompt", "raw_output", "guards")


class RecordEpisode(gymnasium.Wrapper):
    """Record every episode of ``env`` to ``root/<episode_id>/``.

    An episode starts at ``reset`` and ends when a step terminates or
    truncates, at the next ``reset`` or at ``close`` (the last two mark it
    ``reason="abandoned"``). ``agent`` describes the policy; ``source`` is
    ``"agent"``, ``"scripted"`` or ``"human"``. Screenshots in observations are
    saved as PNGs unless ``screenshots=False``. ``env_kwargs`` (default: the
    registered spec's kwargs) is stored so that replay can rebuild the env.

    ``episode_dirs`` lists the directories written so far, the last
    ``keep_dirs`` of them (a ``deque``: a training run's millions of episodes do
    not grow the process; ``None``: all); ``last_episode_dir`` is the most recent. With ``background=True`` (the default) the files are
    written on a thread of each episode's writer, off the step loop, with the
    same atomicity; an episode's files are all on disk once it has ended
    (terminated, truncated, ``end_episode``, the next ``reset`` or ``close``),
    and at interpreter exit after a crash (see :mod:`browser_env.episodes.writer`).
    """

    def __init__(
        self,
        env: gymnasium.Env,
        root: str | os.PathLike[str],
        *,
        agent: AgentInfo | Mapping[str, Any] | None = None,
        source: str = "agent",
        screenshots: bool = True,
        env_kwargs: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        background: bool = True,
        keep_dirs: int | None = 10_000,
    ) -> None:
        super().__init__(env)
        if keep_dirs is not None and keep_dirs < 1:
            raise ValueError(f"keep_dirs must be >= 1 or None, got {keep_dirs}")
        self.background = background
        self.root = Path(root)
        self.agent = _agent_info(agent)
        self.source = source
        self.screenshots = screenshots
        self.env_kwargs = dict(env_kwargs) if env_kwargs is not None else _spec_kwargs(env)
        self.extra = dict(extra or {})
        self.episode_dirs: collections.deque[Path] = collections.deque(maxlen=keep_dirs)
        self._writer: EpisodeWriter | None = None
        self._obs: Any = None
        self._pending: dict[str, Any] = {}

    # --- agent-facing API -------------------------------------------------------
    def set_agent_info(
        self, agent: AgentInfo | Mapping[str, Any] | None = None, **fields: Any
    ) -> None:
        """Replace (``agent``) or update (``fields``, e.g. ``model=...``) the agent
        description; it applies from the next ``reset``."""
        if agent is not None:
            self.agent = _agent_info(agent)
        if fields:
            self.agent = dataclasses.replace(self.agent, **fields)

    def set_step_extras(
        self,
        *,
        prompt: Any = None,
        raw_output: str | None = None,
        guards: tuple[Any, ...] | list[Any] | None = None,
        **extras: Any,
    ) -> None:
        """Annotate the next ``step``: ``prompt``, ``raw_output``, ``guards`` and any
        JSON-able ``extras``. Cleared after that step."""
        for key, value in (("prompt", prompt), ("raw_output", raw_output), ("guards", guards)):
            if value is not None:
                self._pending[key] = value
        if extras:
            self._pending.setdefault("extras", {}).update(extras)

    @property
    def last_episode_dir(self) -> Path | None:
        return self.episode_dirs[-1] if self.episode_dirs else None

    @property
    def recording(self) -> bool:
        return self._writer is not None

    # --- gymnasium API ------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._end_episode(reason="abandoned")
        obs, info = self.env.reset(seed=seed, options=options)
        meta = EpisodeMeta(
            env_id=str(info.get("env_id") or _spec_id(self.env)),
            task=str(info.get("task") or ""),
            seed=info.get("seed", seed),
            goal=str(obs.get("goal", "")) if isinstance(obs, Mapping) else "",
            source=self.source,
            agent=dataclasses.replace(self.agent, config=dict(self.agent.config)),
            env_kwargs=to_jsonable(self.env_kwargs),
            reset_options=None if options is None else to_jsonable(dict(options)),
            task_server=task_server_url(self.env),
            extra=dict(self.extra),
        )
        if "browser_version" in info:
            meta.extra.setdefault("browser_version", str(info["browser_version"]))
        self._writer = EpisodeWriter(
            self.root, meta, screenshots=self.screenshots, background=self.background
        )
        self.episode_dirs.append(self._writer.path)
        self._obs = obs
        self._pending = {}
        return obs, info

    def step(self, action: Any):
        writer = self._writer
        if writer is None:
            raise gymnasium.error.ResetNeeded("call reset() before step() on RecordEpisode")
        annotations, self._pending = self._pending, {}
        if isinstance(action, AnnotatedAction):
            for key in _EXTRA_FIELDS:
                value = getattr(action, key)
                if value is not None and value != ():
                    annotations[key] = value
            if action.extras:
                annotations.setdefault("extras", {}).update(action.extras)
            action = action.action
        started = time.time()
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, info = self.env.step(action)
        step_ms = (time.perf_counter() - t0) * 1000.0
        extras = dict(annotations.get("extras") or {})
        unknown = {k: v for k, v in info.items() if k not in _KNOWN_INFO}
        if unknown:  # dialogs, downloads, popups, ...: kept for debugging
            extras["info"] = unknown
        if truncated and not terminated and not info.get("reason"):
            info = {**info, "reason": "max_steps"}
        executed = info.get("action", _MISSING)
        if executed is _MISSING:
            executed = _try_coerce(action)
        writer.write_step(
            self._obs,
            executed,
            reward,
            terminated,
            truncated,
            info,
            prompt=annotations.get("prompt"),
            raw_output=annotations.get("raw_output"),
            guards=list(annotations.get("guards") or ()),
            action_input=None if executed is not None else _raw_action(action),
            timings={"step_ms": step_ms},
            extras=extras,
            started_at=started,
        )
        self._obs = obs
        if terminated or truncated:
            self._end_episode(final_observation=obs)
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        try:
            self._end_episode(reason="abandoned")
        finally:
            super().close()

    def end_episode(self, reason: str) -> None:
        """Finish the episode being recorded now, with ``reason`` as its outcome's reason
        (e.g. ``"max_steps"`` when a caller stops at a step limit of its own). The next
        ``reset`` starts a new episode; between episodes this does nothing."""
        self._end_episode(reason=reason)

    def abort(self, reason: str = "interrupted") -> None:
        """Stop recording the episode under way, leaving it ``complete: false``
        with the steps written so far and ``reason`` (what a runner does when
        Ctrl+C ends it, rather than close it as ``abandoned``). The next
        ``reset`` starts a new episode; between episodes this does nothing."""
        writer, self._writer = self._writer, None
        if writer is not None and not writer.closed:
            writer.abort(reason)

    def _end_episode(self, *, final_observation: Any = None, reason: str | None = None) -> None:
        writer, self._writer = self._writer, None
        if writer is None or writer.closed:
            return
        if final_observation is None and self._obs is not None and writer.num_steps:
            final_observation = self._obs
        writer.close(final_observation=final_observation, reason=reason)


_MISSING = object()
_KNOWN_INFO = frozenset(
    {
        "raw_reward",
        "success",
        "reason",
        "answer",
        "action",
        "action_error",
        "timings",
        "TimeLimit.truncated",
    }
)


def _agent_info(agent: AgentInfo | Mapping[str, Any] | None) -> AgentInfo:
    if agent is None:
        return AgentInfo()
    if isinstance(agent, AgentInfo):
        return agent
    return AgentInfo(**dict(agent))


def _spec_kwargs(env: gymnasium.Env) -> dict[str, Any]:
    spec = getattr(env, "spec", None) or getattr(env.unwrapped, "spec", None)
    kwargs = dict(spec.kwargs) if spec is not None and spec.kwargs else {}
    kwargs.pop("browser", None)  # a shared browser handle (browser_env.vector): not replayable
    return kwargs


def _spec_id(env: gymnasium.Env) -> str:
    spec = getattr(env, "spec", None) or getattr(env.unwrapped, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _try_coerce(action: Any) -> dict[str, Any] | None:
    from browser_env.actions import ActionError, coerce_action

    try:
        return coerce_action(action).to_dict()
    except ActionError:
        return None


def _raw_action(action: Any) -> Any:
    return action if isinstance(action, str | dict) else repr(action)
