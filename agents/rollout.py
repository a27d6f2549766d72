"""Playing an agent in an env: one episode in, one :class:`EpisodeResult` out.

The one rollout loop of the project (``agents.run``, ``benchmarks.run`` and
the learners all play through it, scheduled by :mod:`agents.runners`). When the env is
wrapped in :class:`~browser_env.wrappers.RecordEpisode`, every step is
recorded with what the agent said about it (:func:`annotate`: prompt, raw
output, parse outcome, guards, prompt version).

:class:`Episode` is the same loop one step at a time, for runners that
interleave several envs (:mod:`agents.runners`).

With ``keep_samples`` the result also carries, per step, what a learner
trains on (:class:`StepSample`: the prompt messages and images, the
completion token ids, the parse outcome); ``learners.rollout`` turns such
results into GRPO trajectories, so the learners play through this loop too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from browser_env.actions import Action
from browser_env.wrappers import AnnotatedAction, RecordEpisode

if TYPE_CHECKING:
    from agents.agent import Agent

__all__ = [
    "Episode",
    "EpisodeResult",
    "StepCallback",
    "StepSample",
    "annotate",
    "describe_error",
    "find_recorder",
    "play",
    "rollout",
    "token_usage",
]

# on_step(t, action, reward, obs, agent_info, step_info), after env step t (1-based).
StepCallback = Callable[
    [int, Action, float, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], None
]


@dataclasses.dataclass
class StepSample:
    """What one step gives a learner: the prompt the agent built for that
    observation (its messages and the images sent with them), the completion
    token ids the model returned, and whether that output parsed. One step,
    one training sample: steps are never concatenated across turns."""

    messages: list[dict[str, Any]]
    images: list[Any]
    completion_ids: list[int]
    parsed: bool

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> StepSample:
        """The sample in ``Agent.act``'s ``info`` (empty for agents without a model)."""
        prompt = info.get("prompt")
        generation = info.get("generation")
        parse = info.get("parse")
        return cls(
            messages=list(prompt.get("messages") or ()) if isinstance(prompt, Mapping) else [],
            images=list(info.get("images") or ()),
            completion_ids=list(generation.get("token_ids") or ())
            if isinstance(generation, Mapping)
            else [],
            parsed=bool(parse.get("ok")) if isinstance(parse, Mapping) else True,
        )


@dataclasses.dataclass
class EpisodeResult:
    """One played episode. Times are milliseconds; ``actions`` are canonical dicts."""

    env_id: str
    seed: int | None
    goal: str
    success: bool
    episode_return: float
    steps: int
    terminated: bool
    truncated: bool
    answer: str | None
    action_errors: int
    env_step_ms: list[float]
    agent_ms: list[float]
    reset_ms: float
    episode_dir: str | None = None
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    prompt_tokens: int = 0  # summed over the episode's model calls (0: no model, e.g. random)
    completion_tokens: int = 0
    # "ok", "timeout" (past the runner's per-episode limit) or "error" (an exception,
    # or the env truncated an episode that could not go on: its browser died)
    status: str = "ok"
    error: str | None = None  # why, when status is not "ok"
    retries: int = 0  # times a runner replayed this episode after its worker died
    agent_seed: int | None = None  # the agent's sampling seed (None: ``seed``)
    samples: list[StepSample] = dataclasses.field(default_factory=list)  # with keep_samples

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; without ``samples`` (prompts and pixels are the episode dir's)."""
        data = dataclasses.asdict(dataclasses.replace(self, samples=[]))
        del data["samples"]
        return data


def annotate(action: Action, info: Mapping[str, Any]) -> AnnotatedAction:
    """``action`` with what ``Agent.act`` said about it, for :class:`RecordEpisode`."""
    prompt = info.get("prompt")
    extras = {k: info[k] for k in ("parse", "proposed", "latency_s") if k in info}
    if isinstance(prompt, Mapping):
        extras["prompt_version"] = prompt.get("version")
        extras["truncation"] = prompt.get("truncation")
    return AnnotatedAction(
        action=action,
        prompt=prompt.get("messages") if isinstance(prompt, Mapping) else prompt,
        raw_output=info.get("raw_output"),
        guards=list(info.get("guards") or ()),
        extras=extras or None,
    )


def token_usage(info: Mapping[str, Any]) -> tuple[int, int]:
    """``(prompt_tokens, completion_tokens)`` of one ``Agent.act`` info: the
    backend's own counts (transformers, MLX, TensorRT-LLM), else the server's
    OpenAI ``usage``, else the number of returned completion token ids; ``(0, 0)``
    for agents without a model."""
    generation = info.get("generation")
    if not isinstance(generation, Mapping):
        return 0, 0
    backend_info = generation.get("info") or {}
    usage = backend_info.get("usage") or {}
    prompt = backend_info.get("prompt_tokens", usage.get("prompt_tokens"))
    completion = backend_info.get("completion_tokens", usage.get("completion_tokens"))
    if completion is None:
        completion = len(generation.get("token_ids") or ())
    return int(prompt or 0), int(completion or 0)


def find_recorder(env: gym.Env) -> RecordEpisode | None:
    """The :class:`RecordEpisode` in ``env``'s wrapper stack, or None."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, RecordEpisode):
            return env
        env = env.env
    return None


class Episode:
    """One episode being played, step by step: what :func:`rollout` loops over,
    and what runners that interleave several envs (the vector runner) drive.

    ``Episode(env, agent, seed, ...)`` resets both; then, until ``done``,
    ``action, info = agent.act(episode.obs)`` and ``episode.step(action, info)``;
    :meth:`result` is the :class:`EpisodeResult`. ``max_steps`` counts as
    truncation, as in :func:`rollout`.
    """

    def __init__(
        self,
        env: gym.Env,
        agent: Agent,
        seed: int | None,
        *,
        options: Mapping[str, Any] | None = None,
        max_steps: int | None = None,
        agent_seed: int | None = None,
        on_step: StepCallback | None = None,
        keep_samples: bool = False,
    ) -> None:
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.env, self.seed, self.max_steps, self.on_step = env, seed, max_steps, on_step
        self.agent_seed, self.keep_samples = agent_seed, keep_samples
        self.samples: list[StepSample] = []
        self.recorder = find_recorder(env)
        self.obs, info = env.reset(seed=seed, options=dict(options) if options else None)
        self.reset_ms = float(info.get("timings", {}).get("total", 0.0))
        self.goal = str(self.obs.get("goal") or (options or {}).get("goal") or "")
        agent.reset(self.goal, seed=seed if agent_seed is None else agent_seed)
        self.total, self.steps, self.errors = 0.0, 0, 0
        self.prompt_tokens = self.completion_tokens = 0
        self.env_ms: list[float] = []
        self.agent_ms: list[float] = []
        self.actions: list[dict[str, Any]] = []
        self.terminated = self.truncated = False
        self.step_info: Mapping[str, Any] = {}
        self._check_limit()

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def _check_limit(self) -> None:
        if not self.done and self.max_steps is not None and self.steps >= self.max_steps:
            self.truncated = True
            if self.recorder is not None:
                self.recorder.end_episode("max_steps")

    def step(self, action: Action, act_info: Mapping[str, Any], agent_ms: float = 0.0) -> None:
        """Run ``action`` (what the agent chose, with its ``info``) in the env."""
        if self.done:
            raise RuntimeError("the episode is over")
        self.agent_ms.append(agent_ms)
        prompt_tokens, completion_tokens = token_usage(act_info)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        t1 = time.perf_counter()
        self.obs, reward, terminated, truncated, self.step_info = self.env.step(
            annotate(action, act_info) if self.recorder is not None else action
        )
        self.env_ms.append((time.perf_counter() - t1) * 1e3)
        self.terminated, self.truncated = bool(terminated), bool(truncated)
        self.total += float(reward)
        self.steps += 1
        self.errors += bool(self.step_info.get("action_error"))
        self.actions.append(action.to_dict())
        if self.keep_samples:
            self.samples.append(StepSample.from_info(act_info))
        if self.on_step is not None:
            self.on_step(self.steps, action, float(reward), self.obs, act_info, self.step_info)
        self._check_limit()

    def stop(self, status: str, error: str | None = None) -> EpisodeResult:
        """End the episode early (e.g. ``status="timeout"``) and return its result."""
        if not self.done:
            self.truncated = True
            if self.recorder is not None:
                self.recorder.end_episode(status)
        return dataclasses.replace(self.result(), status=status, error=error)

    def fail(self, exc: BaseException) -> EpisodeResult:
        """End the episode on ``exc`` (a step's, the agent's or the env's): its
        result with ``status="error"`` and the steps played so far; its
        recording ends with reason ``error`` (a recorder that cannot close it
        leaves it marked incomplete, and the result is returned all the same)."""
        error = describe_error(exc)
        try:
            return self.stop("error", error)
        except Exception:  # noqa: BLE001 - the recording is the writer's to mark failed
            return dataclasses.replace(self.result(), status="error", error=error)

    def result(self) -> EpisodeResult:
        """The episode so far. An episode the env truncated because it could not
        go on (``info["truncated_reason"]``: its browser or page died past
        recovery) did not play out: ``status="error"`` with that reason, as an
        exception's would be (a benchmark lists it under errors, GRPO leaves it
        out of its advantages), not an ``ok`` failure of the agent's."""
        env = self.env
        last_dir = self.recorder.last_episode_dir if self.recorder is not None else None
        died = self.step_info.get("truncated_reason") if self.truncated else None
        return EpisodeResult(
            env_id=env.spec.id if env.spec is not None else type(env.unwrapped).__name__,
            seed=self.seed,
            goal=self.goal,
            success=bool(self.step_info.get("success")),
            episode_return=self.total,
            steps=self.steps,
            terminated=self.terminated,
            truncated=self.truncated,
            answer=self.step_info.get("answer"),
            action_errors=self.errors,
            env_step_ms=self.env_ms,
            agent_ms=self.agent_ms,
            reset_ms=self.reset_ms,
            episode_dir=None if last_dir is None else str(last_dir),
            actions=self.actions,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            agent_seed=self.agent_seed,
            samples=self.samples,
            status="error" if died else "ok",
            error=f"the episode could not go on: {died}" if died else None,
        )


def rollout(
    env: gym.Env,
    agent: Agent,
    seed: int | None,
    *,
    options: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    agent_seed: int | None = None,
    on_step: StepCallback | None = None,
    deadline: float | None = None,
    keep_samples: bool = False,
    record_errors: bool = False,
) -> EpisodeResult:
    """Play one episode of ``agent`` in ``env`` from ``seed``.

    ``agent`` follows :class:`agents.agent.Agent` (``reset(goal, seed=)``,
    ``act(obs) -> (action, info)``). The episode ends when the env terminates
    or truncates, or after ``max_steps`` steps (then it counts as truncated).
    The agent is reset with ``agent_seed`` (its sampling seed), default ``seed``.
    ``on_step`` is called after every env step (e.g. to print it, or to keep
    the agent's info for learning). Past ``deadline`` (a ``time.monotonic()``
    value) the episode stops between steps with ``status="timeout"``.
    ``keep_samples`` fills ``EpisodeResult.samples`` (one per step). With
    ``record_errors`` an exception of a step (the agent's or the env's) ends
    the episode as ``status="error"`` (its recording too), with the steps
    played so far; an exception of the reset is raised either way.
    """
    episode = Episode(
        env,
        agent,
        seed,
        options=options,
        max_steps=max_steps,
        agent_seed=agent_seed,
        on_step=on_step,
        keep_samples=keep_samples,
    )
    return play(episode, agent, deadline=deadline, record_errors=record_errors)


def play(
    episode: Episode,
    agent: Agent,
    *,
    deadline: float | None = None,
    record_errors: bool = False,
) -> EpisodeResult:
    """Play ``episode`` (reset, as :class:`Episode` is made) to its end with
    ``agent``: :func:`rollout` after its reset, for a caller that treats the
    reset's exceptions apart (``agents.run`` refuses a URL that does not open)."""
    try:
        while not episode.done:
            if deadline is not None and time.monotonic() > deadline:
                return episode.stop("timeout")
            t0 = time.perf_counter()
            action, act_info = agent.act(episode.obs)
            episode.step(action, act_info, (time.perf_counter() - t0) * 1e3)
    except Exception as exc:
        if not record_errors:
            raise
        return episode.fail(exc)
    return episode.result()


def describe_error(exc: BaseException) -> str:
    """How an episode's exception is recorded: ``"Type: message"``."""
    return f"{type(exc).__name__}: {exc}"
