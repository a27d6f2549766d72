"""Batched generation without a padded prefill: each prompt is prefilled on its own
tokens, and the caches are merged, left-padded, for one batched decode.

``generate`` on a left-padded batch prefills ``batch x longest`` tokens, with
an attention mask over the padding. Rollout prompts in one batch differ in
length (an episode's history grows: 560 to 850 tokens for the tiny policy on
click-checkboxes), so on a CPU, where prefill is compute-bound, a padded batch
spends much of its time on tokens that are thrown away. Here each row's
prompt but its last token runs through the model alone (no padding, no mask;
the tokens all rows begin with, the system prompt, are computed once and their
cache copied to every row), the per-row caches are copied right-aligned into
one cache (a ``StaticCache`` with room for the new tokens when the backend
says how many, see :func:`prefill_rows`), and ``generate`` continues from it
with the left-padded ids and mask: it computes only the last prompt token of
each row, then decodes the batch together as before. Positions come from the
mask (``generate`` derives ``position_ids`` from it), so each row sees exactly
the positions it has alone; greedy output is the unbatched output (tested),
logits agree to float rounding. Measured on this 2-core machine (8 rollout prompts of 556-845
tokens, tiny policy): 163 ms a batch against 204 ms padded and 290 ms one
prompt at a time.

On a GPU a padded prefill runs the rows in parallel, so ``prefill="auto"``
picks this only on CPU: on an H200, the same recorded rollout batches ran at
111 decisions/s padded against 92 per row with the prefix cache
(``python -m benchmarks.policy_batching``; docs/rollouts.md, *Measured*). Only models whose cache
is full attention in every layer (``DynamicLayer``; no sliding window, no
linear-attention or quantised layers) are merged this way; for any other
:func:`supported` is False and the caller uses the padded batch.

Written here, not taken from transformers: ``generate`` takes a prefilled
cache (``past_key_values``) but has no per-row prefill for a batch; this
module only builds that cache and leaves decoding to ``generate``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

from agents.backends.prefix_cache import PrefixCache, shared_length

__all__ = ["PREFILL_MODES", "left_padded", "prefill_rows", "supported"]

PREFILL_MODES = ("auto", "per_row", "padded")


def _base(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (itself otherwise)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def supported(model: Any) -> bool:
    """Whether ``model``'s cache is plain full attention in every layer."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = getattr(_base(model), "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    try:
        cache = DynamicCache(config=config)
    except Exception:  # noqa: BLE001 - a config DynamicCache cannot lay out
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def prefill_rows(
    model: Any,
    rows: Sequence[Sequence[int]],
    pad_id: int,
    *,
    max_new_tokens: int | None = None,
    pool: PrefixCache | None = None,
) -> dict[str, Any]:
    """``generate`` keyword arguments for ``rows`` (token ids, at least one each):
    ``input_ids`` and ``attention_mask`` (left-padded to the longest row) and
    ``past_key_values``, a cache holding every row's prompt but its last token.

    With ``max_new_tokens``, that cache is a ``StaticCache`` with room for the
    longest row and that many new tokens: each decoding step then writes its
    keys in place, where a ``DynamicCache`` concatenates (copies) the batch's
    whole cache every step; measured here, 8 rows of 560-920 tokens and 16 new
    tokens decode in 61 ms against 76 ms. Pass ``disable_compile=True`` to
    ``generate`` with it: on an accelerator ``generate`` otherwise compiles the
    model for a static cache, once per cache length, and the length here
    changes with every batch.

    With ``pool`` (checked against the model's weights by the caller), a row
    starts from the cached prompt it shares the most with (see
    :mod:`agents.backends.prefix_cache`) and its cache goes back into the pool.

    Call inside ``torch.inference_mode()`` (and any adapter context the
    generation uses); the caller checks :func:`supported` first.
    """
    import torch
    from transformers import DynamicCache, StaticCache

    if not rows or min(len(r) for r in rows) < 1:
        raise ValueError("every row needs at least one token")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    base = _base(model)
    device = base.device
    width = max(len(r) for r in rows)
    extra = {"logits_to_keep": 1} if _takes_logits_to_keep(base) else {}
    # The tokens every row starts with (a system prompt) are computed once.
    shared = min(_common_prefix(rows), min(len(r) for r in rows) - 1) if len(rows) > 1 else 0
    # A row starts from the pool's entry when it shares more than the batch's
    # prefix with one, else from the prefix (computed once), else from nothing.
    taken = [
        pool.take(ids[:-1], at_least=shared) if pool is not None and len(ids) > 1 else None
        for ids in rows
    ]
    prefix = None
    if shared and any(hit is None and len(ids) > 1 for hit, ids in zip(taken, rows, strict=True)):
        prefix = DynamicCache(config=base.config)
        model(
            input_ids=torch.tensor([list(rows[0][:shared])], device=device),
            past_key_values=prefix,
            use_cache=True,
            **extra,
        )
    per_row = []
    for ids, hit in zip(rows, taken, strict=True):
        if len(ids) == 1:
            per_row.append(None)  # nothing before the last token
            continue
        if hit is not None:
            cache, start = hit
        elif prefix is not None:
            cache, start = copy.deepcopy(prefix), shared
        else:
            cache, start = DynamicCache(config=base.config), 0
        if start < len(ids) - 1:
            model(
                input_ids=torch.tensor([list(ids[start:-1])], device=device),
                past_key_values=cache,
                use_cache=True,
                **extra,
            )
        per_row.append(cache)
    merged = (
        DynamicCache(config=base.config)
        if max_new_tokens is None
        else StaticCache(config=base.config, max_cache_len=width + max_new_tokens)
    )
    template = next((c for c in per_row if c is not None), None)
    if template is not None:
        for layer_idx, layer in enumerate(template.layers):
            keys = layer.keys.new_zeros(
                (len(rows), layer.keys.shape[1], width - 1, layer.keys.shape[3])
            )
            values = layer.values.new_zeros(
                (len(rows), layer.values.shape[1], width - 1, layer.values.shape[3])
            )
            for row, (ids, cache) in enumerate(zip(rows, per_row, strict=True)):
                if cache is not None:
                    pad = width - len(ids)
                    keys[row, :, pad:] = cache.layers[layer_idx].keys[0]
                    values[row, :, pad:] = cache.layers[layer_idx].values[0]
            merged.update(keys, values, layer_idx)
    if pool is not None:  # the merged cache is a copy: the rows' own stay as they are
        for ids, cache in zip(rows, per_row, strict=True):
            if cache is not None:
                pool.put(ids[:-1], cache)
    kwargs = left_padded(rows, pad_id, device)
    if template is not None:
        kwargs["past_key_values"] = merged
    return kwargs


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> dict[str, Any]:
    """``input_ids`` and ``attention_mask`` of ``rows``, left-padded to the longest."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return {"input_ids": ids, "attention_mask": mask}


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``rows`` share."""
    return min(shared_length(rows[0], r) for r in rows)


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward can skip the LM head on all but the last position."""
    try:
        return "logits_to_keep" in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return False
