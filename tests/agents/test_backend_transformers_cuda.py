"""The transformers backend on a CUDA device (tier ``gpu``).

The backend contract on the tiny text and vision models; ``prefill="auto"``
left-pads a batch there and gives the tokens a per-row prefill (with the
prefix cache) gives, which are the CPU's; ``dtype="auto"`` is bfloat16.
"""

from __future__ import annotations

import math

import pytest
from backend_contract import MESSAGES, BackendContract, tiny_path

from agents.backends.base import SamplingParams
from agents.backends.common import is_available


def _cuda() -> bool:
    return is_available("torch") and __import__("torch").cuda.is_available()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (is_available("torch") and is_available("transformers")),
        reason='needs the train extra: pip install "browser-rl[train]"',
    ),
    pytest.mark.skipif(not _cuda(), reason="needs a CUDA device"),
]

#: prompts of different lengths that share their system message, as a rollout's do
BATCH = [
    MESSAGES,
    [MESSAGES[0], {"role": "user", "content": 'Goal: type "hi".\n[e1] textbox "Name"'}],
    [MESSAGES[0], {"role": "user", "content": "Goal: scroll down."}],
]


def _backend(kind: str = "text", device: str = "cuda", **kwargs):
    from agents.backends.transformers import TransformersBackend

    return TransformersBackend(tiny_path(kind), device=device, **{"dtype": "float32", **kwargs})


class TestTransformersCuda(BackendContract):
    def make_backend(self):
        return _backend("text")

    def test_model_is_on_the_device(self, backend):
        import torch

        assert backend.model.device.type == "cuda"
        assert backend.dtype == torch.float32
        assert backend.prefill == "padded"  # prefill="auto" splits rows on CPU only


class TestTransformersCudaVLM(BackendContract):
    def make_backend(self):
        return _backend("vlm")


def test_cuda_greedy_tokens_equal_the_cpus_alone_batched_and_per_row():
    sampling = SamplingParams(max_new_tokens=12)
    cpu = _backend(device="cpu")
    padded = _backend()
    per_row = _backend(prefill="per_row", prefix_cache=4)
    try:
        want = [cpu.generate(m, sampling=sampling).token_ids for m in BATCH]
        assert [padded.generate(m, sampling=sampling).token_ids for m in BATCH] == want
        gens = padded.generate_batch(BATCH, sampling=sampling)
        assert [g.token_ids for g in gens] == want
        assert {g.info["prefill"] for g in gens} == {"padded"}
        for _ in range(2):  # the second time from the prefix cache
            gens = per_row.generate_batch(BATCH, sampling=sampling)
            assert [g.token_ids for g in gens] == want
            assert {g.info["prefill"] for g in gens} == {"per_row"}
        assert len(per_row.prefix_cache) > 0
    finally:
        for backend in (cpu, padded, per_row):
            backend.close()


def test_auto_dtype_on_cuda_is_bfloat16_and_generates():
    import torch

    backend = _backend(dtype="auto")
    try:
        assert backend.dtype == (
            torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        )
        assert next(backend.model.parameters()).dtype == backend.dtype
        gen = backend.generate(MESSAGES, sampling=SamplingParams(max_new_tokens=8))
        assert gen.token_ids and len(gen.logprobs) == len(gen.token_ids)
        assert all(math.isfinite(lp) and lp <= 0 for lp in gen.logprobs)
        gens = backend.generate_batch(BATCH, sampling=SamplingParams(max_new_tokens=8))
        assert len(gens) == len(BATCH) and all(g.token_ids for g in gens)
    finally:
        backend.close()
