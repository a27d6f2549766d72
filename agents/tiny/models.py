"""Build tiny models (and LoRA adapters for them) with random weights, and cache them.

:func:`build_tiny_model` writes a directory that Hugging Face loads, in one
of the architectures of :mod:`agents.tiny.architectures`;
:func:`tiny_model_path` keeps builds on disk, keyed by a hash of their
config; :func:`build_tiny_adapter` writes a PEFT LoRA adapter whose B is not
zero, so that it visibly changes the logits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from agents.backends.common import require
from agents.tiny.architectures import (
    idefics3_config,
    idefics3_processor,
    qwen2_vl_config,
    save_qwen2_vl_processor,
    text_config,
)
from agents.tiny.config import TinyConfig
from agents.tiny.tokenizer import QWEN2_VL_TOKENS, train_tokenizer

__all__ = ["build_tiny_adapter", "build_tiny_model", "default_cache_dir", "tiny_model_path"]


def build_tiny_model(
    out_dir: str | os.PathLike[str], config: TinyConfig | None = None, **overrides: Any
) -> Path:
    """Build a tiny model into ``out_dir`` (created; must be empty or absent).

    ``overrides`` replace fields of ``config`` (e.g. ``kind="vlm"``). The
    directory loads with ``AutoModelForCausalLM`` (text) or
    ``AutoModelForImageTextToText`` + ``AutoProcessor`` (vlm), and with mlx-lm
    (text). Returns the directory.
    """
    cfg = dataclasses.replace(config or TinyConfig(), **overrides)
    torch = require("torch", purpose="building a tiny model")
    transformers = require("transformers", purpose="building a tiny model")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)

    qwen2_vl = cfg.kind == "vlm" and cfg.arch == "qwen2"
    tokenizer = train_tokenizer(
        cfg.vocab_size,
        cfg.seed,
        vlm=cfg.kind == "vlm" and not qwen2_vl,
        special_tokens=QWEN2_VL_TOKENS if qwen2_vl else (),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.kind == "text":
            model = transformers.AutoModelForCausalLM.from_config(text_config(cfg, tokenizer))
        elif qwen2_vl:
            model = transformers.Qwen2VLForConditionalGeneration(qwen2_vl_config(cfg, tokenizer))
        else:
            model = transformers.Idefics3ForConditionalGeneration(idefics3_config(cfg, tokenizer))
    model = model.to(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out)
    if cfg.kind == "text":
        tokenizer.save_pretrained(out)
    elif qwen2_vl:
        save_qwen2_vl_processor(cfg, tokenizer, out)
    else:
        idefics3_processor(cfg, tokenizer).save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    meta = {"config": dataclasses.asdict(cfg), "key": cfg.key(), "parameters": n_params}
    (out / "tiny.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def build_tiny_adapter(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    rank: int = 4,
    alpha: float = 8.0,
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj"),
    init_std: float = 0.5,
    seed: int = 0,
) -> Path:
    """Save a PEFT LoRA adapter for the text model in ``model_dir`` with random A *and* B.

    PEFT initialises B to zero, which makes a fresh adapter a no-op and hides
    conversion bugs; here B is drawn from N(0, init_std) so the adapter
    visibly changes the logits.
    """
    torch = require("torch", purpose="building a tiny adapter")
    transformers = require("transformers", purpose="building a tiny adapter")
    peft = require("peft", purpose="building a tiny adapter")
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0
    )
    peft_model = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * init_std)
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    return out


# -- cache --------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$BROWSER_RL_CACHE/tiny-models``, else ``~/.cache/browser-rl/tiny-models``."""
    root = os.environ.get("BROWSER_RL_CACHE") or Path.home() / ".cache" / "browser-rl"
    return Path(root) / "tiny-models"


def tiny_model_path(
    kind: Literal["text", "vlm"] = "text",
    cache_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Path:
    """A cached tiny model directory, built on first use.

    The cache key hashes the full :class:`TinyConfig` and :data:`FACTORY_VERSION`.
    Concurrent builders (pytest-xdist workers) are safe: each builds in a
    private directory and renames it into place; the loser discards its copy.
    """
    cfg = TinyConfig(kind=kind, **overrides)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{cfg.kind}-{cfg.arch}-{cfg.key()}"
    if (target / "tiny.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        build_tiny_model(staging, cfg)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "tiny.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
