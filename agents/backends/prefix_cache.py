"""Recent prompts' KV caches, kept so that the next prompt that begins the same
way only computes what is new (``TransformersBackend(prefix_cache=N)``).

An agent's consecutive prompts in an episode share their beginning: the
format block, the goal, the rules and the history so far (on click-checkboxes,
~470-570 of a ~700-800-token prompt for the tiny policy); only the newest
history line, the elements and the page text change. :class:`PrefixCache`
holds the caches of the last ``capacity`` prompts (each without its last token,
the form :func:`agents.backends.row_prefill.prefill_rows` builds); a new
prompt takes the entry it shares the longest beginning with, crops it to that
beginning and runs only the rest through the model. This is vLLM's automatic
prefix caching in small: per whole prompt rather than per block, for one
process's ``DynamicCache`` objects.

Stale entries are the danger: a cache computed under other weights gives
other outputs. Every lookup passes a key of the weights as they are now, and
a different key empties the pool. :func:`weights_key` covers in-place
training: every parameter's storage address and version counter (an
optimiser step with the default or ``foreach`` implementation,
``load_state_dict``, ``param.copy_``/``param.add_`` under ``no_grad`` bump
the counter; assigning ``param.data`` changes the address). So a learner that trains the
backend's own model between rollouts never sees an entry from before its
step. Which loaded adapter runs (or none: adapters bypassed) is an entry's
tag (:func:`adapter_tag`) rather than part of the key: a lookup only sees
entries of the adapter that runs now, and switching adapters (the
OpenAI-compatible server does, per request) keeps every adapter's entries. The backend
also empties the pool when it loads, replaces or drops an adapter and when
``backend.model`` is assigned: a replaced adapter's new tensors can land at
the old ones' addresses with the same version counts. What the key cannot
see needs ``backend.prefix_cache.clear()``: writes that bypass the counter
(``fused=True`` optimisers, writes through ``param.data``). PEFT's
``merge_adapter`` (which adds to ``weight.data``) and ``set_scale`` are
seen through the LoRA layers' merged-adapter lists and scalings, a
``set_adapter`` on ``backend.model`` through the tag.

An entry is handed out at most once (taken from the pool, not copied): two
rows of a batch never share one, and the caller puts the row's new cache back.
Written here rather than taken from transformers: its caches are per call, it
keeps none across ``generate`` calls.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

__all__ = ["PrefixCache", "adapter_tag", "shared_length", "weights_key"]


def weights_key(model: Any) -> tuple[Any, ...]:
    """The weights a cache computed by ``model`` now depends on: the model
    object, each parameter's ``(data_ptr, _version)`` (every loaded
    adapter's included, active or not) and, for PEFT's LoRA layers, each
    adapter's scaling and which adapters are merged into the base weights
    (``set_scale`` and ``merge_adapter`` change what runs without a
    parameter's counter moving)."""
    params = tuple((p.data_ptr(), _version(p)) for p in model.parameters())
    lora = tuple(
        (tuple(sorted(m.scaling.items())), tuple(getattr(m, "merged_adapters", ())))
        for m in model.modules()
        if isinstance(getattr(m, "scaling", None), dict)
    )
    return (id(model), params, lora)


def adapter_tag(model: Any, *, bypass_adapter: bool = False) -> str:
    """Which of ``model``'s weights run: ``"bare"`` when adapters are bypassed
    (``disable_adapter()``), else a PEFT model's active adapter(s), else ``""``."""
    if bypass_adapter:
        return "bare"
    if hasattr(model, "get_base_model"):
        # ``active_adapters`` reads the layers (several may be active at once);
        # the ``active_adapter`` attribute is only the last ``set_adapter``'s name
        active = getattr(model, "active_adapters", None) or [model.active_adapter]
        return "adapter:" + ",".join(sorted(map(str, active)))
    return ""


def _version(tensor: Any) -> int:
    try:
        return tensor._version
    except RuntimeError:  # an inference tensor (made under inference_mode) has none
        return -1


class PrefixCache:
    """Up to ``capacity`` ``(token ids, DynamicCache, tag)`` entries, least
    recently stored dropped first; ``min_tokens`` is the shortest shared
    beginning worth reusing. Lookups and stores use the tag of the last
    :meth:`check`. Not thread-safe: the backend calls it under its lock."""

    def __init__(self, capacity: int, *, min_tokens: int = 16) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.min_tokens = int(capacity), int(min_tokens)
        self._entries: collections.OrderedDict[int, tuple[tuple[int, ...], Any, Any]] = (
            collections.OrderedDict()
        )
        self._key: tuple[Any, ...] | None = None
        self._tag: Any = None
        self._next = 0
        self.hits = self.misses = self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, key: Any, tag: Any = None) -> None:
        """Empty the pool unless its entries were computed under ``key``; the
        next lookups and stores are ``tag``'s (entries of other tags stay)."""
        if key != self._key:
            self._entries.clear()
            self._key = key
        self._tag = tag

    def take(self, ids: Sequence[int], *, at_least: int = 0) -> tuple[Any, int] | None:
        """The entry sharing the longest beginning with ``ids``, cropped to it,
        and that length; removed from the pool. ``None`` when no entry shares more
        than ``max(at_least, min_tokens - 1)`` tokens."""
        ids = tuple(ids)
        best, best_n = None, max(at_least, self.min_tokens - 1)
        for slot, (tokens, _, tag) in self._entries.items():
            if tag != self._tag:
                continue
            n = shared_length(tokens, ids)
            if n > best_n:
                best, best_n = slot, n
        if best is None:
            self.misses += 1
            return None
        tokens, cache, _ = self._entries.pop(best)
        cache.crop(best_n - len(tokens))  # transformers 5: minus the tokens to drop
        self.hits += 1
        self.reused_tokens += best_n
        return cache, best_n

    def put(self, ids: Sequence[int], cache: Any) -> None:
        """Keep ``cache`` (holding exactly ``ids``) for later prompts; the caller
        must not change it afterwards. An entry of the same ``ids`` is replaced
        (a batch's identical rows keep one entry, not one each)."""
        ids = tuple(ids)
        for slot in [
            s for s, (tokens, _, tag) in self._entries.items() if (tokens, tag) == (ids, self._tag)
        ]:
            del self._entries[slot]
        self._entries[self._next] = (ids, cache, self._tag)
        self._next += 1
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self._key = self._tag = None


def shared_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share (a binary search over
    slice comparisons, which run in C: prompts are ~1000 tokens)."""
    a, b = tuple(a), tuple(b)
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
