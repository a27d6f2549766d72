"""The trainable model: our inference backend with a LoRA adapter on its model.

Learners train ``backend.model`` of a :class:`TransformersBackend`, so
completions are sampled with ``backend.generate`` and prompts are tokenised
with ``backend.encode_chat`` -- the exact path the agent takes at inference.

Where the weights start, in this order:

1. ``output_dir`` holds checkpoints of an unfinished run -> that run resumes
   (see :mod:`learners.checkpoint`);
2. ``output_dir`` holds a finished adapter (``training.json`` with
   ``"status": "complete"``) -> training continues from that adapter;
3. ``init_adapter`` is set -> training starts from it;
4. otherwise a fresh LoRA (B = 0, so the first policy is the base model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.backends.common import require

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from agents.backends.transformers import TransformersBackend
    from learners.config import LearnerConfig

__all__ = [
    "TrainableModel",
    "completion_logits",
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
    init_from: str | None  # adapter the weights started from, if any

    @property
    def model(self) -> Any:
        return self.backend.model

    def trainable_parameters(self) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]


def finished_adapter(output_dir: str | os.PathLike[str]) -> bool:
    meta = Path(output_dir) / "training.json"
    if not meta.is_file() or not (Path(output_dir) / "adapter_config.json").is_file():
        return False
    return json.loads(meta.read_text()).get("status") == "complete"


def load_trainable(cfg: LearnerConfig) -> TrainableModel:
    """Build the backend for ``cfg.model`` and put the trainable LoRA on it (see module doc)."""
    peft = require("peft", purpose="LoRA training")
    from agents.backends.transformers import TransformersBackend

    base = resolve_model(cfg.model)
    backend = TransformersBackend(base, device=cfg.device, dtype="float32")
    init = None
    if finished_adapter(cfg.output_dir):
        previous = json.loads((Path(cfg.output_dir) / "training.json").read_text())
        if previous.get("base_model") not in (None, base, cfg.model):
            raise ValueError(
                f"{cfg.output_dir} was trained on {previous.get('base_model')!r}, not {base!r}: "
                "pick another output_dir"
            )
        init = str(cfg.output_dir)
    elif cfg.init_adapter:
        init = str(cfg.init_adapter)
    if not cfg.lora:
        if init is not None:
            raise ValueError("init_adapter / resuming needs lora=true")
        backend.model.requires_grad_(True)
        return TrainableModel(backend=backend, base_model=base, init_from=None)
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
    inputs = dict(inputs)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion[None]], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if _takes_logits_to_keep(backend.model):
        # Only the last C + 1 positions go through the LM head (the first C of them
        # predict the completion): the prompt's (prompt_len x vocab) logits were a
        # fifth of a SmolLM2 step's compute and ~140 MB per 700-token prompt.
        keep = completion.numel() + 1
        return backend.model(**inputs, logits_to_keep=keep).logits[0][: completion.numel()]
    logits = backend.model(**inputs).logits[0]
    return logits[prompt_len - 1 : prompt_len - 1 + completion.numel()]


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether the (base) model's forward accepts ``logits_to_keep`` (transformers'
    causal LMs and VLMs do; a PEFT wrapper passes it through)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters
