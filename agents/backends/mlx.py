"""MLX backend (mlx-lm, and mlx-vlm for VLMs): Apple silicon, or Linux CPU through ``mlx[cpu]``.

::

    backend = MLXBackend("path/or/hub-id", adapter="runs/sft/adapter")  # a PEFT adapter dir
    vlm = MLXBackend("HuggingFaceTB/SmolVLM-256M-Instruct")             # needs mlx-vlm
    vlm.generate(messages, images=[screenshot])

Text models run on mlx-lm. Models whose config has a ``vision_config`` run on
mlx-vlm (imported only then; a clear ``ImportError`` names the extra when it
is missing). Their prompts and pixels come from the same Hugging Face
processor the transformers backend uses
(:func:`agents.backends.processors.load_processor`, which also works for
Qwen2-VL without torchvision), so both backends feed a model identical
inputs. Two mlx-vlm quirks are contained here: importing an mlx-vlm model
module replaces ``transformers.AutoProcessor.from_pretrained`` process-wide
(with a version that sets ``trust_remote_code=True``), which the backend
undoes right after loading; and mlx-vlm reads the pre-transformers-5 config
layout (text fields at the top level, ``rope_theta``/``rope_scaling``), so
transformers-5 checkpoints are shown to it through a staged directory with a
rewritten ``config.json`` and links to the weights. Adapters are supported
for text models only.

The exchange format for adapters is the PEFT directory that every learner
writes. :func:`convert_peft_adapter_to_mlx` rewrites it in mlx-lm's layout
(``adapters.safetensors`` + ``adapter_config.json``): PEFT stores ``lora_A`` as
``(r, in)`` and ``lora_B`` as ``(out, r)`` and scales by ``lora_alpha / r``
(``/ sqrt(r)`` with rsLoRA); mlx-lm stores ``lora_a`` as ``(in, r)`` and
``lora_b`` as ``(r, out)`` with an explicit ``scale``. The test suite proves
the conversion by matching MLX and torch logits under an adapter whose B is
random (a zero B, PEFT's initialisation, would hide a broken conversion).
:meth:`MLXBackend.load_adapter` converts PEFT directories on the fly and
checks that every converted tensor landed in the model.

Generation mirrors the transformers backend: ``token_ids`` include the EOS
token when one is emitted, ``logprobs`` are the raw model log-probabilities
(before temperature/top-p).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agents.backends.base import BackendBase, Generation, Message, SamplingParams
from agents.backends.common import (
    apply_stop,
    batch_images,
    begin_generation,
    one_by_one,
    render_chat,
    require,
    row_samplings,
    to_pil,
)
from agents.models import resolve_model

__all__ = ["MLXBackend", "convert_peft_adapter_to_mlx", "is_peft_adapter"]

_LAYER_KEY = re.compile(r"^(?P<stack>.+\.layers)\.(?P<index>\d+)\.(?P<rest>.+)$")
_PEFT_WEIGHT = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


def is_peft_adapter(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a PEFT adapter directory (its config names a ``peft_type``)."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return False
    return "peft_type" in json.loads(config.read_text())


def convert_peft_adapter_to_mlx(
    peft_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    num_layers: int | None = None,
) -> Path:
    """Write the PEFT LoRA adapter in ``peft_dir`` as an mlx-lm adapter in ``out_dir``.

    ``num_layers`` is the base model's layer count; by default it is read from
    the base model's config when ``base_model_name_or_path`` is a local
    directory, else LoRA layers are set up on every layer (layers the adapter
    does not touch keep a zero ``lora_b`` and stay unchanged).

    Raises ``ValueError`` for what mlx-lm cannot represent: DoRA, per-module
    ranks or alphas (``rank_pattern``/``alpha_pattern``), trained biases,
    ``modules_to_save``, non-LoRA PEFT types, and adapters without LoRA weights.
    """
    mx = require("mlx.core", purpose="converting adapters to MLX")
    src, out = Path(peft_dir), Path(out_dir)
    config = json.loads((src / "adapter_config.json").read_text())
    _check_convertible(config, src)
    rank = int(config["r"])
    alpha = float(config.get("lora_alpha", rank))
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank

    converted: dict[str, Any] = {}
    keys: set[str] = set()
    layer_indices: list[int] = []
    for name, tensor in _load_peft_weights(src).items():
        match = _PEFT_WEIGHT.match(name.removeprefix("base_model.model."))
        if match is None:
            raise ValueError(f"{src}: unexpected tensor {name!r} in a LoRA adapter")
        module, which = match["module"], match["which"]
        layer = _LAYER_KEY.match(module)
        if layer is not None:
            keys.add(layer["rest"])
            layer_indices.append(int(layer["index"]))
        else:
            keys.add(module)
        # mlx-lm computes x @ lora_a @ lora_b: both are PEFT's matrices transposed.
        converted[f"{module}.lora_{which.lower()}"] = mx.array(tensor).T
    if not converted:
        raise ValueError(f"{src} holds no LoRA weights")
    missing = sorted(
        k.rsplit(".", 1)[0]
        for k in converted
        if k.endswith(".lora_a") and k[:-1] + "b" not in converted
    )
    if missing:
        raise ValueError(f"{src}: lora_A without lora_B for {missing[:5]}")

    if num_layers is None:
        total = _base_num_layers(config.get("base_model_name_or_path"))
        num_layers = total - min(layer_indices) if total and layer_indices else -1
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), converted)
    mlx_config = {
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": {"rank": rank, "scale": scale, "dropout": 0.0, "keys": sorted(keys)},
        "converted_from": str(src),
        "base_model_name_or_path": config.get("base_model_name_or_path"),
    }
    (out / "adapter_config.json").write_text(json.dumps(mlx_config, indent=2) + "\n")
    return out


def _check_convertible(config: dict[str, Any], src: Path) -> None:
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} (only LORA)")
    if config.get("use_dora"):
        problems.append("DoRA")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        problems.append("per-module rank_pattern/alpha_pattern")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r}")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config['modules_to_save']!r}")
    if problems:
        raise ValueError(f"{src}: mlx-lm cannot represent {', '.join(problems)}")


def _load_peft_weights(src: Path) -> dict[str, Any]:
    """PEFT adapter tensors as numpy (bf16 widened to float32) or mlx arrays."""
    safetensors_file = src / "adapter_model.safetensors"
    if safetensors_file.is_file():
        mx = require("mlx.core")
        return dict(mx.load(str(safetensors_file)))
    bin_file = src / "adapter_model.bin"
    if bin_file.is_file():
        torch = require("torch", purpose="reading adapter_model.bin")
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise FileNotFoundError(f"{src} has no adapter_model.safetensors or adapter_model.bin")


def _base_num_layers(base: str | None) -> int | None:
    if not base or not (Path(base) / "config.json").is_file():
        return None
    config = json.loads((Path(base) / "config.json").read_text())
    config = config.get("text_config", config)
    layers = config.get("num_hidden_layers")
    return int(layers) if layers else None


def _legacy_rope_fields(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings in the top-level form mlx-lm reads.

    transformers >= 5 saves ``rope_parameters`` instead of ``rope_theta`` and
    ``rope_scaling``; mlx-lm would then fall back to its own defaults (1e6
    for Qwen2 instead of the checkpoint's value) and silently compute
    different logits.
    """
    params = config.get("rope_parameters")
    if not isinstance(params, dict) or "rope_theta" in config:
        return {}
    fields: dict[str, Any] = {}
    if "rope_theta" in params:
        fields["rope_theta"] = params["rope_theta"]
    if params.get("rope_type", "default") != "default" and "rope_scaling" not in config:
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        fields["rope_scaling"] = {**scaling, "type": params["rope_type"]}
    return fields


def _legacy_vlm_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """``config`` in the layout mlx-vlm reads, or ``None`` when it already is.

    transformers >= 5 nests a VLM's text settings under ``text_config`` and
    writes ``rope_parameters``; mlx-vlm (0.7) reads Qwen2-VL's text settings
    from the top level and RoPE from ``rope_theta``/``rope_scaling`` (with
    ``{"type": "mrope", "mrope_section": ...}`` for M-RoPE) and expects the
    sub-configs' ``model_type`` to be the model's. Top-level keys that exist
    are kept.
    """
    text = config.get("text_config")
    if not isinstance(text, dict) or "rope_parameters" not in text:
        return None
    params = text["rope_parameters"]
    legacy_text = {**text, **_legacy_rope_fields(text)}
    if isinstance(params, dict) and "mrope_section" in params:
        legacy_text["rope_scaling"] = {"type": "mrope", "mrope_section": params["mrope_section"]}
    # transformers 5 names the sub-configs "<type>_text" and "<type>_vision".
    model_type = config.get("model_type")
    if legacy_text.get("model_type") == f"{model_type}_text":
        legacy_text["model_type"] = model_type
    legacy = {**legacy_text, **config, "text_config": legacy_text}
    vision = config.get("vision_config")
    if isinstance(vision, dict) and vision.get("model_type") == f"{model_type}_vision":
        legacy["vision_config"] = {**vision, "model_type": model_type}
    legacy.update({k: legacy_text[k] for k in ("rope_theta", "rope_scaling") if k in legacy_text})
    return legacy


@contextlib.contextmanager
def _keep_auto_processor() -> Iterator[None]:
    """Undo mlx-vlm's process-wide patch of ``AutoProcessor.from_pretrained``.

    Importing an mlx-vlm model module swaps in a version that returns
    mlx-vlm's own processors (which return mlx arrays and take images
    differently) and sets ``trust_remote_code=True``; a transformers backend
    in the same process would silently get them.
    """
    auto_processor = require("transformers").AutoProcessor
    saved = auto_processor.__dict__.get("from_pretrained")
    try:
        yield
    finally:
        if saved is not None and auto_processor.__dict__.get("from_pretrained") is not saved:
            auto_processor.from_pretrained = saved


class MLXBackend(BackendBase):
    """An mlx-lm text model, or an mlx-vlm vision-language model, behind the ``Backend`` protocol.

    Args:
        model: local directory (an HF checkpoint or an mlx-lm/mlx-vlm conversion) or hub id.
        adapter: a PEFT adapter directory (converted on load) or an mlx-lm one
            (text models only).
        trust_remote_code: passed to the tokenizer or processor.

    Learners get ``backend.model`` (an ``mlx.nn.Module``) and
    ``backend.tokenizer`` (mlx-lm's ``TokenizerWrapper`` for text models,
    which forwards to the Hugging Face tokenizer; the processor's tokenizer
    for VLMs). ``backend.processor`` is the Hugging Face processor of a VLM
    (``None`` for text models).
    """

    name = "mlx"

    def __init__(
        self,
        model: str | os.PathLike[str],
        adapter: str | os.PathLike[str] | None = None,
        *,
        trust_remote_code: bool = False,
    ) -> None:
        require("mlx.core", purpose="the MLX backend")
        self.model_name = resolve_model(os.fspath(model))  # presets: agents.models
        self.adapter: str | None = None
        self.processor: Any = None
        self._converted: tempfile.TemporaryDirectory[str] | None = None
        self._staged: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()
        config_file = Path(self.model_name) / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        self.multimodal = "vision_config" in config
        if self.multimodal:
            if adapter is not None:
                raise NotImplementedError(
                    "the MLX backend applies adapters to text models only; use "
                    "backend=transformers for a VLM with an adapter"
                )
            self._load_vlm(config, trust_remote_code)
            return
        mlx_lm = require("mlx_lm", purpose="the MLX backend")
        self.model, self.tokenizer = mlx_lm.load(
            self.model_name,
            tokenizer_config={"trust_remote_code": trust_remote_code},
            model_config=_legacy_rope_fields(config),
        )
        if adapter is not None:
            self.load_adapter(adapter)

    def _load_vlm(self, config: dict[str, Any], trust_remote_code: bool) -> None:
        mlx_vlm_utils = require("mlx_vlm.utils", purpose="vision-language models on MLX")
        from agents.backends.processors import load_processor

        path = Path(self.model_name)
        legacy = _legacy_vlm_config(config)
        if legacy is not None:
            self._staged = tempfile.TemporaryDirectory(prefix="browser-rl-mlx-vlm-")
            staged = Path(self._staged.name)
            for item in path.iterdir():
                if item.name != "config.json":
                    (staged / item.name).symlink_to(item.resolve())
            (staged / "config.json").write_text(json.dumps(legacy, indent=2) + "\n")
            path = staged
        with _keep_auto_processor():
            self.model = mlx_vlm_utils.load_model(path, lazy=False)
        self.model.eval()
        self.processor = load_processor(
            self.model_name,
            model_type=config.get("model_type"),
            trust_remote_code=trust_remote_code,
        )
        self.tokenizer = self.processor.tokenizer
        eos = self.model.config.eos_token_id if hasattr(self.model, "config") else None
        eos = eos if isinstance(eos, list) else [eos]
        self._vlm_eos = {i for i in [*eos, self.tokenizer.eos_token_id] if i is not None}

    def load_adapter(self, path: str | os.PathLike[str]) -> None:
        """Apply an adapter (PEFT or mlx-lm layout), replacing any loaded one."""
        if self.multimodal:
            raise NotImplementedError("the MLX backend applies adapters to text models only")
        mx = require("mlx.core")
        from mlx.utils import tree_flatten
        from mlx_lm.tuner.utils import load_adapters, remove_lora_layers

        path = os.fspath(path)
        source = path
        if is_peft_adapter(path):
            self._drop_converted()
            self._converted = tempfile.TemporaryDirectory(prefix="browser-rl-mlx-adapter-")
            num_layers = len(self.model.layers)
            source = str(
                convert_peft_adapter_to_mlx(path, self._converted.name, num_layers=num_layers)
            )
        remove_lora_layers(self.model)
        load_adapters(self.model, source)
        # Prove the tensors landed: mlx-lm loads with strict=False.
        expected = mx.load(str(Path(source) / "adapters.safetensors"))
        params = dict(tree_flatten(self.model.parameters()))
        for name, value in expected.items():
            if name not in params or not mx.array_equal(
                params[name], value.astype(params[name].dtype)
            ):
                raise RuntimeError(f"adapter tensor {name} did not load into the MLX model")
        self.model.eval()
        self.adapter = path

    def _drop_converted(self) -> None:
        if self._converted is not None:
            self._converted.cleanup()
            self._converted = None

    def render_chat(self, messages: Sequence[Message], n_images: int = 0) -> str:
        if self.multimodal:
            return render_chat(self.processor, messages, n_images, parts=True)
        return render_chat(self.tokenizer, messages)

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        """Prompt token ids (without images), exactly as :meth:`generate` feeds them."""
        if self.multimodal:
            return self.encode_inputs(messages)["input_ids"][0].tolist()
        return list(self.tokenizer.encode(self.render_chat(messages), add_special_tokens=False))

    def encode_inputs(
        self, messages: Sequence[Message], images: Sequence[Any] | None = None
    ) -> dict[str, Any]:
        """A VLM's model inputs (``input_ids``, ``pixel_values``, ...) as mlx arrays."""
        if not self.multimodal:
            raise ValueError(f"{self.model_name} is a text model; use encode_chat")
        mx = require("mlx.core")
        pil_images = [to_pil(image) for image in images or []]
        prompt = self.render_chat(messages, n_images=len(pil_images))
        inputs = self.processor(
            text=[prompt],
            images=[pil_images] if pil_images else None,
            return_tensors="np",
            add_special_tokens=False,
        )
        return {key: mx.array(value) for key, value in inputs.items()}

    def generate(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        sampling: SamplingParams | None = None,
    ) -> Generation:
        sampling, images, info = begin_generation(self, images, sampling)
        mx = require("mlx.core")
        from mlx_lm.sample_utils import make_sampler

        sampler = make_sampler(
            temp=sampling.temperature, top_p=sampling.top_p if sampling.top_p < 1 else 0.0
        )
        token_ids: list[int] = []
        logprobs: list[float] = []
        stopped = False
        start = time.perf_counter()
        with self._lock:
            if self.multimodal:
                from mlx_vlm.generate.ar import generate_step as vlm_generate_step

                inputs = self.encode_inputs(messages, images)
                input_ids = inputs.pop("input_ids")
                prompt_len = int(input_ids.shape[1])
                eos = self._vlm_eos
                pixel_values = inputs.pop("pixel_values", None)
                mask = inputs.pop("attention_mask", None)
                if sampling.seed is not None:
                    mx.random.seed(sampling.seed)
                steps = vlm_generate_step(
                    input_ids,
                    self.model,
                    pixel_values,
                    mask,
                    max_tokens=sampling.max_new_tokens,
                    sampler=sampler,
                    **inputs,
                )
            else:
                from mlx_lm.generate import generate_step

                prompt = self.encode_chat(messages)
                prompt_len = len(prompt)
                eos = set(self.tokenizer.eos_token_ids)
                if sampling.seed is not None:
                    mx.random.seed(sampling.seed)
                steps = generate_step(
                    mx.array(prompt),
                    self.model,
                    max_tokens=sampling.max_new_tokens,
                    sampler=sampler,
                )
            for token, step_logprobs in steps:
                token = int(token)
                token_ids.append(int(token))
                logprobs.append(step_logprobs[token].item())
                if token in eos:
                    break
                if sampling.stop and apply_stop(self._decode(token_ids), sampling.stop)[1]:
                    stopped = True
                    break
                if len(token_ids) >= sampling.max_new_tokens:
                    break
        text, _ = apply_stop(self._decode(token_ids), sampling.stop)
        info.update(
            finish_reason="stop" if stopped or (token_ids and token_ids[-1] in eos) else "length",
            prompt_tokens=prompt_len,
            completion_tokens=len(token_ids),
            latency_s=time.perf_counter() - start,
        )
        return Generation(text=text, token_ids=token_ids, logprobs=logprobs, info=info)

    def generate_batch(
        self,
        batch: Sequence[Sequence[Message]],
        images: Sequence[Sequence[Any] | None] | None = None,
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[Generation]:
        """All of ``batch`` decoded together by ``mlx_lm``'s ``BatchGenerator``
        (left-padded prompts, one forward pass per token for the batch).

        Greedy rows equal :meth:`generate`'s (the test checks it); token ids
        include the end-of-sequence token, as there. VLMs and ``stop`` strings
        go row by row. ``sampling`` is every row's, or one per row differing
        only in ``seed``. With ``temperature > 0`` a batch draws from one
        stream (``BatchGenerator`` has one sampler), so seeded rows go row by
        row, each drawing what it draws alone; unseeded rows are batched.
        """
        if not batch:
            return []
        rows = row_samplings(sampling, len(batch))
        sampling, _, _ = begin_generation(self, None, rows[0])
        images = batch_images(batch, images)
        seeded = sampling.temperature > 0 and any(r.seed is not None for r in rows)
        if len(batch) <= 1 or self.multimodal or sampling.stop or seeded:
            return one_by_one(self, batch, images, rows)
        mx = require("mlx.core")
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.sample_utils import make_sampler

        infos = [begin_generation(self, i, sampling)[2] for i in images]
        sampler = make_sampler(
            temp=sampling.temperature, top_p=sampling.top_p if sampling.top_p < 1 else 0.0
        )
        start = time.perf_counter()
        with self._lock:
            prompts = [self.encode_chat(messages) for messages in batch]
            eos = sorted(self.tokenizer.eos_token_ids)
            if sampling.seed is not None:
                mx.random.seed(sampling.seed)
            gen = BatchGenerator(self.model, stop_tokens=[[t] for t in eos], sampler=sampler)
            try:
                uids = gen.insert(prompts, [sampling.max_new_tokens] * len(prompts))
                tokens: dict[int, list[int]] = {uid: [] for uid in uids}
                logprobs: dict[int, list[float]] = {uid: [] for uid in uids}
                while responses := gen.next_generated():
                    for r in responses:
                        tokens[r.uid].append(int(r.token))
                        logprobs[r.uid].append(r.logprobs[r.token].item())
            finally:
                gen.close()
        latency = time.perf_counter() - start
        results = []
        for uid, prompt, info in zip(uids, prompts, infos, strict=True):
            ids = tokens[uid]
            info.update(
                finish_reason="stop" if ids and ids[-1] in eos else "length",
                prompt_tokens=len(prompt),
                completion_tokens=len(ids),
                latency_s=latency,
                batch_size=len(batch),
            )
            results.append(
                Generation(text=self._decode(ids), token_ids=ids, logprobs=logprobs[uid], info=info)
            )
        return results

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _release(self) -> None:
        self.model = None
        self._drop_converted()
        if self._staged is not None:
            self._staged.cleanup()
            self._staged = None

    def __repr__(self) -> str:
        return f"MLXBackend(model={self.model_name!r}, adapter={self.adapter!r})"
