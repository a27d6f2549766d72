"""``act_batch``'s contract for rows that raise.

``leader.act_batch(observations, agents)`` decides for several episodes at
once (one per fork, see :meth:`agents.agent.LLMAgent.fork`). A failure of the
batch as a whole (the model call) raises as any exception does. A failure of
one row (its prompt could not be built, its agent's own ``act`` raised) must
not take the other episodes with it: the rows that did decide have moved
their agents on (history, plan), so deciding for them again would record a
step twice. Such a batch raises :class:`RowErrors`, which carries every row's
decision or exception; a runner that records errors fails the episodes of the
rows that raised and steps the others (``agents.runners.vector``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from browser_env.actions import Action

__all__ = ["Decision", "RowErrors", "act_each", "check_rows", "each_row", "raise_row_errors"]

Decision = tuple[Action, dict[str, Any]]


class RowErrors(Exception):
    """Some rows of an ``act_batch`` raised. ``results[i]`` is row ``i``'s
    decision, or the exception it raised (:attr:`errors`, by row)."""

    def __init__(self, results: Sequence[Decision | Exception]) -> None:
        self.results = list(results)
        self.errors = {i: r for i, r in enumerate(self.results) if isinstance(r, Exception)}
        shown = "; ".join(
            f"row {i}: {type(e).__name__}: {e}" for i, e in list(self.errors.items())[:3]
        )
        more = f" (and {len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
        super().__init__(f"{len(self.errors)} of {len(self.results)} rows raised: {shown}{more}")


def check_rows(observations: Sequence[Any], agents: Sequence[Any]) -> None:
    """``ValueError`` unless there is one agent per observation."""
    if len(agents) != len(observations):
        raise ValueError(f"{len(observations)} observations for {len(agents)} agents")


def raise_row_errors(results: Sequence[Decision | Exception]) -> list[Decision]:
    """``results`` as decisions, or :class:`RowErrors` (from the first row's
    exception) when any row raised."""
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise RowErrors(results) from errors[0]
    return list(results)  # type: ignore[arg-type]


def each_row(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Each call's result, or the ``Exception`` it raised (a row's own failure)."""
    out: list[Any] = []
    for call in calls:
        try:
            out.append(call())
        except Exception as exc:  # noqa: BLE001 - handed back for its row
            out.append(exc)
    return out


def act_each(observations: Sequence[Mapping[str, Any]], agents: Sequence[Any]) -> list[Decision]:
    """``agents[i].act(observations[i])`` for each row, for agents with no model
    to batch; a row that raises does not stop the others (:class:`RowErrors`)."""
    check_rows(observations, agents)
    return raise_row_errors(
        each_row([lambda a=a, o=o: a.act(o) for a, o in zip(agents, observations, strict=True)])
    )
