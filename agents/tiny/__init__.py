"""Tiny models built offline, for tests and the offline demo.

Everything here is made on this machine, from config, with no network:

* a byte-level BPE tokenizer trained on a small embedded corpus (the JSON action
  language, element renderings, HTML fragments and plain English), saved as a
  normal Hugging Face tokenizer with a ChatML chat template;
* a tiny causal LM (Llama or Qwen2 architecture, a few hundred thousand
  parameters) with random weights;
* a tiny vision-language model with SmolVLM's architecture (Idefics3,
  ``arch="llama"``) or Qwen2-VL's (``arch="qwen2"``), each with a Pillow-only
  image processor, so it runs without torchvision.

The weights are random: the models produce gibberish, but they exercise every
code path a real model does (chat template, images, logprobs, LoRA, MLX
conversion). Builds are cached on disk, keyed by a hash of their config::

    path = tiny_model_path("text")          # cached; ~1 s the first time
    build_tiny_model("/tmp/m", kind="vlm")  # always builds
    tiny_model_path("vlm", arch="qwen2")    # a tiny Qwen2-VL

    python -m agents.tiny OUT_DIR --kind text|vlm [--arch llama|qwen2]

One concept a module: :mod:`.tokenizer` (corpus, BPE, chat templates),
:mod:`.config` (:class:`TinyConfig` and its cache key),
:mod:`.architectures` (the two text and two VLM architectures as Hugging
Face configs), :mod:`.models` (building and caching models and adapters)
and :mod:`.cli` (``python -m agents.tiny``). Importing any of them is light:
torch, transformers, tokenizers and peft load inside the functions.
"""

from __future__ import annotations

from agents.tiny.cli import main
from agents.tiny.config import FACTORY_VERSION, TinyConfig
from agents.tiny.models import (
    build_tiny_adapter,
    build_tiny_model,
    default_cache_dir,
    tiny_model_path,
)
from agents.tiny.tokenizer import CHAT_TEMPLATE, QWEN2_VL_CHAT_TEMPLATE, corpus, train_tokenizer

__all__ = [
    "CHAT_TEMPLATE",
    "QWEN2_VL_CHAT_TEMPLATE",
    "FACTORY_VERSION",
    "TinyConfig",
    "build_tiny_adapter",
    "build_tiny_model",
    "corpus",
    "default_cache_dir",
    "main",
    "tiny_model_path",
    "train_tokenizer",
]
