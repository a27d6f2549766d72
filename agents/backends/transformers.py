"""Hugging Face transformers backend: any causal LM or vision-language model.

::

    backend = TransformersBackend("HuggingFaceTB/SmolVLM-256M-Instruct", adapter="runs/sft/adapter")
    gen = backend.generate([{"role": "user", "content": "..."}], images=[screenshot])

Text models load with ``AutoModelForCausalLM`` and their tokenizer's chat
template. Models whose config has a ``vision_config`` (Idefics3/SmolVLM,
Qwen2-VL/Qwen2.5-VL, LLaVA, ...) load with ``AutoModelForImageTextToText`` and
``AutoProcessor``; images go into the last user message as ``{"type":
"image"}`` parts, the processor's chat template places the model's image
tokens and the processor makes the pixel tensors.

Without torchvision, ``AutoProcessor`` cannot build the video processor
that Qwen2-VL-style processors (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) carry even for
still images; :func:`agents.backends.processors.load_processor` then loads the
same processor class without it (the image processor falls back to its Pillow
backend), so those models take images here too. Their inputs carry ``image_grid_thw`` and
``mm_token_type_ids`` (what the model's M-RoPE positions are computed from).

Learners use the same objects the backend generates with: ``backend.model``
(a ``PeftModel`` when an adapter is loaded), ``backend.tokenizer``,
``backend.processor`` (``None`` for text models) and
``backend.encode_chat(messages, images)``, which returns the exact model
inputs that ``generate`` uses.

Several adapters can be held at once for serving (``serve.openai_server``
loads them at run time): :meth:`add_adapter` loads one under a name without
changing what :meth:`generate` uses, :meth:`using_adapter` picks one for the
calls inside its block, :meth:`delete_adapter` drops one. These and
:meth:`load_adapter` live in :mod:`agents.backends.transformers_adapters`.

``Generation.logprobs`` are log-probabilities of the generated tokens under the
model's raw distribution (log-softmax of the logits, before temperature and
top-p), as vLLM reports them. ``token_ids`` include the end-of-sequence token
when the model emitted one.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from agents.backends import row_prefill
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
from agents.backends.prefix_cache import PrefixCache, adapter_tag, weights_key
from agents.backends.processors import load_processor
from agents.backends.row_sampler import RowSampler
from agents.backends.transformers_adapters import AdapterMixin
from agents.backends.transformers_utils import eos_ids, eval_mode, resolve_device, resolve_dtype
from agents.models import resolve_model

__all__ = ["TransformersBackend"]


class TransformersBackend(AdapterMixin, BackendBase):
    """A local transformers model behind the ``Backend`` protocol.

    Args:
        model: local directory or hub id.
        adapter: optional PEFT LoRA adapter directory (or hub id) to apply.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``
            or ``"cuda:N"``.
        dtype: ``"auto"`` (bfloat16 on CUDA where supported, float16 on older
            GPUs, float32 on CPU), ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        device_map: passed to ``from_pretrained`` on CUDA; defaults to
            ``"auto"`` (shard over visible GPUs) for ``device="auto"`` and to the
            single named device otherwise.
        attn_implementation: e.g. ``"sdpa"`` or ``"flash_attention_2"``.
        prefill: how :meth:`generate_batch` prefills prompts of different
            lengths: ``"padded"`` (one left-padded forward pass, as
            ``generate`` does), ``"per_row"`` (each prompt alone, then one
            batched decode: :mod:`agents.backends.row_prefill`; needs a model
            with full attention in every layer) or ``"auto"`` (``per_row`` on
            CPU where the model allows it, else ``padded``).
        prefix_cache: how many recent prompts' KV caches to keep so that a
            prompt beginning like one of them computes only the rest (an
            episode's consecutive prompts share most of their beginning:
            :mod:`agents.backends.prefix_cache`); 0 turns it off. Entries are
            dropped whenever the weights change (a learner's step, an adapter
            loaded, replaced or dropped) and serve only the adapter they were
            computed with (switching adapters keeps them). Needs what
            ``prefill="per_row"`` needs, and implies it.
        merge_adapter: merge the LoRA weights into the base model (faster
            inference; ``model`` is then a plain model, not a ``PeftModel``).
        max_image_side: downscale images whose longest side is larger.
        trust_remote_code, revision: passed to ``from_pretrained``.
        model_kwargs: extra ``from_pretrained`` keyword arguments.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike[str],
        adapter: str | os.PathLike[str] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        *,
        device_map: str | dict[str, Any] | None = None,
        attn_implementation: str | None = None,
        prefill: str = "auto",
        prefix_cache: int = 0,
        merge_adapter: bool = False,
        max_image_side: int | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        torch = require("torch", purpose="the transformers backend")
        transformers = require("transformers", purpose="the transformers backend")
        self.model_name = resolve_model(os.fspath(model))  # presets: agents.models
        self.adapter = os.fspath(adapter) if adapter is not None else None
        self.max_image_side = max_image_side
        if prefill not in row_prefill.PREFILL_MODES:
            raise ValueError(f"prefill must be one of {row_prefill.PREFILL_MODES}, got {prefill!r}")
        if prefix_cache < 0:
            raise ValueError(f"prefix_cache must be >= 0, got {prefix_cache}")
        if prefix_cache and prefill == "padded":
            raise ValueError("prefix_cache needs prefill='per_row' or 'auto', not 'padded'")
        self.device = resolve_device(torch, device)
        self.dtype = resolve_dtype(torch, dtype, self.device)
        self._lock = threading.Lock()
        # True once add_adapter wrapped a plain model: generate keeps using the bare model
        self._bare = False

        common = {"trust_remote_code": trust_remote_code, "revision": revision}
        config = transformers.AutoConfig.from_pretrained(self.model_name, **common)
        self.multimodal = getattr(config, "vision_config", None) is not None
        load_kwargs: dict[str, Any] = {**common, "dtype": self.dtype, **(model_kwargs or {})}
        if attn_implementation is not None:
            load_kwargs["attn_implementation"] = attn_implementation
        if self.device.startswith("cuda"):
            load_kwargs["device_map"] = device_map or (
                "auto" if device == "auto" else {"": self.device}
            )
        if self.multimodal:
            auto_model = transformers.AutoModelForImageTextToText
            self.processor = load_processor(self.model_name, model_type=config.model_type, **common)
            self.tokenizer = self.processor.tokenizer
        else:
            auto_model = transformers.AutoModelForCausalLM
            self.processor = None
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_name, **common)
        self._base = (auto_model, load_kwargs)  # how to load the base weights again
        # True once an adapter was merged into the weights (see load_adapter)
        self._merged = False
        self.model = self._load_base()
        if self.adapter is not None:
            self.load_adapter(self.adapter, merge=merge_adapter)
        self.model.eval()
        self._eos_ids = eos_ids(self.model, self.tokenizer)
        # generate refuses a cache of ours when the checkpoint names a cache class
        can_split = (
            not self.multimodal
            and row_prefill.supported(self.model)
            and getattr(self.model.generation_config, "cache_implementation", None) is None
        )
        if (prefill == "per_row" or prefix_cache) and not can_split:
            raise ValueError(
                f"prefill='per_row' and prefix_cache need a text model with full attention in every layer "
                f"and no cache_implementation in its generation config; "
                f"{self.model_name} is not one (use 'padded' or 'auto')"
            )
        self.prefill = (
            "per_row"
            if prefill == "per_row"
            or prefix_cache
            or (prefill == "auto" and can_split and self.device == "cpu")
            else "padded"
        )
        #: the prompts' caches kept for reuse (``None`` when ``prefix_cache=0``)
        self.prefix_cache = PrefixCache(prefix_cache) if prefix_cache else None

    @property
    def model(self) -> Any:
        """The model ``generate`` runs (a ``PeftModel`` when adapters are loaded)."""
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        # a new model object: what the prefix cache holds was computed by another
        self._model = value
        self._weights_changed()

    def _weights_changed(self) -> None:
        """Empty the prefix cache: adapters were loaded, replaced or dropped, or
        the model replaced; a replaced adapter's new tensors can reuse the old
        ones' addresses and version counts, so :func:`weights_key` alone could
        not tell."""
        pool = getattr(self, "prefix_cache", None)  # None while __init__ runs
        if pool is not None:
            pool.clear()

    def _check_prefix_cache(self) -> None:
        if self.prefix_cache is not None:
            self.prefix_cache.check(
                weights_key(self.model), adapter_tag(self.model, bypass_adapter=self._bare)
            )

    def _load_base(self) -> Any:
        auto_model, load_kwargs = self._base
        model = auto_model.from_pretrained(self.model_name, **load_kwargs)
        return model if "device_map" in load_kwargs else model.to(self.device)

    # -- prompt -------------------------------------------------------------

    def render_chat(self, messages: Sequence[Message], n_images: int = 0) -> str:
        """The prompt string: the chat template with the generation prompt appended."""
        if self.multimodal:
            # VLM templates (SmolVLM's among them) expect a list of parts.
            return render_chat(self.processor, messages, n_images, parts=True)
        return render_chat(self.tokenizer, messages)

    def encode_chat(
        self, messages: Sequence[Message], images: Sequence[Any] | None = None
    ) -> tuple[str, Any]:
        """``(prompt_text, model_inputs)`` on the model's device, exactly as ``generate`` uses them."""
        pil_images = [self._prepare_image(image) for image in images or []]
        if pil_images and not self.multimodal:
            raise ValueError(f"{self.model_name} is a text model; it cannot take images")
        prompt = self.render_chat(messages, n_images=len(pil_images))
        if self.multimodal:
            inputs = self.processor(
                text=[prompt],
                images=[pil_images] if pil_images else None,
                return_tensors="pt",
                add_special_tokens=False,
            )
        else:
            inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        return prompt, inputs.to(self.model.device)

    def _prepare_image(self, image: Any) -> Any:
        pil = to_pil(image)
        if self.max_image_side and max(pil.size) > self.max_image_side:
            pil = pil.copy()
            pil.thumbnail((self.max_image_side, self.max_image_side))
        return pil

    # -- generation ---------------------------------------------------------

    def generate(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        sampling: SamplingParams | None = None,
    ) -> Generation:
        sampling, images, info = begin_generation(self, images, sampling)
        torch = require("torch")
        transformers = require("transformers")
        start = time.perf_counter()
        with self._lock:
            _, inputs = self.encode_chat(messages, images)
            prompt_len = int(inputs["input_ids"].shape[1])
            config = transformers.GenerationConfig(
                max_new_tokens=sampling.max_new_tokens,
                do_sample=False,  # a sampled token is drawn by the RowSampler
                top_k=None,
                eos_token_id=self._eos_ids,
                pad_token_id=self.tokenizer.pad_token_id
                if self.tokenizer.pad_token_id is not None
                else self._eos_ids[0],
                stop_strings=list(sampling.stop) or None,
                return_dict_in_generate=True,
                output_logits=True,
            )
            bare = self.model.disable_adapter() if self._bare else contextlib.nullcontext()
            with eval_mode(self.model), torch.inference_mode(), bare:
                if self.prefix_cache is not None and not images:
                    self._check_prefix_cache()
                    inputs = row_prefill.prefill_rows(
                        self.model,
                        [inputs["input_ids"][0].tolist()],
                        config.pad_token_id,
                        pool=self.prefix_cache,
                    )
                out = self.model.generate(
                    **inputs,
                    generation_config=config,
                    tokenizer=self.tokenizer,
                    logits_processor=self._sampler([sampling]),
                )
        token_ids = out.sequences[0, prompt_len:].tolist()
        logprobs = [
            float(torch.log_softmax(step[0].float(), dim=-1)[token])
            for step, token in zip(out.logits, token_ids, strict=False)
        ]
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        text, stopped = apply_stop(text, sampling.stop)
        hit_eos = bool(token_ids) and token_ids[-1] in self._eos_ids
        info.update(
            finish_reason="stop" if stopped or hit_eos else "length",
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
        """One forward pass per new token for all of ``batch`` (chat message lists).

        Prompts are left-padded and masked (and, with ``prefill="per_row"``,
        prefilled one by one), so greedy decoding gives each row
        what :meth:`generate` gives it alone (the test checks this on the tiny
        policy). ``sampling`` is every row's, or one per row differing only in
        ``seed``: with ``temperature > 0`` each row draws from its own seeded
        stream (:mod:`~agents.backends.row_sampler`), so a seeded row samples
        what it samples alone. Multimodal models and
        ``stop`` strings go row by row (the processors' batched image
        placement differs per model; HF stops a batch only when every row hit
        a stop string).
        """
        if not batch:
            return []
        rows = row_samplings(sampling, len(batch))
        sampling, _, _ = begin_generation(self, None, rows[0])
        images = batch_images(batch, images)
        if len(batch) <= 1 or self.multimodal or sampling.stop:
            return one_by_one(self, batch, images, rows)
        torch = require("torch")
        transformers = require("transformers")
        infos = [begin_generation(self, i, sampling)[2] for i in images]
        start = time.perf_counter()
        with self._lock:
            prompts = [self.render_chat(messages) for messages in batch]
            pad_id = (
                self.tokenizer.pad_token_id
                if self.tokenizer.pad_token_id is not None
                else self._eos_ids[0]
            )
            encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
            width = max(len(ids) for ids in encoded)
            config = transformers.GenerationConfig(
                max_new_tokens=sampling.max_new_tokens,
                do_sample=False,  # a sampled token is drawn by the RowSampler
                top_k=None,
                eos_token_id=self._eos_ids,
                pad_token_id=pad_id,
                return_dict_in_generate=True,
                output_logits=True,
                # per_row passes a StaticCache whose length changes every batch
                disable_compile=self.prefill == "per_row",
            )
            bare = self.model.disable_adapter() if self._bare else contextlib.nullcontext()
            with eval_mode(self.model), torch.inference_mode(), bare:
                self._check_prefix_cache()
                if self.prefill == "per_row":
                    inputs = row_prefill.prefill_rows(
                        self.model,
                        encoded,
                        pad_id,
                        max_new_tokens=sampling.max_new_tokens,
                        pool=self.prefix_cache,
                    )
                else:
                    inputs = row_prefill.left_padded(encoded, pad_id, self.model.device)
                out = self.model.generate(
                    **inputs, generation_config=config, logits_processor=self._sampler(rows)
                )
        latency = time.perf_counter() - start
        logits = torch.stack([step.float() for step in out.logits], dim=1)  # (B, T, V)
        logprobs_all = torch.log_softmax(logits, dim=-1)
        results = []
        for row, (ids, info) in enumerate(zip(encoded, infos, strict=True)):
            token_ids = out.sequences[row, width:].tolist()
            end = next((i + 1 for i, t in enumerate(token_ids) if t in self._eos_ids), None)
            token_ids = token_ids[:end] if end is not None else token_ids
            logprobs = [float(logprobs_all[row, i, t]) for i, t in enumerate(token_ids)]
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            info.update(
                finish_reason="stop" if end is not None else "length",
                prompt_tokens=len(ids),
                completion_tokens=len(token_ids),
                latency_s=latency,
                batch_size=len(batch),
                prefill=self.prefill,
            )
            results.append(Generation(text=text, token_ids=token_ids, logprobs=logprobs, info=info))
        return results

    def _sampler(self, rows: Sequence[SamplingParams]) -> Any:
        """``generate``'s logits processors: none when greedy, else a
        :class:`~agents.backends.row_sampler.RowSampler` with each row's seed."""
        transformers = require("transformers")
        sampling = rows[0]
        if sampling.temperature <= 0:
            return transformers.LogitsProcessorList()
        seeds = [row.seed for row in rows]
        sampler = RowSampler(seeds, sampling.temperature, sampling.top_p)
        return transformers.LogitsProcessorList([sampler])

    def _release(self) -> None:
        on_cuda = self.device.startswith("cuda")
        self.model = None  # empties the prefix cache too
        gc.collect()
        if on_cuda:
            require("torch").cuda.empty_cache()

    def __repr__(self) -> str:
        return (
            f"TransformersBackend(model={self.model_name!r}, adapter={self.adapter!r}, "
            f"device={self.device!r}, dtype={str(self.dtype).removeprefix('torch.')!r})"
        )
