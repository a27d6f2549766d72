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
learning, and these copies alone do not teach it any: the student prompt
already determines the target, so the model can (and does) ignore the
section. ``counterfactual_fraction`` adds copies whose demonstration acts on
another element listed in the prompt and whose target is that
demonstration: there, copying the demonstration is the only way to be right.
That is what makes SDFT's demonstration-conditioned teacher better than the
student.

Why not TRL's ``SFTTrainer``: it expresses completion-only loss on
prompt/completion data, but it renders and tokenises the chat itself. Here
the prompt must be tokenised exactly as the agent sends it
(``TransformersBackend.encode_chat``, images included for VLMs), and SFT
shares checkpointing, crash resume, the evaluation gate and logging with
SDFT and GRPO (:mod:`learners.loop`); the loss itself is five lines.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agents.prompt import DEMO_BEGIN
from learners.config import SFTConfig, from_mapping, register_configs

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from learners.samples import Sample

__all__ = ["counterfactual", "jitter_port", "main", "run"]

_ELEMENT_ID = re.compile(r"^\[(e\d+)\]", re.MULTILINE)
_LOCAL_PORT = re.compile(r"(https?://(?:127\.0\.0\.1|localhost)):(\d+)")


def jitter_port(
    messages: list[dict[str, Any]], target: str, rng: random.Random
) -> tuple[list[dict[str, Any]], str]:
    """``(messages, target)`` with the port of every local URL moved to a random one.

    One substitution for the item: each local port is replaced by the same random
    port in the prompt and in the target (a ``NAVIGATE`` to the task server), so
    the model learns to copy the port it is shown, not to recall one from
    training. Distinct ports stay distinct.
    """
    texts = [m["content"] for m in messages if isinstance(m.get("content"), str)] + [target]
    ports = dict.fromkeys(m[2] for text in texts for m in _LOCAL_PORT.finditer(text))
    drawn: dict[str, str] = {}
    for port in ports:
        new = str(rng.randrange(1024, 65536))
        while new in drawn.values():
            new = str(rng.randrange(1024, 65536))
        drawn[port] = new

    def sub(text: str) -> str:
        return _LOCAL_PORT.sub(lambda m: f"{m[1]}:{drawn[m[2]]}", text)

    jittered = [
        {**m, "content": sub(m["content"])} if isinstance(m.get("content"), str) else m
        for m in messages
    ]
    return jittered, sub(target)


def counterfactual(sample: Sample, rng: random.Random) -> tuple[list[dict[str, Any]], str] | None:
    """``(teacher messages, target)`` whose demonstration targets another element.

    The demonstration of ``sample.teacher_messages`` is replaced by the same
    action on a different element id listed in the prompt (the ``[eN]`` rows
    of ELEMENTS), and that action is the target. ``None`` when the action has
    no element or the prompt lists no other element.
    """
    action = json.loads(sample.target)
    current = action.get("element_id")
    content = sample.teacher_messages[-1]["content"]
    if current is None or not isinstance(content, str) or DEMO_BEGIN not in content:
        return None
    head, _, tail = content.rpartition(DEMO_BEGIN)
    others = sorted(set(_ELEMENT_ID.findall(head)) - {current})
    if not others:
        return None
    target = json.dumps({**action, "element_id": rng.choice(others)}, ensure_ascii=False)
    messages = [dict(m) for m in sample.teacher_messages]
    messages[-1]["content"] = head + DEMO_BEGIN + tail.replace(sample.demonstration, target)
    return messages, target


def run(cfg: SFTConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Train and save the adapter; returns ``{"output_dir", "metrics", "history"}``.

    A setting, model or data it cannot train with is
    :class:`browser_env.refusal.Refused` (a ``ValueError``), before the first step.
    """
    from browser_env.refusal import refusing
    from learners.rollout import check_eval_env_ids

    with refusing():
        if not isinstance(cfg, SFTConfig):
            cfg = from_mapping(SFTConfig, cfg)  # (checks its own values: SFTConfig.__post_init__)
        check_eval_env_ids(cfg)

    import dataclasses

    import torch

    from agents.seeding import derive_seed
    from learners.loop import TrainLoop
    from learners.rollout import attach_env_gate
    from learners.samples import check_episodes, data_info, load_samples, sample_images
    from learners.trainable import completion_logits, end_of_turn_id

    with refusing():  # the episodes are looked at, the model loads
        check_episodes(cfg)
        loop = TrainLoop(cfg, "sft")
    with loop:  # the output dir held, the eval envs open, until the run ends, however it ends
        backend = loop.backend
        with refusing():  # the episodes are read
            samples = load_samples(cfg, backend)
        rng = random.Random(cfg.seed)
        # (sample, prompt messages, target): student copies, demonstration copies,
        # counterfactual copies (see the module doc).
        items = [(s, s.messages, s.target) for s in samples]
        items += [
            (s, s.teacher_messages, s.target) for s in samples if rng.random() < cfg.demo_fraction
        ]
        n_plain = len(items)
        whole, part = divmod(cfg.counterfactual_fraction, 1.0)
        for s in samples:
            for _ in range(int(whole) + (rng.random() < part)):
                made = counterfactual(s, rng)
                if made is not None:
                    items.append((s, *made))
        if cfg.max_steps <= 0:  # num_epochs passes (a finite number > 0: SFTConfig)
            steps = max(1, round(cfg.num_epochs * len(items) / cfg.batch_size))
            loop.cfg = cfg = dataclasses.replace(loop.cfg, max_steps=steps)
        loop.data_info = {
            **data_info(cfg, samples),
            "num_items": len(items),
            "num_demo_items": n_plain - len(samples),
            "num_counterfactual_items": len(items) - n_plain,
        }
        end_of_turn = end_of_turn_id(backend)  # the chat template's, e.g. <|eot_id|> (Llama-3)
        attach_env_gate(loop, cfg)

        def loss_step(step: int) -> dict[str, float]:
            pick = random.Random(derive_seed(cfg.seed, step))
            batch = [
                items[i] for i in pick.sample(range(len(items)), min(cfg.batch_size, len(items)))
            ]
            if cfg.port_jitter:  # one port per item, in its prompt and its target alike
                batch = [(s, *jitter_port(messages, target, pick)) for s, messages, target in batch]
            targets = [
                backend.tokenizer.encode(target, add_special_tokens=False) + [end_of_turn]
                for _, _, target in batch
            ]
            n_tokens = sum(len(t) for t in targets)
            loss_sum = correct = 0.0
            for (sample, messages, _), target in zip(batch, targets, strict=True):
                logits = completion_logits(
                    backend, messages, sample_images(sample, backend), target
                )
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


def hydra_entry(cfg: DictConfig) -> dict[str, Any]:
    """The ``@hydra.main`` body: ``cfg.learner`` (with ``model=`` and ``+backend=``
    checked by :func:`learners.entry.learner_values`); a refusal in one line."""
    from browser_env.refusal import exit_on_interrupt, exit_on_refusal, refusing
    from learners.entry import learner_values, say_where

    with exit_on_refusal(), exit_on_interrupt():  # Ctrl-C: the loop's resume line, status 130
        with refusing():
            values = learner_values(cfg, "sft")
        return say_where(run(values))


def main() -> None:
    import hydra

    register_configs()
    hydra.main(version_base="1.3", config_path="../conf", config_name="sft")(hydra_entry)()


if __name__ == "__main__":
    main()
