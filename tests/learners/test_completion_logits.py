"""learners.trainable.completion_logits: only the completion's positions go through the
LM head (``logits_to_keep``), they equal the rows of the full forward pass, and they
score a generated completion as ``generate`` did (every tiny architecture, Qwen2-VL's
per-token ``mm_token_type_ids`` included)."""

from __future__ import annotations

import pytest

ARCHS = [("text", "llama"), ("vlm", "llama"), ("vlm", "qwen2")]


@pytest.mark.parametrize(("kind", "arch"), ARCHS)
def test_kept_logits_equal_the_full_forward(kind, arch, monkeypatch):
    import numpy as np
    import torch

    from agents.backends.transformers import TransformersBackend
    from agents.tiny import tiny_model_path
    from learners import trainable as policy

    backend = TransformersBackend(
        str(tiny_model_path(kind, arch=arch)), device="cpu", dtype="float32"
    )
    assert policy._takes_logits_to_keep(backend.model)
    messages = [{"role": "user", "content": 'Click on the "ONE" button. [e1] button ONE'}]
    images = [np.zeros((32, 32, 3), dtype=np.uint8)] if kind == "vlm" else None
    completion = backend.tokenizer.encode('{"action": "CLICK"}', add_special_tokens=False)
    kept = policy.completion_logits(backend, messages, images, completion)
    monkeypatch.setattr(policy, "_takes_logits_to_keep", lambda model: False)
    full = policy.completion_logits(backend, messages, images, completion)
    assert kept.shape == full.shape == (len(completion), full.shape[-1])
    torch.testing.assert_close(kept, full)


@pytest.mark.parametrize(("kind", "arch"), ARCHS)
def test_completion_log_probs_equal_the_generations(kind, arch):
    """The log-probs a learner computes for a sampled completion are those that
    ``generate`` reported for it: the prompt's per-token inputs (``attention_mask``,
    Qwen2-VL's ``mm_token_type_ids``) are extended over the completion as
    ``generate`` extends them."""
    import numpy as np
    import torch

    from agents.backends.base import SamplingParams
    from agents.backends.transformers import TransformersBackend
    from agents.tiny import tiny_model_path
    from learners.trainable import completion_logits

    backend = TransformersBackend(
        str(tiny_model_path(kind, arch=arch)), device="cpu", dtype="float32"
    )
    messages = [{"role": "user", "content": 'Click on the "ONE" button. [e1] button ONE'}]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)] if kind == "vlm" else None
    gen = backend.generate(messages, images, SamplingParams(max_new_tokens=6))
    assert gen.token_ids and gen.logprobs
    with torch.no_grad():
        logits = completion_logits(backend, messages, images, gen.token_ids)
    ids = torch.as_tensor(gen.token_ids)
    logps = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, None])[:, 0]
    torch.testing.assert_close(logps, torch.tensor(gen.logprobs), atol=1e-4, rtol=0)
