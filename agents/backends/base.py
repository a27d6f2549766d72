"""The contract every inference backend meets.

A backend turns chat messages (and optional images) into text::

    backend.generate(messages, images=None, sampling=SamplingParams()) -> Generation

``messages`` are OpenAI-style dicts ``{"role": "system"|"user"|"assistant",
"content": str}``; ``images`` are PIL images or ``(H, W, 3)`` uint8 arrays that
belong to the last user message (backends that are not multimodal ignore them
and say so in ``Generation.info``). ``Generation.token_ids`` are the generated
token ids (empty when the server does not return them) and
``Generation.logprobs`` their log-probabilities (``None`` when unavailable).

``count_tokens(text)`` measures text with the backend's own tokenizer; the
prompt builder uses it to fit its budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Protocol, Self, runtime_checkable

__all__ = ["Backend", "BackendBase", "Generation", "Message", "SamplingParams"]

Message = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            # NaN compared false with 0 and passed: every backend then sampled from NaN scores
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:  # NaN too
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str
    token_ids: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """An inference engine. Implementations: transformers, mlx, openai, tensorrt."""

    name: str
    multimodal: bool

    def generate(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        sampling: SamplingParams | None = None,
    ) -> Generation: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


class BackendBase:
    """What the concrete backends share: ``close`` runs once, ``with`` closes.

    A subclass frees what it holds in ``_release`` (called by the first
    ``close`` only) and gets a ``count_tokens`` that uses its ``tokenizer``
    attribute unless it defines its own.
    """

    _closed: bool = False
    tokenizer: Any = None

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        """Release the backend's resources; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        """Free models, clients and files; called once, by the first ``close``."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
