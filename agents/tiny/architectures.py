"""The four architectures of the tiny models, as Hugging Face configs and processors.

Text: Llama (``arch="llama"``) or Qwen2 (``arch="qwen2"``). Vision-language:
Idefics3 (SmolVLM's, ``arch="llama"``) or Qwen2-VL (``arch="qwen2"``), each
with a Pillow-only image processor so that they run without torchvision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.backends.common import require
from agents.tiny.tokenizer import CHAT_TEMPLATE, QWEN2_VL_CHAT_TEMPLATE

if TYPE_CHECKING:
    from agents.tiny.config import TinyConfig

__all__ = [
    "idefics3_config",
    "idefics3_processor",
    "qwen2_vl_config",
    "save_qwen2_vl_processor",
    "text_config",
]


def text_config(cfg: TinyConfig, tokenizer: Any) -> Any:
    transformers = require("transformers", purpose="building a tiny model")
    config_cls = transformers.LlamaConfig if cfg.arch == "llama" else transformers.Qwen2Config
    return config_cls(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def idefics3_config(cfg: TinyConfig, tokenizer: Any) -> Any:
    transformers = require("transformers", purpose="building a tiny VLM")
    text = text_config(cfg, tokenizer)
    text.tie_word_embeddings = False
    return transformers.Idefics3Config(
        text_config=text.to_dict(),
        vision_config={
            "hidden_size": cfg.vision_hidden_size,
            "intermediate_size": cfg.vision_intermediate_size,
            "num_hidden_layers": cfg.vision_num_hidden_layers,
            "num_attention_heads": cfg.vision_num_attention_heads,
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
        },
        scale_factor=cfg.scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def idefics3_processor(cfg: TinyConfig, tokenizer: Any) -> Any:
    transformers = require("transformers", purpose="building a tiny VLM")
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    # The Pillow backend needs no torchvision. No splitting: one global image
    # of image_size x image_size, as the vision tower expects.
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": cfg.image_size},
        max_image_size={"longest_edge": cfg.image_size},
        do_image_splitting=False,
    )
    return transformers.Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=cfg.image_seq_len,
        chat_template=CHAT_TEMPLATE,
    )


def qwen2_vl_config(cfg: TinyConfig, tokenizer: Any) -> Any:
    transformers = require("transformers", purpose="building a tiny VLM")
    text = text_config(cfg, tokenizer).to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        text.pop(key, None)
    # M-RoPE splits the rotary half-dimension over (time, height, width) as
    # Qwen2-VL does (16, 24, 24 of 64).
    half = cfg.head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [temporal, height, half - temporal - height],
    }
    text["tie_word_embeddings"] = False
    return transformers.Qwen2VLConfig(
        text_config=text,
        vision_config={
            "depth": cfg.vision_num_hidden_layers,
            "embed_dim": cfg.vision_hidden_size,
            "hidden_size": cfg.hidden_size,
            "num_heads": cfg.vision_num_attention_heads,
            "mlp_ratio": cfg.vision_intermediate_size // cfg.vision_hidden_size,
            "patch_size": cfg.patch_size,
            "spatial_merge_size": cfg.scale_factor,
            "temporal_patch_size": 2,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def save_qwen2_vl_processor(cfg: TinyConfig, tokenizer: Any, out: Path) -> None:
    """Save a Qwen2-VL processor as its parts, the layout of Qwen2-VL checkpoints.

    ``Qwen2VLProcessor`` cannot be built without torchvision (its video
    processor needs it), so the image processor (Pillow backend) and the
    tokenizer are saved separately and ``processor_config.json`` names the
    processor class. ``AutoProcessor`` loads the directory where torchvision
    is installed; :func:`agents.backends.processors.load_processor` loads
    it everywhere.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    factor = cfg.patch_size * cfg.scale_factor
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=cfg.patch_size,
        temporal_patch_size=2,
        merge_size=cfg.scale_factor,
        min_pixels=factor**2,
        max_pixels=(2 * cfg.image_size) ** 2,
    )
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "processor_config.json").write_text(
        json.dumps({"processor_class": "Qwen2VLProcessor"}, indent=2) + "\n"
    )
