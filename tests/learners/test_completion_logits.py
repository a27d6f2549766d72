"""learners.trainable.completion_logits: only the completion's positions go through the
LM head (``logits_to_keep``), and they equal the rows of the full forward pass."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("kind", ["text", "vlm"])
def test_kept_logits_equal_the_full_forward(kind, monkeypatch):
    import numpy as np
    import torch

    from agents.backends.transformers import TransformersBackend
    from agents.tiny import tiny_model_path
    from learners import trainable as policy

    backend = TransformersBackend(str(tiny_model_path(kind)), device="cpu", dtype="float32")
    assert policy._takes_logits_to_keep(backend.model)
    messages = [{"role": "user", "content": 'Click on the "ONE" button. [e1] button ONE'}]
    images = [np.zeros((32, 32, 3), dtype=np.uint8)] if kind == "vlm" else None
    completion = backend.tokenizer.encode('{"action": "CLICK"}', add_special_tokens=False)
    kept = policy.completion_logits(backend, messages, images, completion)
    monkeypatch.setattr(policy, "_takes_logits_to_keep", lambda model: False)
    full = policy.completion_logits(backend, messages, images, completion)
    assert kept.shape == full.shape == (len(completion), full.shape[-1])
    torch.testing.assert_close(kept, full)
