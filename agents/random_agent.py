"""A seeded random baseline that draws valid actions.

Verbs are drawn by ``weights``; element ids come from the current observation
(visible, enabled elements first; TYPE prefers text inputs) and only when the
observation has no elements from ``e1..e{max_element_id}``. NAVIGATE is off by
default since it leaves the task. The same seed gives the same actions for
the same observations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from browser_env.actions import Action, Verb

__all__ = ["DEFAULT_WEIGHTS", "RandomAgent"]

DEFAULT_WEIGHTS: dict[str, float] = {
    "CLICK": 6.0,
    "TYPE": 2.0,
    "PRESS_ENTER": 1.0,
    "SCROLL": 0.5,
    "WAIT": 0.25,
    "NAVIGATE": 0.0,
    "FINISH": 0.1,
}
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
_TEXT_ROLES = {"textbox", "searchbox", "combobox", "spinbutton"}
_TEXT_TAGS = {"input", "textarea"}


class RandomAgent:
    """Samples a valid action per observation. ``info`` is ``{"agent": "random"}``."""

    name = "random"

    def __init__(
        self,
        seed: int | None = 0,
        weights: Mapping[str, float] | None = None,
        max_element_id: int = 32,
        max_wait_ms: int = 50,
        urls: tuple[str, ...] = ("http://127.0.0.1:9/",),
    ) -> None:
        merged = {
            **DEFAULT_WEIGHTS,
            **{str(k).upper(): float(v) for k, v in (weights or {}).items()},
        }
        unknown = set(merged) - set(Verb.__members__)
        if unknown:
            raise ValueError(f"unknown verbs in weights: {sorted(unknown)}")
        if any(w < 0 for w in merged.values()) or sum(merged.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all zero")
        self.verbs = [Verb[k] for k in merged]
        total = sum(merged.values())
        self.probs = np.array([merged[v.value] / total for v in self.verbs])
        self.max_element_id = max_element_id
        self.max_wait_ms = max_wait_ms
        if isinstance(urls, str):  # tuple() would make each letter a URL
            raise ValueError(f"urls must be a list of URLs, not the string {urls!r}")
        self.urls = tuple(urls)
        self.goal = ""
        self._seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self, goal: str = "", *, seed: int | None = None) -> None:
        """Start an episode; a ``seed`` reseeds the generator."""
        self.goal = goal
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def close(self) -> None:
        """Nothing to release."""

    def act(self, obs: Mapping[str, Any]) -> tuple[Action, dict[str, Any]]:
        rng = self._rng
        elements = list(obs.get("elements") or ())
        usable = [e for e in elements if e.get("visible", 1) and e.get("enabled", 1)] or elements
        verb = self.verbs[int(rng.choice(len(self.verbs), p=self.probs))]

        def pick(candidates: list[Mapping[str, Any]]) -> str:
            if candidates:
                return str(candidates[int(rng.integers(len(candidates)))]["element_id"])
            return f"e{int(rng.integers(1, self.max_element_id + 1))}"

        text = " ".join(
            _WORDS[int(i)] for i in rng.integers(len(_WORDS), size=int(rng.integers(1, 3)))
        )
        if verb is Verb.CLICK:
            action = Action(verb, pick(usable))
        elif verb is Verb.TYPE:
            inputs = [
                e for e in usable if e.get("role") in _TEXT_ROLES or e.get("tag") in _TEXT_TAGS
            ]
            action = Action(verb, pick(inputs or usable), text)
        elif verb is Verb.PRESS_ENTER:
            action = Action(verb, pick(usable) if usable and rng.random() < 0.5 else None)
        elif verb is Verb.SCROLL:
            action = Action(verb, None, ("up", "down")[int(rng.integers(2))])
        elif verb is Verb.WAIT:
            action = Action(verb, None, str(int(rng.integers(0, self.max_wait_ms + 1))))
        elif verb is Verb.NAVIGATE:
            action = Action(verb, None, self.urls[int(rng.integers(len(self.urls)))])
        else:
            action = Action(verb, None, "")
        return action, {"agent": self.name}

    def fork(self) -> RandomAgent:
        """A new agent with the same settings and an episode state of its own."""
        twin = RandomAgent(
            seed=self._seed,
            max_element_id=self.max_element_id,
            max_wait_ms=self.max_wait_ms,
            urls=self.urls,
        )
        twin.verbs, twin.probs = list(self.verbs), self.probs.copy()
        return twin

    def act_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        agents: Sequence[RandomAgent] | None = None,
    ) -> list[tuple[Action, dict[str, Any]]]:
        """``agents[i].act(observations[i])`` for each i (no model to batch); rows
        that raise: :class:`agents.batch.RowErrors`."""
        from agents.batch import act_each

        return act_each(observations, [self] if agents is None else list(agents))
