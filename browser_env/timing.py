"""Per-step wall-clock timings, as carried in ``info["timings"]``.

A read-only mapping of phase name -> milliseconds (``action``, ``validate``,
``observation``, ``screenshot``, ``setup``, ``total``). Two ``Timings``
compare equal when they measured the same phases, whatever the durations:
timings describe the machine, not the environment's state, so a
determinism check (Gymnasium's ``check_env`` compares step infos) must not
see two identical steps as different because one took a millisecond longer.
Use ``dict(timings)`` for the numbers, e.g. to write JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["Timings"]


class Timings(Mapping[str, float]):
    __slots__ = ("_ms",)

    def __init__(self, ms: Mapping[str, float]) -> None:
        self._ms = {k: float(v) for k, v in ms.items()}

    def __getitem__(self, key: str) -> float:
        return self._ms[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ms)

    def __len__(self) -> int:
        return len(self._ms)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Timings):
            return self._ms.keys() == other._ms.keys()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.1f}ms" for k, v in self._ms.items())
        return f"Timings({inner})"
