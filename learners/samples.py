"""Training samples from recorded episodes, one per executed step.

Each :class:`Sample` holds the prompt the agent would see at that step --
built by :func:`agents.prompt.build_prompt`, the one builder the agent uses at
inference, from the stored observation and the history of the episode's
earlier steps -- and the action that was taken there as the target::

    samples = iter_samples(["runs/demos", "runs/expert"], success_only=True, sources={"human", "scripted"})
    dataset = to_hf_dataset(samples)      # columns: prompt, completion, target, reward, ...

Prompts are rebuilt, never read back from ``steps.jsonl``: a learner may use
another tokenizer, and an episode recorded by a human or a scripted expert has
no prompt at all. They are rebuilt with the agent's own recipe
(:class:`agents.agent.PromptConfig`, handed in as ``prompt`` with the
``backend`` whose tokenizer measures it), and the history the agent kept is
rebuilt with :func:`agents.agent.replay_step` from what the step recorded --
guard errors and parse failures included -- so for an episode an
:class:`~agents.agent.LLMAgent` recorded with the same settings and tokenizer
the training prompt equals the prompt in ``steps.jsonl`` byte for byte
(``tests/learners/test_prompt_parity.py``).

Steps whose action was invalid (``action`` null) give no sample and do not
enter the history, since the agent never executed them. Steps whose model
output did not parse (the agent ran ``WAIT 0`` instead) enter the history but
give no sample: the executed action is not a decision to imitate.

:func:`check_episodes`, :func:`load_samples`, :func:`sample_images`,
:func:`action_matches` and :func:`data_info` are what the learners call:
whether a learner config's data settings keep any episode (before the model
loads), those settings -> samples for its backend, the screenshot a
multimodal backend is sent, whether an output is the target action, and the
data record for ``training.json``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from agents.agent import PromptConfig, Step, replay_step
from agents.prompt import PROMPT_VERSION
from browser_env.actions import Action
from browser_env.episodes import Episode, iter_episodes

if TYPE_CHECKING:
    from PIL.Image import Image

    from agents.backends.base import Backend
    from learners.config import LearnerConfig

__all__ = [
    "Sample",
    "action_matches",
    "data_info",
    "episode_samples",
    "iter_samples",
    "check_episodes",
    "load_samples",
    "sample_images",
    "select_episodes",
    "to_hf_dataset",
]

Paths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One decision: what the policy saw (``messages``), what was done (``target``).

    ``teacher_messages`` is the same prompt with ``demonstration`` (the target
    action, as an expert's hint) appended, for self-distillation.
    ``reward`` is the step's reward; ``episode_return`` and ``success`` are the
    episode's. ``screenshot`` is the absolute path of the step's PNG, if any.
    """

    messages: list[dict[str, Any]]
    teacher_messages: list[dict[str, Any]]
    target: str
    demonstration: str
    reward: float
    episode_return: float
    success: bool | None
    source: str
    task: str
    env_id: str
    seed: int | None
    episode_id: str
    step: int
    num_steps: int
    prompt_version: str
    screenshot: str | None

    def to_row(self) -> dict[str, Any]:
        """A flat record; ``prompt``/``completion`` follow TRL's conversational
        prompt-completion format."""
        row = dataclasses.asdict(self)
        row["prompt"] = row.pop("messages")
        row["teacher_prompt"] = row.pop("teacher_messages")
        row["completion"] = [{"role": "assistant", "content": self.target}]
        return row


def select_episodes(
    paths: Paths,
    *,
    success_only: bool = False,
    tasks: Iterable[str] | None = None,
    sources: Iterable[str] | None = None,
    env_ids: Iterable[str] | None = None,
    where: Callable[[Episode], bool] | None = None,
) -> Iterator[Episode]:
    """Complete episodes under ``paths`` that pass every given filter.

    ``tasks`` match ``meta.task`` (``"click-button"``); ``sources`` are
    ``human``, ``scripted`` and/or ``agent``; ``where`` is any predicate.
    """
    keeps = _filter(success_only, tasks, sources, env_ids, where)
    for episode in iter_episodes(paths):
        if keeps(episode):
            yield episode


def _filter(
    success_only: bool,
    tasks: Iterable[str] | None,
    sources: Iterable[str] | None,
    env_ids: Iterable[str] | None,
    where: Callable[[Episode], bool] | None,
) -> Callable[[Episode], bool]:
    """:func:`select_episodes`' filters as one predicate."""
    task_set = None if tasks is None else set(tasks)
    source_set = None if sources is None else set(sources)
    env_set = None if env_ids is None else set(env_ids)
    if source_set is not None and not source_set <= {"human", "scripted", "agent"}:
        raise ValueError(f"sources must be among human, scripted, agent; got {sorted(source_set)}")

    def keeps(episode: Episode) -> bool:
        meta = episode.meta
        return (
            (not success_only or episode.success)
            and (task_set is None or meta.task in task_set)
            and (source_set is None or meta.source in source_set)
            and (env_set is None or meta.env_id in env_set)
            and (where is None or where(episode))
        )

    return keeps


def _target(action: Mapping[str, Any], keep_reasoning: bool) -> str:
    data = Action.from_dict(dict(action)).to_dict()
    if not keep_reasoning:
        data.pop("reasoning", None)
    return json.dumps(data, ensure_ascii=False)


class _CharCounter:
    """Stands in for a backend when none is given: chars/4 tokens, text only."""

    multimodal = False

    @staticmethod
    def count_tokens(text: str) -> int:
        return (len(text) + 3) // 4


def episode_samples(
    episode: Episode,
    *,
    prompt: PromptConfig | Mapping[str, Any] | None = None,
    backend: Backend | None = None,
    keep_reasoning: bool = False,
) -> Iterator[Sample]:
    """The samples of one episode, in step order, with prompts built by
    ``prompt.build(..., backend=backend)`` (``backend`` gives the tokenizer and
    whether the screenshot is sent; ``None``: a chars/4 count, text only)."""
    recipe = PromptConfig.from_value(prompt)
    backend = _CharCounter() if backend is None else backend
    with_pixels = recipe.multimodal(backend)
    history: list[Step] = []
    outcome = episode.outcome
    for record in episode.steps:
        if record.action is None:
            continue
        obs = episode.observation(record.index, screenshot=with_pixels)
        action = Action.from_dict(dict(record.action))
        parse = (record.extras or {}).get("parse")
        step = replay_step(
            obs, action, parse=parse, guards=record.guards or (), env_error=record.error
        )
        if step.notes == ("parse_failure",):
            history.append(step)
            continue
        target = _target(record.action, keep_reasoning)
        built = recipe.build(obs, history, backend=backend, goal=episode.meta.goal)
        teacher = recipe.build(
            obs, history, backend=backend, goal=episode.meta.goal, demonstration=target
        )
        shot = record.observation.get("screenshot")
        yield Sample(
            messages=built.messages,
            teacher_messages=teacher.messages,
            target=target,
            demonstration=target,
            reward=record.reward,
            episode_return=0.0 if outcome is None else outcome.return_,
            success=None if outcome is None else outcome.success,
            source=episode.meta.source,
            task=episode.meta.task,
            env_id=episode.meta.env_id,
            seed=episode.meta.seed,
            episode_id=episode.meta.episode_id or episode.path.name,
            step=record.index,
            num_steps=len(episode.steps),
            prompt_version=built.version or PROMPT_VERSION,
            screenshot=str(episode.path / shot) if shot else None,
        )
        history.append(step)


def iter_samples(
    paths: Paths,
    *,
    success_only: bool = False,
    tasks: Iterable[str] | None = None,
    sources: Iterable[str] | None = None,
    env_ids: Iterable[str] | None = None,
    where: Callable[[Episode], bool] | None = None,
    prompt: PromptConfig | Mapping[str, Any] | None = None,
    backend: Backend | None = None,
    keep_reasoning: bool = False,
) -> Iterator[Sample]:
    """Every sample of every episode :func:`select_episodes` keeps."""
    for episode in select_episodes(
        paths, success_only=success_only, tasks=tasks, sources=sources, env_ids=env_ids, where=where
    ):
        yield from episode_samples(
            episode, prompt=prompt, backend=backend, keep_reasoning=keep_reasoning
        )


def to_hf_dataset(samples: Iterable[Sample]) -> Any:
    """A Hugging Face ``datasets.Dataset`` with one row per sample (:meth:`Sample.to_row`)."""
    try:
        import datasets
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            'learners.samples.to_hf_dataset needs the "datasets" package: pip install "browser-rl[train]"'
        ) from exc
    rows = [s.to_row() for s in samples]
    if not rows:
        raise ValueError("no samples: check the paths and filters")
    return datasets.Dataset.from_list(rows)


def action_matches(text: str, target: str) -> bool:
    """Whether the model output ``text`` parses to the target action JSON (reasoning ignored)."""
    from agents.parser import parse_action

    action = parse_action(text)
    if not hasattr(action, "to_dict"):
        return False
    got = {k: v for k, v in action.to_dict().items() if k != "reasoning"}
    return got == json.loads(target)


def check_episodes(cfg: LearnerConfig) -> None:
    """Raise ``ValueError`` (:func:`load_samples`' message) when ``cfg``'s filters
    keep no complete episode: from the episode files alone, so a learner refuses
    before its model loads. Whether a kept episode has a step to imitate needs
    the model's tokenizer; :func:`load_samples` finds that."""
    if not cfg.episodes:
        raise ValueError("no episodes given: set learner.episodes=[DIR, ...]")
    keeps = _filter(cfg.success_only, cfg.tasks, cfg.sources, None, None)
    if not any(keeps(e) for e in iter_episodes(cfg.episodes, check_files=False)):
        raise ValueError(_no_samples(cfg))


def load_samples(cfg: LearnerConfig, backend: Backend) -> list[Sample]:
    """The samples of ``cfg``'s episodes and filters, prompts measured with ``backend``."""
    if not cfg.episodes:
        raise ValueError("no episodes given: set learner.episodes=[DIR, ...]")
    samples = list(
        iter_samples(
            cfg.episodes,
            success_only=cfg.success_only,
            tasks=cfg.tasks,
            sources=cfg.sources,
            prompt=cfg.prompt,
            backend=backend,
        )
    )
    if not samples:
        raise ValueError(_no_samples(cfg))
    return samples


def _no_samples(cfg: LearnerConfig) -> str:
    """Why ``cfg``'s episodes gave no sample, from the episode files alone: none
    there, none complete, none the filters keep (and what the filters saw), or
    none with a step to imitate."""
    where = f"under learner.episodes={list(map(str, cfg.episodes))}"
    found = list(iter_episodes(cfg.episodes, include_incomplete=True, check_files=False))
    if not found:
        return f"no samples: no episodes {where} (an episode is a directory with episode.json)"
    complete = [e for e in found if e.complete]
    if not complete:
        return (
            f"no samples: {_n(len(found), 'episode')} {where}, none complete (crashed or cut off)"
        )
    filters = [
        f"learner.{key}={value}"
        for key, value in (("tasks", cfg.tasks), ("sources", cfg.sources))
        if value is not None
    ] + (["learner.success_only=true"] if cfg.success_only else [])
    keeps = _filter(cfg.success_only, cfg.tasks, cfg.sources, None, None)
    kept = sum(keeps(e) for e in complete)
    if kept:
        return (
            f"no samples: the filters ({', '.join(filters) or 'none'}) keep "
            f"{_n(kept, 'episode')} {where}, but none has a step to imitate (each action "
            "was invalid or its output did not parse)"
        )
    return (
        f"no samples: {_n(len(complete), 'complete episode')} {where}, none kept by "
        f"{', '.join(filters)}; tasks seen: {_counts(e.meta.task for e in complete)}; "
        f"sources seen: {_counts(e.meta.source for e in complete)}; "
        f"successful: {sum(e.success for e in complete)}"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _counts(values: Iterable[str], most: int = 20) -> str:
    """``"a (2), b (1)"``: each value and how often it came, at most ``most`` of them."""
    counts = sorted(collections.Counter(values).items())
    shown = ", ".join(f"{value} ({n})" for value, n in counts[:most])
    return shown + (f", ... ({len(counts) - most} more)" if len(counts) > most else "")


def sample_images(sample: Sample, backend: Backend) -> list[Image]:
    """The step's screenshot for multimodal backends (as the agent would send it)."""
    if not getattr(backend, "multimodal", False) or not sample.screenshot:
        return []
    from PIL import Image

    with Image.open(sample.screenshot) as image:
        return [image.convert("RGB")]


def data_info(cfg: LearnerConfig, samples: list[Sample]) -> dict[str, Any]:
    """What ``training.json`` records of the data a learner trained on."""
    return {
        "episodes": list(cfg.episodes),
        "num_samples": len(samples),
        "num_episodes": len({s.episode_id for s in samples}),
        "tasks": sorted({s.task for s in samples}),
        "sources": sorted({s.source for s in samples}),
        "success_only": cfg.success_only,
    }
