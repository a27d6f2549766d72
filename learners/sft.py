"""Behaviour cloning (SFT) on recorded episodes, LoRA by default.

::

    python -m learners.sft learner.episodes=[runs/expert] learner.max_steps=300

Each sample is a step of a (by default successful) episode: the prompt the
agent would have seen there, built by the one prompt builder, and the action
that was taken, as canonical JSON. The loss is the cross-entropy of the
action JSON and the end-of-turn token only (completion-only loss), averaged
over the batch's completion tokens.

``demo_fraction`` adds, for that fraction of samples, a second copy whose
prompt is the teacher prompt (the same prompt plus the expert's action in a
DEMONSTRATION section). A model trained from scratch has no in-context
learning; these copies teach it to use a demonstration, which is what makes
SDFT's demonstration-conditioned teacher better than the student.

Why not TRL's ``SFTTrainer``: it expresses completion-only loss on
prompt/completion data, but it renders and tokenises the chat itself. Here
the prompt must be tokenised exactly as the agent sends it
(``TransformersBackend.encode_chat``, images included for VLMs), and SFT
shares checkpointing, crash resume, the evaluation gate and logging with
SDFT and GRPO (:mod:`learners.loop`); the loss itself is five lines.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from learners.config import SFTConfig, from_mapping

__all__ = ["main", "run"]


def run(cfg: SFTConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Train and save the adapter; returns ``{"output_dir", "metrics", "history"}``."""
    if not isinstance(cfg, SFTConfig):
        cfg = from_mapping(SFTConfig, cfg)
    if not 0.0 <= cfg.demo_fraction <= 1.0:
        raise ValueError("demo_fraction must be in [0, 1]")

    import dataclasses

    import torch

    from learners.data import data_info, load_samples, sample_images
    from learners.loop import TrainLoop
    from learners.policy import completion_logits
    from learners.rollout import attach_env_gate

    loop = TrainLoop(cfg, "sft")
    backend = loop.backend
    samples = load_samples(cfg, backend)
    rng = random.Random(cfg.seed)
    items = [(s, s.messages) for s in samples]
    items += [(s, s.teacher_messages) for s in samples if rng.random() < cfg.demo_fraction]
    if cfg.max_steps <= 0:
        steps = max(1, round(cfg.num_epochs * len(items) / cfg.batch_size))
        loop.cfg = cfg = dataclasses.replace(loop.cfg, max_steps=steps)
    loop.data_info = {
        **data_info(cfg, samples),
        "num_items": len(items),
        "num_demo_items": len(items) - len(samples),
    }
    eos = list(getattr(backend, "_eos_ids", None) or [backend.tokenizer.eos_token_id])[0]
    attach_env_gate(loop, cfg)

    def loss_step(step: int) -> dict[str, float]:
        pick = random.Random(cfg.seed * 1_000_003 + step)
        batch = [items[i] for i in pick.sample(range(len(items)), min(cfg.batch_size, len(items)))]
        targets = [
            backend.tokenizer.encode(s.target, add_special_tokens=False) + [eos] for s, _ in batch
        ]
        n_tokens = sum(len(t) for t in targets)
        loss_sum = correct = 0.0
        for (sample, messages), target in zip(batch, targets, strict=True):
            logits = completion_logits(backend, messages, sample_images(sample, backend), target)
            labels = torch.as_tensor(target, device=logits.device)
            nll = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            (nll / n_tokens).backward()
            loss_sum += float(nll.detach())
            correct += float((logits.argmax(-1) == labels).sum())
        return {
            "loss": loss_sum / n_tokens,
            "token_accuracy": correct / n_tokens,
            "completion_length": n_tokens / len(batch),
        }

    return loop.fit(loss_step)


def hydra_entry(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return run(OmegaConf.to_container(cfg.learner, resolve=True))


def main() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path="../conf", config_name="sft")(hydra_entry)()


if __name__ == "__main__":
    main()
