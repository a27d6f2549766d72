"""SDFT with MLX (mlx-lm LoRA): the algorithm of :mod:`learners.sdft`, step for step.

::

    python -m learners.sdft +backend=mlx learner.episodes=[runs/expert]

The student samples with ``MLXBackend.generate`` from the agent's prompt; the
teacher is the same model with the EMA adapter weights swapped in, on the
teacher prompt (the demonstration appended); the loss is the per-token KL
(:func:`token_kl_mx`, the MLX twin of :func:`learners.losses.token_kl`,
tested against it) averaged over the batch's completion tokens.

The adapter is saved in PEFT's layout (``adapter_model.safetensors`` +
``adapter_config.json``): the exchange format every backend reads.
``MLXBackend(adapter=OUT)`` converts it back on load and
``TransformersBackend(adapter=OUT)`` / ``PeftModel.from_pretrained`` read it
directly. mlx-lm computes ``x @ lora_a @ lora_b * scale``; PEFT stores the
transposes and ``lora_alpha = scale * r``.

Checkpoints, resume and the evaluation gate are the torch learners'
(:mod:`learners.checkpoint`): the same ``checkpoints/step-N`` and
``checkpoints/best`` layout, written by :class:`MLXCheckpoints`, and the same
:class:`~learners.checkpoint.EvalGate` (``eval_steps`` with
``eval_env_ids``, or a test's ``evaluate_fn``), which rolls the student and
its EMA teacher back to the best checkpoint. A checkpoint holds what resuming
needs to go on as if never stopped; a finished adapter dir is continued
from, like the torch learner (fresh optimiser and teacher, the finished run's
checkpoints cleared: :func:`learners.checkpoint.run_start`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.backends.common import require
from learners.checkpoint import Checkpoints, RunStart, check_output_dir, run_start

if TYPE_CHECKING:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from agents.backends.mlx import MLXBackend
    from learners.config import SDFTConfig

__all__ = [
    "MLXCheckpoints",
    "load_peft_into_mlx",
    "peft_to_mlx_lora",
    "run",
    "save_mlx_lora_as_peft",
    "token_kl_mx",
]


def token_kl_mx(
    student_logits: mx.array,
    teacher_logits: mx.array,
    *,
    direction: str = "reverse",
    top_k: int | None = None,
) -> mx.array:
    """Per-position KL, as :func:`learners.losses.token_kl` (teacher gets no gradient)."""
    mx = require("mlx.core", purpose="SDFT with MLX")
    student = student_logits.astype(mx.float32)
    teacher = mx.stop_gradient(teacher_logits).astype(mx.float32)
    if top_k is not None:
        k = min(top_k, student.shape[-1])
        index = mx.stop_gradient(mx.argsort(-student, axis=-1))[..., :k]
        student = mx.take_along_axis(student, index, axis=-1)
        teacher = mx.take_along_axis(teacher, index, axis=-1)
    log_s = student - mx.logsumexp(student, axis=-1, keepdims=True)
    log_t = teacher - mx.logsumexp(teacher, axis=-1, keepdims=True)
    if direction == "reverse":
        return (mx.exp(log_s) * (log_s - log_t)).sum(-1)
    if direction == "forward":
        return (mx.exp(log_t) * (log_t - log_s)).sum(-1)
    raise ValueError(f"direction must be 'reverse' or 'forward', got {direction!r}")


def save_mlx_lora_as_peft(
    model: nn.Module, out: Path, *, rank: int, scale: float, base: str
) -> None:
    """Write the model's mlx-lm LoRA weights as a PEFT adapter directory."""
    import numpy as np
    from mlx.utils import tree_flatten
    from safetensors.numpy import save_file

    tensors, modules = {}, set()
    for name, value in tree_flatten(model.trainable_parameters()):
        module, leaf = name.rsplit(".", 1)
        if leaf not in ("lora_a", "lora_b"):
            continue
        modules.add(module.rsplit(".", 1)[-1])
        which = "A" if leaf == "lora_a" else "B"
        tensors[f"base_model.model.{module}.lora_{which}.weight"] = np.ascontiguousarray(
            np.array(value.astype(require("mlx.core").float32)).T
        )
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": scale * rank,
        "lora_dropout": 0.0,
        "target_modules": sorted(modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_peft_into_mlx(backend: MLXBackend, path: str | Path) -> tuple[int, float]:
    """Load a PEFT adapter into the MLX model as trainable LoRA layers; returns (rank, scale)."""
    backend.load_adapter(str(path))
    config = json.loads((Path(path) / "adapter_config.json").read_text())
    return int(config["r"]), float(config["lora_alpha"]) / int(config["r"])


class MLXCheckpoints(Checkpoints):
    """The checkpoint layout of :mod:`learners.checkpoint`, filled from MLX.

    A checkpoint holds the adapter (PEFT layout), ``optimizer.safetensors``
    (the AdamW state -- step count, learning rate, first and second moments --
    flattened with ``mlx.utils.tree_flatten``; absent in ``best``, as for
    torch), ``teacher.safetensors`` (the EMA teacher's adapter weights) and
    ``step.json`` (the step and the rest of the learner state: the gate's
    record). It serves :class:`~learners.checkpoint.EvalGate` as the torch
    :class:`~learners.checkpoint.CheckpointManager` does.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        model: nn.Module,
        *,
        rank: int,
        scale: float,
        base: str,
        keep: int = 2,
    ) -> None:
        super().__init__(output_dir, keep)
        self.model = model
        self.rank, self.scale, self.base = rank, scale, base

    def save(
        self,
        step: int,
        optimizer: optim.Optimizer | None,
        extra: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Path:
        mx = require("mlx.core")
        from mlx.utils import tree_flatten

        extra = dict(extra or {})
        teacher = extra.pop("teacher", None)

        def fill(path: Path) -> None:
            save_mlx_lora_as_peft(
                self.model, path, rank=self.rank, scale=self.scale, base=self.base
            )
            if optimizer is not None:
                state = dict(tree_flatten(optimizer.state))
                mx.save_safetensors(str(path / "optimizer.safetensors"), state)
            if teacher is not None:
                mx.save_safetensors(str(path / "teacher.safetensors"), dict(teacher))

        return self.write(step, fill, name=name, state=extra)

    def load_weights(self, path: Path) -> None:
        """Put the adapter of checkpoint ``path`` into the live model's LoRA layers."""
        from mlx.utils import tree_flatten, tree_unflatten

        live = dict(tree_flatten(self.model.trainable_parameters()))
        weights = {k: v.astype(live[k].dtype) for k, v in peft_to_mlx_lora(path).items()}
        if weights.keys() != live.keys():
            raise RuntimeError(f"{path}: adapter does not match the model's LoRA layers")
        self.model.update(tree_unflatten(list(weights.items())))

    def load_learner_state(self, path: Path) -> dict[str, Any]:
        """The learner state saved with ``path``: ``teacher`` (if saved) and the plain data."""
        mx = require("mlx.core")

        state = dict(self.read_step(path).get("state") or {})
        if (path / "teacher.safetensors").is_file():
            state["teacher"] = dict(mx.load(str(path / "teacher.safetensors")))
        return state

    def restore(self, path: Path, optimizer: optim.Optimizer) -> dict[str, Any]:
        """Load the optimiser state of ``path`` (weights are loaded as the run's init
        adapter); returns ``{"step", "extra"}`` as the torch manager does.

        Checkpoints from before optimiser state was saved resume with fresh
        AdamW moments and the resumed student as teacher.
        """
        mx = require("mlx.core")
        from mlx.utils import tree_unflatten

        if (path / "optimizer.safetensors").is_file():
            state = mx.load(str(path / "optimizer.safetensors"))
            optimizer.state = tree_unflatten(list(state.items()))
        return {"step": int(self.read_step(path)["step"]), "extra": self.load_learner_state(path)}


def peft_to_mlx_lora(path: Path) -> dict[str, mx.array]:
    """The LoRA weights of the PEFT adapter at ``path`` under mlx-lm's names
    (the inverse of :func:`save_mlx_lora_as_peft`)."""
    mx = require("mlx.core")

    weights = {}
    for name, value in mx.load(str(path / "adapter_model.safetensors")).items():
        module, leaf = name.removeprefix("base_model.model.").rsplit(".lora_", 1)
        weights[f"{module}.lora_{leaf[0].lower()}"] = value.T
    return weights


def run(cfg: SDFTConfig, *, evaluate_fn: Callable[[], float] | None = None) -> dict[str, Any]:
    """SDFT with mlx-lm (``learners.sdft.run`` with ``backend=mlx`` comes here).

    ``evaluate_fn() -> success rate`` replaces the evaluation gate's live env
    episodes, as in :func:`learners.sdft.run`. The output dir is held
    (:func:`browser_env.dirlock.hold_dir`) from the checks to the end of the
    run, as :class:`learners.loop.TrainLoop` holds the torch learners'.
    """
    require("mlx.core", purpose="SDFT with MLX")
    from browser_env.dirlock import hold_dir
    from browser_env.refusal import refusing
    from learners.loop import default_output_dir
    from learners.samples import check_episodes

    out = Path(cfg.output_dir or default_output_dir("sdft"))
    with contextlib.ExitStack() as held:
        with refusing():  # before the model loads, as the torch learner's
            if not cfg.lora:
                raise ValueError("the MLX learner trains LoRA adapters only (lora=true)")
            check_episodes(cfg)
            check_output_dir(out)  # before hold_dir makes it
            # tidy: a run refused before it wrote anything leaves no empty dirs behind
            held.enter_context(hold_dir(out, "learner.output_dir", tidy=True))
            origin = run_start(out, learner="sdft", config=cfg)  # a changed setting: refused
            if origin.kind == "model":
                raise ValueError(f"{out} holds a full model (lora=false): pick another output_dir")
        return _train(cfg, out, origin, evaluate_fn)


def _train(
    cfg: SDFTConfig, out: Path, origin: RunStart, evaluate_fn: Callable[[], float] | None
) -> dict[str, Any]:
    """:func:`run`'s training, into ``out`` (held), from ``origin``."""
    mx = require("mlx.core", purpose="SDFT with MLX")
    nn = require("mlx.nn")
    optim = require("mlx.optimizers")
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from agents.backends.base import SamplingParams
    from agents.backends.mlx import MLXBackend
    from agents.seeding import derive_seed
    from learners.checkpoint import EvalGate, write_training_json
    from learners.loop import METRICS_LINES, begin_metrics, newest_step, say_interrupted
    from learners.samples import action_matches, data_info, load_samples
    from learners.tracking import Tracker
    from learners.trainable import resolve_model

    base = resolve_model(cfg.model)
    backend = MLXBackend(base)
    model = backend.model
    latest = origin.resume
    init_from = origin.continues or cfg.init_adapter  # where this run started
    init = str(latest) if latest else init_from  # the weights to load now
    mx.random.seed(cfg.seed)
    if init:
        rank, scale = load_peft_into_mlx(backend, init)
    else:
        rank, scale = cfg.lora_r, cfg.lora_alpha / cfg.lora_r
        model.freeze()
        linear_to_lora_layers(
            model, len(model.layers), {"rank": rank, "scale": scale, "dropout": 0.0}
        )
    model.freeze()
    model.unfreeze(keys=["lora_a", "lora_b"], strict=False)
    trainable = dict(tree_flatten(model.trainable_parameters()))
    if not trainable:
        raise RuntimeError("no trainable LoRA parameters in the MLX model")
    checkpoints = MLXCheckpoints(
        out, model, rank=rank, scale=scale, base=base, keep=cfg.save_total_limit
    )
    teacher = {k: mx.array(v) for k, v in trainable.items()}
    optimizer = optim.AdamW(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
    start, resume_state = 0, {}
    if latest is not None:
        state = checkpoints.restore(latest, optimizer)
        start, resume_state = state["step"], state["extra"]
        teacher = resume_state.get("teacher") or teacher

    def restore_teacher(state: dict[str, Any]) -> None:
        if "teacher" in state:
            teacher.update(state["teacher"])

    closers: list[Callable[[], None]] = []
    if evaluate_fn is None and cfg.eval_steps and cfg.eval_env_ids:
        from learners.rollout import success_gate

        evaluate_fn, close = success_gate(backend, cfg)
        closers.append(close)

    gate = None
    if evaluate_fn is not None:
        gate = EvalGate(
            checkpoints,
            evaluate_fn,
            cfg.rollback_tolerance,
            learner_state=lambda: {"teacher": teacher},
            restore_learner_state=restore_teacher,
        )
        if "gate" in resume_state:
            gate.load_state(resume_state["gate"])

    samples = load_samples(cfg, backend)
    info = data_info(cfg, samples)

    def logits_for(prompt_ids: list[int], completion: list[int]) -> mx.array:
        x = mx.array([prompt_ids + completion])
        logits = model(x)[0]
        return logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(completion)]

    def loss_fn(
        _model: nn.Module, batch: list[tuple[list[int], list[int], mx.array]], n_tokens: int
    ) -> mx.array:
        total = mx.array(0.0)
        for prompt_ids, completion, teacher_logits in batch:
            student = logits_for(prompt_ids, completion)
            total = (
                total
                + token_kl_mx(
                    student, teacher_logits, direction=cfg.kl_direction, top_k=cfg.top_k
                ).sum()
            )
        return total / n_tokens

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    write = dict(
        learner="sdft",
        base_model=base,
        config=cfg,
        data={**info, "backend": "mlx", "trained_with": "mlx-lm (learners.sdft_mlx)"},
        init_from=init_from,
    )
    if origin.stale:  # the finished run's: never to be resumed, nor pruned against ours;
        checkpoints.clear()  # cleared once training starts (a refused run leaves them)
    write["metrics_start"] = begin_metrics(
        "sdft-mlx", out, latest, start, cfg.max_steps, resume_state.get(METRICS_LINES)
    )
    write_training_json(out, metrics={}, status="running", steps=start, **write)
    tracker = Tracker(cfg, "sdft-mlx", out)  # after training.json, as learners.loop does
    saved = start
    from tqdm.auto import tqdm

    try:
        for step in tqdm(range(start, cfg.max_steps), desc="sdft-mlx", disable=not cfg.progress):
            rng = random.Random(derive_seed(cfg.seed, step))
            picked = [
                samples[i]
                for i in rng.sample(range(len(samples)), min(cfg.batch_size, len(samples)))
            ]
            batch, texts = [], []
            student_weights = dict(tree_flatten(model.trainable_parameters()))
            for i, sample in enumerate(picked):
                gen = backend.generate(
                    sample.messages,
                    sampling=SamplingParams(
                        max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        seed=derive_seed(cfg.seed, step, i),
                    ),
                )
                if not gen.token_ids:
                    continue
                model.update(tree_unflatten(list(teacher.items())))
                teacher_logits = mx.stop_gradient(
                    logits_for(backend.encode_chat(sample.teacher_messages), gen.token_ids)
                )
                model.update(tree_unflatten(list(student_weights.items())))
                mx.eval(teacher_logits)
                batch.append(
                    (backend.encode_chat(sample.messages), list(gen.token_ids), teacher_logits)
                )
                texts.append((gen.text, sample.target))
            n_tokens = max(sum(len(c) for _, c, _ in batch), 1)
            with_student = [(logits_for(p, c), t) for p, c, t in batch]  # before the update
            kl = sum(float(token_kl_mx(s, t).sum()) for s, t in with_student) / n_tokens
            agree = sum(
                float((s.argmax(-1) == t.argmax(-1)).astype(mx.float32).sum())
                for s, t in with_student
            )
            loss, grads = loss_and_grad(model, batch, n_tokens)
            if cfg.max_grad_norm:
                grads, grad_norm = optim.clip_grad_norm(grads, cfg.max_grad_norm)
            optimizer.update(model, grads)
            mx.eval(model.parameters(), optimizer.state)
            if cfg.ema_rate > 0:
                for k, v in tree_flatten(model.trainable_parameters()):
                    teacher[k] = (1 - cfg.ema_rate) * teacher[k] + cfg.ema_rate * v
                mx.eval(list(teacher.values()))
            metrics = {
                "loss": float(loss),
                "kl": kl,
                "agreement": agree / n_tokens,
                "completion_length": n_tokens / max(len(batch), 1),
                "action_match": sum(action_matches(t, g) for t, g in texts) / max(len(picked), 1),
            }
            if cfg.max_grad_norm:
                metrics["grad_norm"] = float(grad_norm)
            done = step + 1
            if gate is not None and cfg.eval_steps and done % cfg.eval_steps == 0:
                metrics.update(gate(done))
            tracker.log(metrics, done)
            if cfg.save_steps and done % cfg.save_steps == 0 and done < cfg.max_steps:
                extra: dict[str, Any] = {"teacher": teacher, METRICS_LINES: tracker.lines}
                if gate is not None:
                    extra["gate"] = gate.state()
                checkpoints.save(done, optimizer, extra)
                saved = done
        save_mlx_lora_as_peft(model, out, rank=rank, scale=scale, base=base)
        summary = tracker.summary()
        if gate is not None:
            summary.update({f"gate/{k}": v for k, v in gate.state().items()})
        write_training_json(
            out, metrics=summary, status="complete", steps=max(cfg.max_steps, start), **write
        )
        return {"output_dir": str(out), "metrics": summary, "history": tracker.history}
    except KeyboardInterrupt:  # as learners.loop: the same command resumes
        saved = newest_step(checkpoints, saved)
        write_training_json(
            out, metrics=tracker.summary(), status="interrupted", steps=saved, **write
        )
        say_interrupted("sdft-mlx", out, saved, continues=origin.continues is not None)
        raise
    finally:
        tracker.finish()
        for close in closers:
            close()
