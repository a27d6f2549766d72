"""What the learning study measures (:mod:`learners.study`): first-action
accuracy with Wilson intervals, the perplexity of a fixed text, and a
learner's peak memory."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["FIXED_TEXT", "PeakMemory", "first_action_accuracy", "perplexity", "wilson"]

#: A fixed text whose perplexity measures forgetting of general language.
FIXED_TEXT = (
    "The library opens at nine in the morning and closes at six in the evening. "
    "Visitors may borrow up to five books at a time for three weeks. Children's "
    "books are on the ground floor, and the reading room is upstairs, next to the "
    "computers. Please return books to the desk by the entrance."
)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def first_action_accuracy(
    backend: Any,
    samples: Iterable[Any],
    *,
    teacher: bool = False,
    max_new_tokens: int = 40,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Greedy first actions of ``samples`` (student prompts, or teacher prompts
    with the expert's action in context) scored against the expert's."""
    from tqdm.auto import tqdm

    from agents.backends.base import SamplingParams
    from learners.samples import action_matches, sample_images

    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    samples = list(samples)
    right = n = 0
    with tqdm(total=len(samples), desc="teacher" if teacher else "student", leave=False) as bar:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            # greedy batched == unbatched (the backend contract), so the batch
            # changes only the speed: one forward pass per token for the chunk
            gens = backend.generate_batch(
                [s.teacher_messages if teacher else s.messages for s in chunk],
                [sample_images(s, backend) or None for s in chunk],
                sampling,
            )
            for sample, gen in zip(chunk, gens, strict=True):
                right += action_matches(gen.text, sample.target)
                n += 1
            bar.update(len(chunk))
    low, high = wilson(right, n)
    return {"accuracy": right / max(n, 1), "correct": right, "n": n, "ci95": [low, high]}


def perplexity(backend: Any, text: str = FIXED_TEXT) -> float:
    """exp(mean next-token NLL) of ``text`` under the backend's model."""
    import torch

    ids = backend.tokenizer(text, return_tensors="pt")["input_ids"].to(backend.model.device)
    with torch.no_grad():
        loss = backend.model(input_ids=ids, labels=ids).loss
    return float(torch.exp(loss))


class PeakMemory:
    """Peak resident memory (MiB) of this process while the block runs (CUDA:
    peak allocated), sampled every 50 ms: a learner's footprint, model included."""

    def __enter__(self) -> PeakMemory:
        import psutil

        self.peak = 0.0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._cuda = False
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
                self._cuda = True
        except ModuleNotFoundError:
            pass
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss / 2**20)
            self._stop.wait(0.05)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if self._cuda:
            import torch

            self.peak = torch.cuda.max_memory_allocated() / 2**20
