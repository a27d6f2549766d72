"""The agent's own record of what it did: one :class:`Step` per action.

Shared by the agent, its guards and the prompt builder (which renders the
recent history), so it lives apart from all three.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from browser_env.actions import Action
from browser_env.observation import render_element

__all__ = ["History", "Step", "describe_element"]


@dataclasses.dataclass
class Step:
    """One action the agent took: ``action`` (what ran), ``element`` (the
    targeted element as rendered at the time), ``error`` ("" when it ran
    cleanly), ``proposed`` (the model's action before guards) and ``notes``
    (names of guards that fired, or ``"parse_failure"``)."""

    action: Action
    element: str = ""
    error: str = ""
    proposed: Action | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.to_dict(),
            "element": self.element,
            "error": self.error,
            "proposed": None if self.proposed is None else self.proposed.to_dict(),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        proposed = data.get("proposed")
        return cls(
            action=Action.from_dict(dict(data["action"])),
            element=str(data.get("element", "")),
            error=str(data.get("error", "")),
            proposed=None if proposed is None else Action.from_dict(dict(proposed)),
            notes=tuple(data.get("notes", ())),
        )


class History(Sequence[Step]):
    """The agent's steps in an episode, oldest first."""

    def __init__(self, steps: Sequence[Step] = ()) -> None:
        self._steps: list[Step] = list(steps)

    def append(self, step: Step) -> None:
        self._steps.append(step)

    def clear(self) -> None:
        self._steps.clear()

    def record_error(self, error: str) -> None:
        """Attach an env-reported error to the last step (keeping any error the
        agent already recorded)."""
        if not self._steps or not error:
            return
        last = self._steps[-1]
        last.error = f"{last.error}; {error}" if last.error and error != last.error else error

    def __getitem__(self, index):  # type: ignore[override]
        return self._steps[index]

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self._steps)

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self._steps]


def describe_element(obs: Mapping[str, Any], element_id: str | None) -> str:
    """The rendered element with ``element_id`` in ``obs``, or "" if absent."""
    if element_id is None:
        return ""
    for element in obs.get("elements") or ():
        if str(element["element_id"]) == element_id:
            return render_element(element)
    return ""
