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
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from agents.backends.common import require

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

#: Bumped whenever a build changes, so stale caches are never reused.
FACTORY_VERSION = 1

BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<|pad|>"
IM_START = "<|im_start|>"
VLM_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]
QWEN2_VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _chatml(image: str) -> str:
    """ChatML; content is a string or a list of ``{"type": "text"|"image"}`` parts."""
    return (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}{{ '" + image + "' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


#: ChatML; an image part becomes ``<image>``, which an Idefics3 processor expands.
CHAT_TEMPLATE = _chatml("<image>")
#: ChatML; an image part becomes Qwen2-VL's ``<|vision_start|><|image_pad|><|vision_end|>``,
#: whose pad token the Qwen2-VL processor repeats once per merged patch.
QWEN2_VL_CHAT_TEMPLATE = _chatml("<|vision_start|><|image_pad|><|vision_end|>")


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


# -- corpus -------------------------------------------------------------------

_VERBS = ["CLICK", "TYPE", "PRESS_ENTER", "SCROLL", "WAIT", "NAVIGATE", "FINISH"]
_ROLES = ["button", "link", "textbox", "checkbox", "radio", "combobox", "option", "heading"]
_TAGS = ["button", "a", "input", "select", "option", "textarea", "div", "span", "label"]
_WORD_TEXT = (
    "submit search login user password name city flight book date next previous ok cancel "
    "yes no home about contact email phone address first last from to one two three tab "
    "menu item list select choose enter type click press scroll wait finish navigate page "
    "form field button link text value checkbox option dialog close open left right up down"
)
_ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Click the button labelled Submit to finish the task.",
    "Type your username and password, then press enter.",
    "Select the option that matches the goal and click OK.",
    "Scroll down until you can see the search results.",
    "Enter the city name in the text field and submit the form.",
    "Find the link to the contact page and open it.",
    "Respond with exactly one JSON object describing the next action.",
    "You are an agent that controls a web browser to complete a goal.",
    "If the task is done, answer with the FINISH action and the answer.",
    "Goal: Search for flights from New York to Boston on the given date.",
    "Last action error: element e12 is not visible on the page.",
    "History: CLICK e3 OK; TYPE e5 'alice' OK; PRESS_ENTER OK.",
]


def corpus(seed: int = 0, n_lines: int = 1500) -> list[str]:
    """The tokenizer's training text: deterministic for a given seed."""
    rng = random.Random(seed)
    words = _WORD_TEXT.split()
    lines: list[str] = list(_ENGLISH)

    def word() -> str:
        return rng.choice(words)

    for _ in range(n_lines):
        eid = f"e{rng.randint(0, 60)}"
        verb = rng.choice(_VERBS)
        action: dict[str, Any] = {"action": verb}
        if verb in ("CLICK", "TYPE"):
            action["element_id"] = eid
        if verb == "TYPE":
            action["value"] = " ".join(word() for _ in range(rng.randint(1, 3)))
        elif verb == "SCROLL":
            action["value"] = rng.choice(["up", "down"])
        elif verb == "WAIT":
            action["value"] = str(rng.choice([100, 250, 500, 1000]))
        elif verb == "NAVIGATE":
            action["value"] = f"http://127.0.0.1:8000/{word()}.html"
        elif verb == "FINISH":
            action["value"] = word()
        if rng.random() < 0.3:
            action["reasoning"] = rng.choice(_ENGLISH)
        lines.append(json.dumps(action))
        role, tag, label = rng.choice(_ROLES), rng.choice(_TAGS), word().capitalize()
        lines.append(f'[{eid}] {role} "{label}" value="{word()}" enabled visible')
        lines.append(f'<{tag} id="{word()}" class="{word()}">{label}</{tag}>')
        lines.append(" ".join(word() for _ in range(rng.randint(4, 12))).capitalize() + ".")
    return lines


# -- tokenizer ----------------------------------------------------------------


def train_tokenizer(
    vocab_size: int = 1024,
    seed: int = 0,
    *,
    vlm: bool = False,
    special_tokens: Sequence[str] = (),
) -> Any:
    """Train a byte-level BPE tokenizer on :func:`corpus`; return a transformers tokenizer.

    Byte-level means any text round-trips, including characters never seen in
    training. ``vlm=True`` adds the special tokens an Idefics3 processor needs;
    ``special_tokens`` adds others (e.g. :data:`QWEN2_VL_TOKENS`).
    """
    tokenizers = require("tokenizers", purpose="training a tiny tokenizer")
    transformers = require("transformers", purpose="training a tiny tokenizer")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, IM_START, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(seed), trainer)
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    hf.add_bos_token = False
    hf.chat_template = CHAT_TEMPLATE
    extra = [*(VLM_TOKENS if vlm else ()), *special_tokens]
    if extra:
        hf.add_special_tokens({"additional_special_tokens": extra})
    return hf


# -- models -------------------------------------------------------------------


def _text_config(cfg: TinyConfig, tokenizer: Any) -> Any:
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
            model = transformers.AutoModelForCausalLM.from_config(_text_config(cfg, tokenizer))
        elif qwen2_vl:
            model = transformers.Qwen2VLForConditionalGeneration(_qwen2_vl_config(cfg, tokenizer))
        else:
            model = transformers.Idefics3ForConditionalGeneration(_vlm_config(cfg, tokenizer))
    model = model.to(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out)
    if cfg.kind == "text":
        tokenizer.save_pretrained(out)
    elif qwen2_vl:
        _save_qwen2_vl_processor(cfg, tokenizer, out)
    else:
        _vlm_processor(cfg, tokenizer).save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    meta = {"config": dataclasses.asdict(cfg), "key": cfg.key(), "parameters": n_params}
    (out / "tiny.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _vlm_config(cfg: TinyConfig, tokenizer: Any) -> Any:
    transformers = require("transformers", purpose="building a tiny VLM")
    text_config = _text_config(cfg, tokenizer)
    text_config.tie_word_embeddings = False
    return transformers.Idefics3Config(
        text_config=text_config.to_dict(),
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


def _vlm_processor(cfg: TinyConfig, tokenizer: Any) -> Any:
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


def _qwen2_vl_config(cfg: TinyConfig, tokenizer: Any) -> Any:
    transformers = require("transformers", purpose="building a tiny VLM")
    text_config = _text_config(cfg, tokenizer).to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        text_config.pop(key, None)
    # M-RoPE splits the rotary half-dimension over (time, height, width) as
    # Qwen2-VL does (16, 24, 24 of 64).
    half = cfg.head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [temporal, height, half - temporal - height],
    }
    text_config["tie_word_embeddings"] = False
    return transformers.Qwen2VLConfig(
        text_config=text_config,
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


def _save_qwen2_vl_processor(cfg: TinyConfig, tokenizer: Any, out: Path) -> None:
    """Save a Qwen2-VL processor as its parts, the layout of Qwen2-VL checkpoints.

    ``Qwen2VLProcessor`` cannot be built without torchvision (its video
    processor needs it), so the image processor (Pillow backend) and the
    tokenizer are saved separately and ``processor_config.json`` names the
    processor class. ``AutoProcessor`` loads the directory where torchvision
    is installed; :func:`agents.backends.transformers.load_processor` loads
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


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m agents.tiny", description="Build a tiny model offline."
    )
    parser.add_argument("out_dir", help="directory to write (must be empty or absent)")
    parser.add_argument("--kind", choices=["text", "vlm"], default="text")
    parser.add_argument("--arch", choices=["llama", "qwen2"], default="llama")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=TinyConfig.hidden_size)
    parser.add_argument("--layers", type=int, default=TinyConfig.num_hidden_layers)
    args = parser.parse_args(argv)
    out = build_tiny_model(
        args.out_dir,
        kind=args.kind,
        arch=args.arch,
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
    )
    meta = json.loads((out / "tiny.json").read_text())
    print(f"built tiny {args.kind} model ({meta['parameters']:,} parameters) in {out}")
    return out


if __name__ == "__main__":
    main()
