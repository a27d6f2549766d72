"""The agent contract and the LLM agent.

An agent is reset with the task's goal and then asked for one action per
observation::

    agent.reset(goal, seed=None)
    action, info = agent.act(obs)

``info`` is JSON-safe and, for :class:`LLMAgent`, holds ``prompt`` (see
:meth:`Prompt.to_dict`), ``raw_output``, ``parse`` (ok, method, error),
``guards`` (one dict per guard that fired), ``proposed`` (the parsed action
before guards, ``None`` on a parse failure), ``action``, ``latency_s`` and
``generation`` (token ids, logprobs, backend info).

The agent keeps its own :class:`History`. A step's outcome (OK or the error)
is learned from the next observation's ``last_action_error``; errors the agent
itself decides (a rejected element, an unparseable output) are recorded at
once, so the model always sees why its last action did not happen.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from agents.backends.base import Backend, SamplingParams
from agents.batch import check_rows, each_row, raise_row_errors
from agents.guards import GuardConfig, Guards
from agents.history import History, Step, describe_element
from agents.parser import ParseFailure, explain_parse
from agents.prompt import Prompt, build_prompt
from agents.schema import help_field
from agents.seeding import derive_seed
from browser_env.actions import Action, Verb
from browser_env.observation import Observation

__all__ = [
    "Agent",
    "History",
    "LLMAgent",
    "PromptConfig",
    "Step",
    "describe_element",
    "parse_failure_error",
    "replay_step",
]


@runtime_checkable
class Agent(Protocol):
    """A policy over observations. ``act`` never raises for a bad model output;
    it returns an action the env can run (at worst WAIT or FINISH). ``close``
    releases what the agent holds (its backend); safe to call twice."""

    name: str

    def reset(self, goal: str = "", *, seed: int | None = None) -> None: ...

    def act(self, obs: Observation) -> tuple[Action, dict[str, Any]]: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """Arguments to :func:`agents.prompt.build_prompt` that an agent fixes.
    ``use_screenshot`` sends the screenshot only to multimodal backends.

    The one prompt recipe: :class:`LLMAgent` and the learners (their
    ``prompt`` field) are both handed a ``PromptConfig`` and build every
    prompt through :meth:`build`, so a training prompt is the inference
    prompt byte for byte.
    """

    budget_tokens: int = help_field(
        3072,
        "Prompt tokens at most (the backend's tokenizer); over it, page text, then elements, "
        "then history are cut, each cut said in the prompt.",
    )
    max_history: int = help_field(8, "Earlier steps of the episode shown in the prompt.")
    max_text_chars: int = help_field(8000, "Characters of the page's visible text at most.")
    rules: tuple[str, ...] | None = help_field(
        None, "The RULES section's lines, instead of agents.prompt.DEFAULT_RULES; null: those."
    )
    system_role: bool = help_field(
        True, "Send the instructions as a system message (false: in the user message)."
    )
    use_screenshot: bool = help_field(
        True, "Send the screenshot to multimodal backends (text-only backends never get it)."
    )

    def __post_init__(self) -> None:
        if self.rules is not None:
            object.__setattr__(self, "rules", tuple(str(r) for r in self.rules))

    def multimodal(self, backend: Any) -> bool:
        """Whether prompts for ``backend`` carry the screenshot."""
        return self.use_screenshot and bool(getattr(backend, "multimodal", False))

    def build(
        self,
        obs: Mapping[str, Any],
        history: Sequence[Step],
        *,
        backend: Any,
        goal: str = "",
        demonstration: str | None = None,
    ) -> Prompt:
        """The prompt for ``obs`` after ``history``, measured with ``backend``'s
        tokenizer; ``obs["goal"]`` wins over ``goal`` when set."""
        return build_prompt(
            obs,
            history,
            count_tokens=backend.count_tokens,
            budget_tokens=self.budget_tokens,
            demonstration=demonstration,
            multimodal=self.multimodal(backend),
            max_history=self.max_history,
            max_text_chars=self.max_text_chars,
            rules=self.rules,
            system_role=self.system_role,
            goal=obs.get("goal") or goal,
        )

    @classmethod
    def from_value(cls, value: PromptConfig | Mapping[str, Any] | None) -> PromptConfig:
        """``value`` as a ``PromptConfig`` (a mapping's unknown keys are an error)."""
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(map(str, value)) - names)
            if unknown:
                raise ValueError(f"unknown prompt settings {unknown}; known: {sorted(names)}")
        return _as(cls, value)


def parse_failure_error(reason: str) -> str:
    """What the agent records (and the model next sees) after an unreadable output."""
    return f"your output had no readable action: {reason}"


def replay_step(
    obs: Mapping[str, Any],
    action: Action,
    *,
    parse: Mapping[str, Any] | None,
    guards: Sequence[Mapping[str, Any]] = (),
    env_error: str = "",
) -> Step:
    """The :class:`Step` an :class:`LLMAgent` put into its history for a recorded
    step: ``parse`` and ``guards`` as recorded (``info["parse"]``/``info["guards"]``;
    ``parse=None`` for sources without a model, such as experts), ``env_error``
    the env's ``action_error`` of that step. Learners rebuild histories with it."""
    failed = parse is not None and not parse.get("ok", True)
    notes = tuple(str(g.get("guard", "")) for g in guards)
    if failed:
        error = parse_failure_error(str(parse.get("error", "")))
        proposed = None
        notes = ("parse_failure",)
    else:
        error = next((str(g["error"]) for g in guards if g.get("error")), "")
        raw = (parse or {}).get("action")
        proposed = Action.from_dict(dict(raw)) if raw else None
    history = History(
        [
            Step(
                action=action,
                element=describe_element(obs, action.element_id),
                error=error,
                proposed=proposed,
                notes=notes,
            )
        ]
    )
    history.record_error(env_error)
    return history[0]


class LLMAgent:
    """A model behind a :class:`Backend`, prompted with :func:`build_prompt`,
    read with :func:`explain_parse` and corrected by :class:`Guards`.

    After ``max_parse_failures`` consecutive unparseable outputs the agent
    returns FINISH (the ones before become ``WAIT 0`` with the error recorded).
    """

    name = "llm"

    def __init__(
        self,
        backend: Backend,
        prompt: PromptConfig | Mapping[str, Any] | None = None,
        guards: GuardConfig | Mapping[str, Any] | None = None,
        sampling: SamplingParams | Mapping[str, Any] | None = None,
        max_parse_failures: int = 3,
    ) -> None:
        if max_parse_failures < 1:
            raise ValueError("max_parse_failures must be >= 1")
        self.backend = backend
        self.prompt_config = PromptConfig.from_value(prompt)
        self.guards = Guards(guards)
        self.sampling = _as(SamplingParams, sampling)
        self.max_parse_failures = max_parse_failures
        self.history = History()
        self.goal = ""
        self._episode_seed: int | None = None
        self._parse_failures = 0
        self._awaiting_result = False

    def reset(self, goal: str = "", *, seed: int | None = None) -> None:
        self.goal = goal
        self.history.clear()
        self._parse_failures = 0
        self._awaiting_result = False
        self._episode_seed = seed

    def step_sampling(self) -> SamplingParams:
        """The sampling of the next step: with an episode seed, a seed of its own
        per step (``derive_seed(episode seed, step)``), so steps never replay
        one random stream; without one, ``sampling.seed`` as configured."""
        if self._episode_seed is None:
            return self.sampling
        return dataclasses.replace(
            self.sampling, seed=derive_seed(self._episode_seed, len(self.history))
        )

    def build_prompt(self, obs: Mapping[str, Any], demonstration: str | None = None) -> Prompt:
        """The prompt for ``obs`` given the current history (what :meth:`act` sends)."""
        return self.prompt_config.build(
            obs, self.history, backend=self.backend, goal=self.goal, demonstration=demonstration
        )

    def act(self, obs: Mapping[str, Any]) -> tuple[Action, dict[str, Any]]:
        prompt = self._begin_step(obs)
        start = time.perf_counter()
        generation = self.backend.generate(
            prompt.messages, list(prompt.images) or None, self.step_sampling()
        )
        return self._end_step(obs, prompt, generation, time.perf_counter() - start)

    def fork(self) -> LLMAgent:
        """A new agent with this one's backend (shared, not copied) and settings,
        and an episode state of its own: one per env of a vectorised rollout."""
        twin = LLMAgent(
            self.backend,
            prompt=self.prompt_config,
            guards=self.guards.config,
            sampling=self.sampling,
            max_parse_failures=self.max_parse_failures,
        )
        twin.name = self.name
        return twin

    def act_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        agents: Sequence[LLMAgent] | None = None,
    ) -> list[tuple[Action, dict[str, Any]]]:
        """``[agents[i].act(observations[i]) ...]`` with one model call for all.

        ``agents`` hold the episode states (forks of this agent, see
        :meth:`fork`); default ``[self]`` for a single observation. The
        generation runs through ``self.backend.generate_batch`` when the
        backend has one (else row by row), each row with its agent's step
        sampling (its own seed): greedy results equal the unbatched ones, and
        so do seeded sampled ones on a backend whose rows draw from their own
        streams (transformers, TensorRT-LLM, OpenAI-compatible servers; up to
        the float rounding of a batch's logits).
        """
        agents = [self] if agents is None else list(agents)
        check_rows(observations, agents)
        # a row whose prompt cannot be built, or whose output cannot be recorded,
        # fails alone (RowErrors); a failed model call fails the batch
        results = each_row(
            [lambda a=a, o=o: a._begin_step(o) for a, o in zip(agents, observations, strict=True)]
        )
        rows = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        prompts = [results[i] for i in rows]
        start = time.perf_counter()
        batched = getattr(self.backend, "generate_batch", None)
        if batched is not None and len(prompts) > 1:
            generations = batched(
                [p.messages for p in prompts],
                [list(p.images) or None for p in prompts],
                [agents[i].step_sampling() for i in rows],  # each episode's own seed
            )
        else:
            generations = [
                agents[i].backend.generate(
                    p.messages, list(p.images) or None, agents[i].step_sampling()
                )
                for i, p in zip(rows, prompts, strict=True)
            ]
        latency = time.perf_counter() - start
        ended = each_row(
            [
                lambda i=i, p=p, g=g: agents[i]._end_step(observations[i], p, g, latency)
                for i, p, g in zip(rows, prompts, generations, strict=True)
            ]
        )
        for i, decision in zip(rows, ended, strict=True):
            results[i] = decision
        return raise_row_errors(results)

    def _begin_step(self, obs: Mapping[str, Any]) -> Prompt:
        """Note the last step's outcome and build this step's prompt."""
        if self._awaiting_result:
            self.history.record_error(str(obs.get("last_action_error") or ""))
        return self.build_prompt(obs)

    def _end_step(
        self, obs: Mapping[str, Any], prompt: Prompt, generation: Any, latency: float
    ) -> tuple[Action, dict[str, Any]]:
        """Parse and guard the model's output, record the step, and build ``info``."""
        outcome = explain_parse(generation.text)
        notes: list[Any] = []
        error = ""
        if isinstance(outcome.result, ParseFailure):
            self._parse_failures += 1
            proposed = None
            if self._parse_failures >= self.max_parse_failures:
                action = Action(
                    Verb.FINISH,
                    value="",
                    reasoning=f"stopped: {self._parse_failures} consecutive outputs had no readable action",
                )
            else:
                action = Action(Verb.WAIT, value="0")
            error = parse_failure_error(outcome.result.reason)
        else:
            self._parse_failures = 0
            proposed = outcome.result
            action, notes = self.guards(proposed, obs, self.history)
            error = next((n.error for n in notes if n.error), "")
        self.history.append(
            Step(
                action=action,
                element=describe_element(obs, action.element_id),
                error=error,
                proposed=proposed,
                notes=tuple(n.guard for n in notes) or (() if proposed else ("parse_failure",)),
            )
        )
        self._awaiting_result = True
        info = {
            "prompt": prompt.to_dict(),
            "images": list(prompt.images),  # the pixels sent with the prompt (not JSON)
            "raw_output": generation.text,
            "parse": outcome.to_dict(),
            "guards": [n.to_dict() for n in notes],
            "proposed": None if proposed is None else proposed.to_dict(),
            "action": action.to_dict(),
            "latency_s": latency,
            "generation": {
                "token_ids": list(generation.token_ids),
                "logprobs": None if generation.logprobs is None else list(generation.logprobs),
                "info": dict(generation.info),
            },
        }
        return action, info

    def close(self) -> None:
        self.backend.close()


def _as(cls: type, value: Any) -> Any:
    """``value`` as a ``cls`` dataclass: itself, built from a mapping (Hydra
    nodes included; lists become tuples), or the defaults for ``None``."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**{str(k): tuple(v) if _is_list(v) else v for k, v in value.items()})
    raise TypeError(f"expected {cls.__name__} or a mapping, got {type(value).__name__}")


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)
