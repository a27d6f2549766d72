"""Sampling with a random stream per row: a seeded row draws what it draws alone.

Hugging Face's ``generate(do_sample=True)`` draws every row of a batch from
torch's one global generator: a seed can only be set for the whole batch,
and a row's tokens depend on the rows beside it. :class:`RowSampler` is a
logits processor that does the drawing itself, each row from its own
``torch.Generator`` (seeded with the row's seed), after temperature and
top-p (applied to the scores ``generate``'s own processors leave, e.g. a
repetition penalty set in the model's ``generation_config``; no top-k, as in
the OpenAI API), and leaves only the drawn token possible; ``generate`` then runs
greedy (``do_sample=False``) and keeps it. So a seeded row gives, in any
batch, the tokens it gives alone (up to the float rounding of a batch's
logits, as for greedy rows), which lets ``runner=vector`` sample what
``runner=local`` samples and the OpenAI-compatible server batch seeded
requests. Written here because ``generate`` has no per-row generators.

A row without a seed gets a fresh one from the operating system's random
source, so unseeded calls differ from each other (torch's global generator
is not used, nor changed).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

__all__ = ["RowSampler", "row_seeds"]


def row_seeds(seeds: Sequence[int | None]) -> list[int]:
    """``seeds`` with each ``None`` replaced by a fresh random 63-bit seed."""
    return [secrets.randbits(63) if seed is None else int(seed) for seed in seeds]


class RowSampler:
    """A ``generate`` logits processor drawing row ``i``'s next token from
    ``softmax(top_p(scores / temperature))`` with ``torch.Generator`` seeded
    ``seeds[i]``; returns scores that allow only the drawn tokens."""

    def __init__(self, seeds: Sequence[int | None], temperature: float, top_p: float) -> None:
        if temperature <= 0:
            raise ValueError("RowSampler is for temperature > 0; greedy needs no sampler")
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.seeds = row_seeds(seeds)
        self.generators: list[Any] = []  # made at the first call, on the scores' device

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if scores.shape[0] != len(self.seeds):
            raise ValueError(f"{len(self.seeds)} row seeds for {scores.shape[0]} rows")
        if not self.generators:
            self.generators = [
                torch.Generator(device=scores.device).manual_seed(seed) for seed in self.seeds
            ]
        logits = scores.float() / self.temperature
        if self.top_p < 1:  # keep the most likely tokens whose mass before them is < top_p
            ordered, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(ordered, dim=-1)
            ordered = ordered.masked_fill(probs.cumsum(dim=-1) - probs >= self.top_p, -torch.inf)
            logits = torch.full_like(logits, -torch.inf).scatter(-1, order, ordered)
        probs = torch.softmax(logits, dim=-1)
        drawn = torch.cat(
            [
                torch.multinomial(row, 1, generator=gen)
                for row, gen in zip(probs, self.generators, strict=True)
            ]
        )
        only = torch.full_like(scores, -torch.inf)
        return only.scatter(-1, drawn.unsqueeze(-1), 0.0)
