"""Plain functions under the transformers backend (:mod:`agents.backends.transformers`).

The device and dtype a load resolves to, the end-of-turn ids a generation
stops at, and eval mode around a generation. None needs the backend itself;
``torch`` is passed in by the caller (or reached through the model), so
importing this module imports no heavy library.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["eos_ids", "eval_mode", "resolve_device", "resolve_dtype"]

_DTYPES = ("float32", "float16", "bfloat16")


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode for a generation, then back in the caller's mode.

    A learner may hand over a model left in train mode; dropout would then
    draw from torch's global generator and change the tokens. Sampling draws
    from the RowSampler's own generators, so with this nothing in a
    generation touches the global one (no ``fork_rng``: on CUDA it saves and
    restores the device's generator state every call)."""
    modes = [(m, m.training) for m in model.modules()]
    training = any(mode for _, mode in modes)
    if training:
        model.eval()
    try:
        yield
    finally:
        if training:
            for module, mode in modes:  # each its own: e.g. LoRA layers training, base not
                module.training = mode


def resolve_device(torch: Any, device: str) -> str:
    """``"auto"`` as CUDA when available, else CPU; ``ValueError`` for an
    unknown name or a CUDA device without CUDA."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or device.startswith("cuda"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available")
        return device
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def resolve_dtype(torch: Any, dtype: Any, device: str) -> Any:
    """The torch dtype for ``dtype`` (a torch dtype passes through): ``"auto"``
    is bfloat16 on CUDA where supported, float16 on older GPUs, float32 on CPU."""
    if not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {_DTYPES}, got {dtype!r}")
    return getattr(torch, dtype)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn ids: the generation config's, plus the tokenizer's EOS."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids if i is not None]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model has no end-of-sequence token; set generation_config")
    return ids
