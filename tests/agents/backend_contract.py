"""The contract every inference backend meets, as a test mixin (dm_env's EnvironmentTestMixin style).

A backend's test module subclasses :class:`BackendContract` and implements
``make_backend()``; the mixin's tests then run against that backend::

    class TestMyBackend(BackendContract):
        def make_backend(self):
            return MyBackend(...)

Class attributes let a backend declare what it cannot do (``supports_seed``,
``returns_token_ids``); everything else is required of all backends.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest

from agents.backends.base import Backend, Generation, SamplingParams

REPO_ROOT = Path(__file__).resolve().parents[2]

MESSAGES = [
    {"role": "system", "content": "You control a web browser. Answer with one JSON action."},
    {"role": "user", "content": 'Goal: click the button "Submit".\n[e1] button "Submit"'},
]


def tiny_cache_dir() -> Path:
    """Where tests cache tiny models: ``$BROWSER_RL_CACHE`` or the repo's ignored ``.cache/``."""
    root = os.environ.get("BROWSER_RL_CACHE")
    return Path(root) / "tiny-models" if root else REPO_ROOT / ".cache" / "tiny-models"


def tiny_path(kind: str = "text", **overrides: Any) -> Path:
    from agents.tiny import tiny_model_path

    return tiny_model_path(kind, cache_dir=tiny_cache_dir(), **overrides)


def screenshot(seed: int = 0, height: int = 48, width: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class BackendContract:
    """Tests every ``Backend`` must pass. Subclasses implement :meth:`make_backend`."""

    #: Same ``SamplingParams.seed`` gives the same sampled output.
    supports_seed: bool = True
    #: ``Generation.token_ids`` is filled in.
    returns_token_ids: bool = True

    def make_backend(self) -> Backend:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        backend = cls().make_backend()
        yield backend
        backend.close()

    def generate(self, backend: Backend, **kwargs: Any) -> Generation:
        sampling = SamplingParams(**{"max_new_tokens": 8, **kwargs})
        return backend.generate(MESSAGES, sampling=sampling)

    # -- the protocol -------------------------------------------------------

    def test_is_a_backend(self, backend):
        assert isinstance(backend, Backend)
        assert isinstance(backend.name, str) and backend.name
        assert isinstance(backend.multimodal, bool)

    def test_generate_returns_a_generation(self, backend):
        gen = self.generate(backend)
        assert isinstance(gen, Generation)
        assert isinstance(gen.text, str)
        assert isinstance(gen.info, dict)
        assert all(isinstance(t, int) for t in gen.token_ids)
        if self.returns_token_ids:
            assert gen.token_ids, "token_ids must be returned"

    def test_max_new_tokens_is_respected(self, backend):
        for n in (1, 5):
            gen = self.generate(backend, max_new_tokens=n)
            assert len(gen.token_ids) <= n
            if self.returns_token_ids:
                assert len(gen.token_ids) >= 1

    def test_generate_batch_equals_generate_greedy(self, backend):
        sampling = SamplingParams(max_new_tokens=6)
        batch = [MESSAGES, [{"role": "user", "content": "a shorter prompt"}]]
        together = backend.generate_batch(batch, sampling=sampling)
        assert len(together) == 2
        for messages, got in zip(batch, together, strict=True):
            alone = backend.generate(messages, sampling=sampling)
            assert got.text == alone.text and got.token_ids == alone.token_ids

    def test_an_empty_batch_is_an_empty_list(self, backend):
        assert backend.generate_batch([], sampling=SamplingParams(max_new_tokens=4)) == []

    def test_logprobs_match_tokens(self, backend):
        gen = self.generate(backend)
        if gen.logprobs is None:
            return
        if gen.token_ids:
            assert len(gen.logprobs) == len(gen.token_ids)
        assert all(math.isfinite(lp) and lp <= 1e-5 for lp in gen.logprobs)

    def test_greedy_is_deterministic(self, backend):
        first, second = self.generate(backend), self.generate(backend)
        assert first.text == second.text
        assert first.token_ids == second.token_ids

    def test_seeded_sampling_is_reproducible(self, backend):
        if not self.supports_seed:
            pytest.skip(f"{type(self).__name__} declares no seeded sampling")
        a = self.generate(backend, temperature=1.0, seed=7, max_new_tokens=12)
        b = self.generate(backend, temperature=1.0, seed=7, max_new_tokens=12)
        assert a.text == b.text and a.token_ids == b.token_ids

    def test_seeded_rows_of_a_batch_sample_what_they_sample_alone(self, backend):
        """Each row draws from a stream of its own: a seeded request's tokens do
        not depend on the rows it is batched with (``runner=vector`` samples what
        ``runner=local`` samples; the server batches seeded requests)."""
        if not self.supports_seed:
            pytest.skip(f"{type(self).__name__} declares no seeded sampling")
        short = [{"role": "user", "content": "a shorter prompt"}]
        batch = [MESSAGES, short, MESSAGES, short]
        # rows sharing a seed still draw from streams of their own
        rows = [SamplingParams(max_new_tokens=10, temperature=1.0, seed=s) for s in (7, 7, 9, 7)]
        together = backend.generate_batch(batch, sampling=rows)
        alone = [backend.generate(m, sampling=r) for m, r in zip(batch, rows, strict=True)]
        assert [g.token_ids for g in together] == [g.token_ids for g in alone]
        assert [g.text for g in together] == [g.text for g in alone]
        assert together[0].token_ids != together[2].token_ids  # same prompt, other seed
        assert together[1].token_ids == together[3].token_ids  # same prompt, same seed
        with pytest.raises(ValueError, match="differ in their sampling seed only"):
            backend.generate_batch(batch[:2], sampling=[rows[0], SamplingParams(temperature=0.5)])

    def test_unseeded_sampling_differs_call_to_call(self, backend):
        if not self.supports_seed:
            pytest.skip(f"{type(self).__name__} declares no seeded sampling")
        draws = {tuple(self.generate(backend, temperature=1.0).token_ids) for _ in range(4)}
        assert len(draws) > 1  # the tiny random model is near uniform: 4 equal draws never happen

    def test_stop_string_cuts_the_text(self, backend):
        full = self.generate(backend, max_new_tokens=12).text
        candidates = [c for c in full[1:] if c.isascii() and c.isprintable()] or [
            c for c in full if c.isascii()
        ]
        if not candidates:
            pytest.skip(f"greedy output {full!r} has no ASCII character to stop on")
        stop = candidates[len(candidates) // 2]
        cut = self.generate(backend, max_new_tokens=12, stop=(stop,))
        assert stop not in cut.text
        assert cut.text == full[: full.index(stop)]

    def test_count_tokens(self, backend):
        assert backend.count_tokens("") == 0
        short = backend.count_tokens('{"action": "CLICK", "element_id": "e1"}')
        assert short > 0
        assert backend.count_tokens('{"action": "CLICK", "element_id": "e1"}' * 10) > short

    def test_images(self, backend):
        from PIL import Image

        images = [screenshot(0), Image.fromarray(screenshot(1))]
        gen = backend.generate(MESSAGES, images=images, sampling=SamplingParams(max_new_tokens=4))
        assert isinstance(gen.text, str)
        if backend.multimodal:
            assert "images_ignored" not in gen.info
        else:
            assert gen.info.get("images_ignored") == 2

    def test_rejects_bad_messages(self, backend):
        with pytest.raises(ValueError):
            backend.generate([])
        with pytest.raises(ValueError):
            backend.generate([{"role": "wizard", "content": "hi"}])

    def test_close_is_safe_twice(self):
        backend = self.make_backend()
        backend.close()
        backend.close()
