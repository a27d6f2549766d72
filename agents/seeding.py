"""Seeds derived from a base seed and indices: one formula for agents and learners.

``derive_seed(seed, step)`` gives the sampling seed of an agent's step in an
episode seeded ``seed``; learners derive their per-step data-order and
sampling seeds the same way (``derive_seed(cfg.seed, step, i)``). Every
combination of parts gives a distinct, well-mixed 31-bit seed (NumPy's
``SeedSequence`` hashing), so neighbouring steps, samples and episodes never
share a random stream -- a backend that re-seeds before every generation
would otherwise draw the same numbers at every step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(seed: int, *parts: int) -> int:
    """A seed in ``[0, 2**31)`` determined by ``seed`` and ``parts`` (all ints >= 0)."""
    entropy = [int(seed), *map(int, parts)]
    if any(p < 0 for p in entropy):
        raise ValueError(f"seed parts must be >= 0, got {entropy}")
    # The count goes first: SeedSequence ignores trailing zeros, so (s, 1) and
    # (s, 1, 0) would otherwise collide.
    state = np.random.SeedSequence([len(entropy), *entropy]).generate_state(1)[0]
    return int(state >> 1)
