"""The trainable model: our inference backend with a LoRA adapter on its model.

Learners train ``backend.model`` of a :class:`TransformersBackend`, so
completions are sampled with ``backend.generate`` and prompts are tokenised
with ``backend.encode_chat`` -- the exact path the agent takes at inference.

Where the weights start (:func:`learners.checkpoint.run_start` decides):

1. ``output_dir`` holds a finished output (``training.json`` with
   ``"status": "complete"`` beside an adapter, or beside a full model with
   ``lora=false``) -> training continues from it;
2. ``init_adapter`` is set -> training starts from it;
3. otherwise a fresh LoRA (B = 0, so the first policy is the base model), or
   the base model itself with ``lora=false``.

An interrupted run is rebuilt from the same start and then resumes its
newest checkpoint (:class:`learners.loop.TrainLoop`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.backends.common import require

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from agents.backends.transformers import TransformersBackend
    from learners.checkpoint import RunStart
    from learners.config import LearnerConfig

__all__ = [
    "TrainableModel",
    "completion_logits",
    "end_of_turn_id",
    "load_trainable",
    "no_dropout",
    "resolve_model",
    "swapped_weights",
    "trainable_state",
]


def resolve_model(model: str) -> str:
    """A preset (``tiny``, ``smollm2-135m``: :mod:`agents.models`) -> its local dir."""
    from agents.models import resolve_model as resolve

    return resolve(model)


@dataclasses.dataclass
class TrainableModel:
    """What a torch learner trains: ``backend.model`` (LoRA-wrapped unless ``lora=false``).

    Not the agent's policy (an :class:`agents.agent.Agent` acts) and not a
    shipped model (:mod:`agents.pretrained`): the weights being optimised, with
    the backend that samples from them and the record of where they started.
    """

    backend: TransformersBackend
    base_model: str
    init_from: str | None  # adapter (or, lora=false, full model) the weights started from

    @property
    def model(self) -> Any:
        return self.backend.model

    def trainable_parameters(self) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]


def load_trainable(cfg: LearnerConfig, start: RunStart | None = None) -> TrainableModel:
    """Build the backend for ``cfg.model`` and put the trainable LoRA on it (see module doc).

    ``start`` is :func:`~learners.checkpoint.run_start` of ``cfg.output_dir``
    (computed when not given); the weights of a checkpoint to resume are not
    loaded here.
    """
    peft = require("peft", purpose="LoRA training")
    from agents.backends.transformers import TransformersBackend
    from learners.checkpoint import load_model_weights, run_start

    if start is None:
        start = run_start(cfg.output_dir)
    base = resolve_model(cfg.model)
    init = None
    if start.continues is not None:
        previous = json.loads((Path(start.continues) / "training.json").read_text())
        if previous.get("base_model") not in (None, base, cfg.model):
            raise ValueError(
                f"{cfg.output_dir} was trained on {previous.get('base_model')!r}, not {base!r}: "
                "pick another output_dir"
            )
        if start.kind == "adapter" and not cfg.lora:
            raise ValueError(
                f"{cfg.output_dir} holds a LoRA adapter: continue it with lora=true, "
                "or pick another output_dir"
            )
        if start.kind == "model" and cfg.lora:
            raise ValueError(
                f"{cfg.output_dir} holds a full model (trained with lora=false): continue it "
                "with lora=false, or pick another output_dir"
            )
        init = start.continues
    elif cfg.init_adapter:
        if not cfg.lora:
            raise ValueError("init_adapter is a LoRA adapter: it needs lora=true")
        init = str(cfg.init_adapter)
    backend = TransformersBackend(base, device=cfg.device, dtype="float32")
    if not cfg.lora:
        if init is not None:  # the finished full model in output_dir
            load_model_weights(backend.model, init)
        backend.model.requires_grad_(True)
        return TrainableModel(backend=backend, base_model=base, init_from=init)
    if init is not None:
        # A saved adapter carries its own lora_dropout (an SFT adapter's 0.05);
        # this run's setting wins, so SDFT/GRPO after SFT train without dropout.
        config = peft.PeftConfig.from_pretrained(init)
        config.lora_dropout = cfg.lora_dropout
        model = peft.PeftModel.from_pretrained(
            backend.model, init, config=config, is_trainable=True
        )
    else:
        require("torch").manual_seed(cfg.seed)
        targets = cfg.lora_target_modules
        lora = peft.LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
            task_type="CAUSAL_LM",
        )
        model = peft.get_peft_model(backend.model, lora)
    backend.model = model
    backend.adapter = init
    return TrainableModel(backend=backend, base_model=base, init_from=init)


def trainable_state(trainable: TrainableModel) -> dict[str, Any]:
    """A detached copy of the trainable weights (the LoRA adapter with LoRA)."""
    return {n: p.detach().clone() for n, p in trainable.trainable_parameters()}


@contextlib.contextmanager
def no_dropout(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode (dropout off; gradients still flow), then back.

    Targets and log-probs that a loss compares against -- SDFT's teacher,
    GRPO's policy log-probs -- must not be a random draw of dropout masks.
    """
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def swapped_weights(params: list[tuple[str, Any]], weights: Mapping[str, Any]) -> Iterator[None]:
    """Temporarily load ``weights`` (e.g. a teacher's or the reference's) into the
    trainable parameters ``params``; the live values are restored afterwards."""
    saved = [p.detach().clone() for _, p in params]
    try:
        for name, p in params:
            p.data.copy_(weights[name])
        yield
    finally:
        for (_, p), value in zip(params, saved, strict=True):
            p.data.copy_(value)


_TURN_PROBE = "<<browser-rl end-of-turn probe>>"


def end_of_turn_id(backend: TransformersBackend) -> int:
    """The token that ends an assistant turn, for training targets.

    That is the token the chat template writes right after an assistant
    message's content, when generation stops on it (it is one of
    ``backend._eos_ids``); otherwise -- no chat template, a template that puts
    text or nothing there -- the first stop id. The first of
    ``generation_config.eos_token_id`` alone is wrong for Llama-3 and Gemma:
    their lists start with the end-of-text token (``<|end_of_text|>``,
    ``<eos>``), while their templates close a turn with ``<|eot_id|>`` or
    ``<end_of_turn>``. The stop-id condition keeps a trained turn one that
    ``generate`` ends.
    """
    from jinja2 import TemplateError

    stops = list(getattr(backend, "_eos_ids", None) or [backend.tokenizer.eos_token_id])
    multimodal = bool(getattr(backend, "multimodal", False))
    owner = backend.processor if multimodal else backend.tokenizer
    if getattr(owner, "chat_template", None) is None:
        return stops[0]
    probe = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": _TURN_PROBE}]
    try:  # as prompts are rendered (it appends a generation prompt, after the tail read here)
        rendered = backend.render_chat(probe)
    except (TemplateError, ValueError, TypeError):  # a template that refuses the probe
        return stops[0]
    _, found, tail = rendered.rpartition(_TURN_PROBE)
    ids = backend.tokenizer.encode(tail, add_special_tokens=False) if found else []
    return ids[0] if ids and ids[0] in stops else stops[0]


def completion_logits(
    backend: TransformersBackend,
    messages: list[dict[str, Any]],
    images: Sequence[Image] | None,
    completion_ids: Sequence[int] | torch.Tensor,
) -> torch.Tensor:
    """Logits ``(T, V)`` predicting each of ``completion_ids`` after the chat prompt.

    The prompt is tokenised by ``backend.encode_chat`` (the inference path),
    the completion appended, and row ``t`` of the result scores token ``t``.
    """
    torch = require("torch")
    _, inputs = backend.encode_chat(messages, images or None)
    completion = torch.as_tensor(
        completion_ids, dtype=torch.long, device=inputs["input_ids"].device
    )
    prompt_len = inputs["input_ids"].shape[1]
    inputs = _extend_per_token(dict(inputs), completion[None], prompt_len)
    if _takes_logits_to_keep(backend.model):
        # Only the last C + 1 positions go through the LM head (the first C of them
        # predict the completion): the prompt's (prompt_len x vocab) logits were a
        # fifth of a SmolLM2 step's compute and ~140 MB per 700-token prompt.
        keep = completion.numel() + 1
        return backend.model(**inputs, logits_to_keep=keep).logits[0][: completion.numel()]
    logits = backend.model(**inputs).logits[0]
    return logits[prompt_len - 1 : prompt_len - 1 + completion.numel()]


def _extend_per_token(
    inputs: dict[str, Any], completion: torch.Tensor, prompt_len: int
) -> dict[str, Any]:
    """``inputs`` of a prompt, extended by the ``(1, C)`` ``completion`` tokens.

    Every per-token tensor -- ``(1, prompt_len)``, like ``input_ids`` -- grows by C
    columns as ``generate`` grows it: the tokens themselves, an all-ones
    ``attention_mask``, ``token_type_ids`` repeating its last value, and the rest
    (Qwen2-VL's ``mm_token_type_ids``: 0 is a text token) with zeros. Image tensors
    are not per token and stay as they are.
    """
    torch = require("torch")
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    n = completion.shape[1]
    for key, value in list(inputs.items()):
        if key in ("input_ids", "attention_mask") or key.startswith(("pixel_", "image_", "video_")):
            continue
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (1, prompt_len):
            continue
        tail = value[:, -1:].expand(1, n) if key == "token_type_ids" else value.new_zeros((1, n))
        inputs[key] = torch.cat([value, tail], dim=1)
    return inputs


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether the (base) model's forward accepts ``logits_to_keep`` (transformers'
    causal LMs and VLMs do; a PEFT wrapper passes it through)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters
