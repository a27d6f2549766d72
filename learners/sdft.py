"""Self-Distillation Fine-Tuning (Shenfeld et al., arXiv 2601.19897).

::

    python -m learners.sdft learner.episodes=[runs/expert] learner.max_steps=200
    python -m learners.sdft +backend=mlx learner.episodes=[runs/expert]   # mlx-lm LoRA

For every prompt ``x`` of a recorded step (built by the agents' one prompt
builder, exactly as at inference) and its expert action ``c``:

1. the student pi_theta(. | x) samples a completion y on-policy
   (``backend.generate``, the inference path);
2. the teacher is the same model conditioned on the demonstration:
   pi_phi(. | x, c), where the teacher prompt is ``build_prompt(...,
   demonstration=c)`` -- the student prompt plus one delimited section;
3. the loss is the per-token KL between the two next-token distributions
   along y, averaged over the completion tokens of the batch:
   sum_t KL(pi_theta(. | x, y<t) || pi_phi(. | x, c, y<t)) (reverse, the
   paper's default; ``kl_direction=forward`` swaps it; ``top_k`` restricts
   it to the student's top-k tokens);
4. the teacher weights phi are an EMA of the student's, as in the paper:
   after each step phi <- (1 - alpha) phi + alpha theta (``ema_rate``,
   default 0.05 as TRL's ``teacher_update_rate``; 0 = frozen at the initial
   student). With LoRA the EMA runs over the adapter weights only; the
   teacher forward swaps them in, so no second model is held. The teacher's
   targets are computed with dropout off. When the evaluation gate rolls the
   student back, the teacher rolls back with it (it is saved with the best
   checkpoint).

Logged: ``loss``, ``kl`` (full-vocabulary reverse KL, whatever the loss
variant), ``agreement`` (student and teacher argmax equal), ``entropy``,
``completion_length`` and ``action_match`` (the student's sampled action
equals the demonstrated one).

Why not TRL: TRL 1.16 ships ``trl.experimental.sdft.SDFTTrainer``, whose
teacher prompt template ``"{prompt}\\n\\n{privileged_context}"`` could
express our teacher prompt. We do not use it because (a) it tokenises and
left-truncates prompts itself (``max_prompt_length``), while ours must be the
agent's prompt through the backend's ``encode_chat`` (with images for VLMs),
(b) it is experimental API, and (c) the MLX twin (:mod:`learners.sdft_mlx`)
must run the same algorithm, which a shared ~100-line loop makes checkable.
The KL in :mod:`learners.losses` is tested against a hand computation and
against TRL's ``compute_divergence``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from learners.config import SDFTConfig, from_mapping, register_configs

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from learners.samples import Sample

__all__ = ["main", "run"]


def run(
    cfg: SDFTConfig | Mapping[str, Any], *, evaluate_fn: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Train and save the adapter; returns ``{"output_dir", "metrics", "history"}``.

    ``evaluate_fn() -> success rate`` replaces the evaluation gate's live env
    episodes (with ``eval_steps > 0``; for tests and custom evaluations).

    A setting, model or data it cannot train with is
    :class:`browser_env.refusal.Refused` (a ``ValueError``), before the first step
    (with ``backend=mlx``, the settings and the output dir only).
    """
    from browser_env.refusal import refusing
    from learners.rollout import check_eval_env_ids

    with refusing():
        if not isinstance(cfg, SDFTConfig):
            cfg = from_mapping(SDFTConfig, cfg)
        check_eval_env_ids(cfg)  # torch and MLX alike (SDFTConfig refused bad settings)
        if cfg.backend == "mlx" and cfg.enrich:
            raise ValueError("learner.enrich is supported by the torch backend only")
    if cfg.backend == "mlx":
        from learners.sdft_mlx import run as run_mlx

        return run_mlx(cfg, evaluate_fn=evaluate_fn)

    import torch

    from agents.backends.base import SamplingParams
    from agents.seeding import derive_seed
    from learners.loop import TrainLoop
    from learners.losses import agreement, ema_update, entropy, token_kl
    from learners.rollout import attach_env_gate
    from learners.samples import (
        action_matches,
        check_episodes,
        data_info,
        load_samples,
        sample_images,
    )
    from learners.trainable import completion_logits, no_dropout, swapped_weights, trainable_state

    with refusing():  # the episodes are looked at, the model loads
        check_episodes(cfg)
        loop = TrainLoop(cfg, "sdft")
    with loop:  # the output dir held, the eval envs open, until the run ends, however it ends
        backend = loop.backend
        with refusing():  # the episodes are read
            samples = load_samples(cfg, backend)
        loop.data_info = data_info(cfg, samples)
        if cfg.enrich:
            loop.data_info["enrich"] = _enrich(samples, cfg.enrich)
        params = loop.trainable.trainable_parameters()
        teacher = loop.resume_state.get("teacher") or trainable_state(loop.trainable)

        def restore_teacher(state: Mapping[str, Any]) -> None:
            with torch.no_grad():
                for name, value in state.items():
                    teacher[name].copy_(value)

        loop.keep_state("teacher", lambda: teacher, restore_teacher)
        if evaluate_fn is not None:
            loop.set_gate(evaluate_fn)
        else:
            attach_env_gate(loop, cfg)

        def loss_step(step: int) -> dict[str, float]:
            model = backend.model
            rng = random.Random(derive_seed(cfg.seed, step))
            batch = [
                samples[i]
                for i in rng.sample(range(len(samples)), min(cfg.batch_size, len(samples)))
            ]
            # 1. on-policy completions from the student prompt, one batched call:
            # each row samples from its own seed, as it would alone
            model.eval()
            images = [sample_images(sample, backend) for sample in batch]
            gens = backend.generate_batch(
                [sample.messages for sample in batch],
                [list(i) or None for i in images],
                [
                    SamplingParams(
                        max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        seed=derive_seed(cfg.seed, step, i),
                    )
                    for i in range(len(batch))
                ],
            )
            rollouts = [r for r in zip(batch, images, gens, strict=True) if r[2].token_ids]
            model.train()
            n_tokens = sum(len(g.token_ids) for _, _, g in rollouts)
            totals = dict.fromkeys(("loss", "kl", "agreement", "entropy"), 0.0)
            # 2-3. student and teacher distributions along each completion; the
            # loss is normalised by the batch's completion tokens and back-propagated
            # one sample at a time to bound memory.
            for sample, images, gen in rollouts:
                student = completion_logits(backend, sample.messages, images, gen.token_ids)
                with torch.no_grad(), swapped_weights(params, teacher), no_dropout(model):
                    teacher_logits = completion_logits(
                        backend, sample.teacher_messages, images, gen.token_ids
                    )
                per_token = token_kl(
                    student, teacher_logits, direction=cfg.kl_direction, top_k=cfg.top_k
                )
                (per_token.sum() / n_tokens).backward()
                with torch.no_grad():
                    totals["loss"] += float(per_token.sum())
                    totals["kl"] += float(token_kl(student, teacher_logits).sum())
                    totals["agreement"] += float(agreement(student, teacher_logits).sum())
                    totals["entropy"] += float(entropy(student).sum())
            metrics = {k: v / max(n_tokens, 1) for k, v in totals.items()}
            metrics["completion_length"] = n_tokens / max(len(rollouts), 1)
            metrics["action_match"] = sum(
                action_matches(g.text, s.target) for s, _, g in rollouts
            ) / max(len(batch), 1)
            return metrics

        def after_step(step: int) -> None:
            ema_update(teacher, params, cfg.ema_rate)

        return loop.fit(loss_step, after_step=after_step)


def _enrich(samples: list[Sample], options: Mapping[str, Any]) -> dict[str, Any]:
    """Put a model-written rationale into each teacher demonstration, in place
    (:mod:`learners.enrich`); returns what ``training.json`` records of it."""
    from learners.enrich import ENRICH_PROMPT_VERSION, Enricher, enrich_sample

    enricher = Enricher(**options)
    try:
        samples[:] = [enrich_sample(s, enricher) for s in samples]
    finally:
        enricher.close()
    return {"model": enricher.model, "version": ENRICH_PROMPT_VERSION, **enricher.stats}


def hydra_entry(cfg: DictConfig) -> dict[str, Any]:
    """The ``@hydra.main`` body: ``cfg.learner`` plus an optional ``+backend=...``
    group; a refusal in one line."""
    from browser_env.refusal import exit_on_interrupt, exit_on_refusal, refusing
    from learners.entry import learner_values, say_where

    with exit_on_refusal(), exit_on_interrupt():  # Ctrl-C: the loop's resume line, status 130
        with refusing():
            values = learner_values(cfg, "sdft", trainable=("transformers", "mlx"))
        return say_where(run(values))


def main() -> None:
    import hydra

    register_configs()
    hydra.main(version_base="1.3", config_path="../conf", config_name="sdft")(hydra_entry)()


if __name__ == "__main__":
    main()
