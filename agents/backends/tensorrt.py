"""NVIDIA TensorRT-LLM backend through its LLM API (``tensorrt_llm.LLM``).

::

    backend = TensorRTBackend("meta-llama/Llama-3.1-8B-Instruct", adapter="runs/sft/adapter")

Needs a CUDA machine with ``tensorrt_llm`` installed (NVIDIA's wheel or
container); importing this module is free, building the backend without
``tensorrt_llm`` raises an ``ImportError`` that says how to get it.

The prompt is the Hugging Face chat template of the model's tokenizer,
tokenized here and passed as token ids, so TensorRT-LLM sees exactly the
tokens the transformers backend would. A PEFT adapter directory is served
through TensorRT-LLM's LoRA support (``LoraConfig`` + ``LoRARequest``), which
reads the Hugging Face PEFT format directly. Text models only.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from typing import Any

from agents.backends.base import BackendBase, Generation, Message, SamplingParams
from agents.backends.common import (
    apply_stop,
    batch_images,
    begin_generation,
    require,
    row_samplings,
    validate_messages,
)
from agents.backends.row_sampler import row_seeds
from agents.models import resolve_model

__all__ = ["TensorRTBackend"]

# Where TensorRT-LLM has kept these classes across releases, newest first.
_LORA_CONFIG_PATHS = (
    "tensorrt_llm.lora_helper",
    "tensorrt_llm.lora_manager",
    "tensorrt_llm.llmapi",
)
_LORA_REQUEST_PATHS = (
    "tensorrt_llm.executor.request",
    "tensorrt_llm.executor",
    "tensorrt_llm.llmapi",
)


def _find(name: str, modules: Sequence[str]) -> Any:
    for module in modules:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise ImportError(f"this tensorrt_llm has no {name} in {', '.join(modules)}")


class TensorRTBackend(BackendBase):
    """A TensorRT-LLM model behind the ``Backend`` protocol.

    Args:
        model: hub id, HF checkpoint directory or TensorRT engine directory.
        adapter: optional PEFT LoRA adapter directory.
        tokenizer: tokenizer path or id when it is not next to ``model``
            (engine directories).
        max_lora_rank: the largest LoRA rank the engine reserves room for.
        tensor_parallel_size: GPUs to shard over.
        dtype: ``"auto"``, ``"float16"``, ``"bfloat16"``, ...
        trust_remote_code: passed to TensorRT-LLM and the tokenizer.
        llm_kwargs: further ``tensorrt_llm.LLM`` arguments (``max_batch_size``,
            ``kv_cache_config``, ``backend``, ...).
    """

    name = "tensorrt"
    multimodal = False

    def __init__(
        self,
        model: str | os.PathLike[str],
        adapter: str | os.PathLike[str] | None = None,
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        max_lora_rank: int = 64,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        trtllm = require("tensorrt_llm", purpose="the TensorRT-LLM backend")
        transformers = require("transformers", purpose="chat templates for TensorRT-LLM")
        self.model_name = resolve_model(os.fspath(model))  # presets: agents.models
        self.adapter = os.fspath(adapter) if adapter is not None else None
        tokenizer_name = os.fspath(tokenizer) if tokenizer is not None else self.model_name
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            tokenizer_name, trust_remote_code=trust_remote_code
        )
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "tokenizer": tokenizer_name,
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "trust_remote_code": trust_remote_code,
            **(llm_kwargs or {}),
        }
        self._lora_request = None
        if self.adapter is not None:
            lora_config_cls = _find("LoraConfig", _LORA_CONFIG_PATHS)
            lora_request_cls = _find("LoRARequest", _LORA_REQUEST_PATHS)
            kwargs["lora_config"] = lora_config_cls(
                lora_dir=[self.adapter], max_lora_rank=max_lora_rank, max_loras=1, max_cpu_loras=1
            )
            self._lora_request = lora_request_cls("adapter", 1, self.adapter)
        self._sampling_cls = trtllm.SamplingParams
        self.llm = trtllm.LLM(**kwargs)

    def render_chat(self, messages: Sequence[Message]) -> str:
        conversation = validate_messages(messages)
        if getattr(self.tokenizer, "chat_template", None) is None:
            return "\n".join(f"{m['role']}: {m['content']}" for m in conversation) + "\nassistant:"
        return self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )

    def _sampling_params(self, sampling: SamplingParams) -> Any:
        kwargs: dict[str, Any] = {"max_tokens": sampling.max_new_tokens, "logprobs": 1}
        if sampling.temperature > 0:
            # a fresh seed when none is given: TensorRT-LLM falls back on a fixed default
            (seed,) = row_seeds([sampling.seed])
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, seed=seed)
        else:
            kwargs.update(top_k=1)  # greedy
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        return self._sampling_cls(**kwargs)

    def generate(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        sampling: SamplingParams | None = None,
    ) -> Generation:
        sampling, _, info = begin_generation(
            self, images, sampling
        )  # text only: images counted, dropped
        prompt_ids = self.tokenizer.encode(self.render_chat(messages), add_special_tokens=False)
        start = time.perf_counter()
        result = self.llm.generate(
            {"prompt_token_ids": prompt_ids},
            self._sampling_params(sampling),
            use_tqdm=False,
            lora_request=self._lora_request,
        )
        output = (result[0] if isinstance(result, list) else result).outputs[0]
        token_ids = [int(t) for t in output.token_ids]
        text, _ = apply_stop(output.text, sampling.stop)
        info.update(
            finish_reason=str(output.finish_reason or "length"),
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(token_ids),
            latency_s=time.perf_counter() - start,
        )
        return Generation(
            text=text,
            token_ids=token_ids,
            logprobs=_logprobs(output.logprobs, token_ids),
            info=info,
        )

    def generate_batch(
        self,
        batch: Sequence[Sequence[Message]],
        images: Sequence[Sequence[Any] | None] | None = None,
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[Generation]:
        """All of ``batch`` in one ``LLM.generate`` call: TensorRT-LLM's in-flight
        batching schedules the prompts together (no padding: it packs them).
        Greedy rows equal :meth:`generate`'s. Text only, like :meth:`generate`.
        ``sampling`` is every row's, or one per row differing only in ``seed``
        (each request carries its own)."""
        images = batch_images(batch, images)
        if not batch:
            return []
        rows = row_samplings(sampling, len(batch))
        sampling, _, _ = begin_generation(self, None, rows[0])
        infos = [begin_generation(self, i, sampling)[2] for i in images]
        prompts = [
            self.tokenizer.encode(self.render_chat(m), add_special_tokens=False) for m in batch
        ]
        start = time.perf_counter()
        results = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompts],
            [self._sampling_params(row) for row in rows],
            use_tqdm=False,
            lora_request=None if self._lora_request is None else [self._lora_request] * len(batch),
        )
        latency = time.perf_counter() - start
        out = []
        for result, ids, info in zip(results, prompts, infos, strict=True):
            output = result.outputs[0]
            token_ids = [int(t) for t in output.token_ids]
            text, _ = apply_stop(output.text, sampling.stop)
            info.update(
                finish_reason=str(output.finish_reason or "length"),
                prompt_tokens=len(ids),
                completion_tokens=len(token_ids),
                latency_s=latency,
                batch_size=len(batch),
            )
            logprobs = _logprobs(output.logprobs, token_ids)
            out.append(Generation(text=text, token_ids=token_ids, logprobs=logprobs, info=info))
        return out

    def _release(self) -> None:
        shutdown = getattr(self.llm, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self.llm = None

    def __repr__(self) -> str:
        return f"TensorRTBackend(model={self.model_name!r}, adapter={self.adapter!r})"


def _logprobs(raw: Any, token_ids: list[int]) -> list[float] | None:
    """TensorRT-LLM reports floats, or per-step ``{token_id: Logprob}`` dicts, by version."""
    if not raw or len(raw) != len(token_ids):
        return None
    out = []
    for entry, token in zip(raw, token_ids, strict=True):
        if isinstance(entry, dict):
            value = entry.get(token)
            if value is None:
                return None
            entry = getattr(value, "logprob", value)
        out.append(float(entry))
    return out
