"""The shape of a tiny model, and the cache key that names its build."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Literal

from agents.tiny.tokenizer import corpus

__all__ = ["FACTORY_VERSION", "TinyConfig"]

#: Bumped whenever a build changes, so stale caches are never reused.
FACTORY_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Shape of a tiny model. Defaults give ~0.4M (text) and ~0.5M (VLM) parameters.

    ``kind="vlm"`` builds Idefics3 (SmolVLM) with ``arch="llama"`` and Qwen2-VL
    with ``arch="qwen2"``.
    """

    kind: Literal["text", "vlm"] = "text"
    arch: Literal["llama", "qwen2"] = "llama"
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = True
    # Vision tower (vlm only): image_size / patch_size patches per side, merged
    # by scale_factor**2, so (32 / 8) ** 2 / 2 ** 2 = 4 image tokens per image.
    # Qwen2-VL (arch="qwen2") keeps the aspect ratio instead: an image is resized
    # to multiples of patch_size * scale_factor with at most (2 * image_size) ** 2
    # pixels, one token per scale_factor x scale_factor patches (at most 16).
    image_size: int = 32
    patch_size: int = 8
    scale_factor: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_hidden_layers: int = 1
    vision_num_attention_heads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("text", "vlm"):
            raise ValueError(f"kind must be 'text' or 'vlm', got {self.kind!r}")
        if self.arch not in ("llama", "qwen2"):
            raise ValueError(f"arch must be 'llama' or 'qwen2', got {self.arch!r}")
        if self.kind == "vlm" and self.arch == "qwen2" and (self.head_dim < 8 or self.head_dim % 2):
            raise ValueError("Qwen2-VL's M-RoPE needs an even head dimension of at least 8")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        if self.image_size % (self.patch_size * self.scale_factor):
            raise ValueError("image_size must be divisible by patch_size * scale_factor")

    @property
    def image_seq_len(self) -> int:
        """Image tokens per image of the Idefics3 VLM."""
        return (self.image_size // self.patch_size) ** 2 // self.scale_factor**2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def key(self) -> str:
        """A short hash of this config, the corpus and the factory version (the cache key)."""
        text = "\n".join(corpus(self.seed))
        payload = json.dumps(
            {
                "config": dataclasses.asdict(self),
                "version": FACTORY_VERSION,
                "corpus": hashlib.sha256(text.encode()).hexdigest(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]
