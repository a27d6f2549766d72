"""GRPO on the live browser env, multi-step done right.

::

    python -m learners.grpo learner.env_ids=[browser_env/miniwob.click-test-v0] learner.max_steps=50

One optimiser step:

1. draw ``batch_size`` groups, each an (env id, task seed); play
   ``num_generations`` (G) episodes of each with the current policy, sampled
   (``temperature``), through the agent's own prompt builder, parser and
   guards, played by the project's rollout engine (:mod:`agents.runners`,
   via :class:`learners.rollout.LearnerRollouts`): ``runner=local`` one
   episode after another, ``runner=vector workers=N`` N contexts of one
   browser with one batched ``generate`` per step, ``runner=ray workers=N``
   Ray actors (each loads the current adapter before the batch);
2. reward of an episode = 1 if it succeeded else 0 (``reward=success``, the
   default; ``reward=return`` uses the env's raw return, which scores a stall
   -- WAIT until truncation, 0 -- above a wrong final answer, negative) +
   ``format_reward`` x the fraction of its steps whose output parsed;
   advantage A_i = (r_i - mean_group) / std_group (``scale_rewards``), shared
   by every step of episode i. An episode that did not play out (``status``
   ``timeout`` past ``episode_timeout_s``, or ``error``: a Ray worker lost
   twice) is left out of its group, not scored 0: it says nothing about the
   policy (logged as ``rollouts_failed``; a step where every one failed raises).
   ``success_rate`` counts every rollout (a failed one is no success); the
   reward, return, parse-rate and length metrics are those of the rollouts
   that played out, which the advantages saw;
3. every step of every episode is its own sample: its own prompt (the
   observation and history at that step) and its own completion tokens --
   never a concatenation of turns (huggingface/trl#4543). The loss is the
   clipped surrogate -min(rho A, clip(rho, 1 +- epsilon) A) averaged over
   all completion tokens of the batch, plus ``beta`` x k3 KL to the
   reference policy when ``beta > 0``. The reference is the policy as
   training started -- with ``init_adapter`` (or a continued adapter), that
   adapter, not the bare base model; with ``lora=false``, a frozen copy of
   the initial weights. The logged ``kl`` is the same k3 estimate (>= 0).

Rollouts are on-policy (one optimiser step per batch), so rho = 1 in value
and the gradient is the policy gradient -A grad log pi. Log-probs are
computed with dropout off (:func:`learners.trainable.no_dropout`): they must be
those of the policy that sampled. For the same reason pi is
softmax(logits / ``temperature``), the distribution the rollouts were drawn
from, for the loss, the reference of the KL term and the logged entropy alike
(TRL's ``GRPOTrainer`` divides its logits by the temperature too; like it,
the loss does not apply ``top_p``'s truncation).

Where rollouts are generated (``generation``): ``local`` samples with the
trainer's own transformers model (``backend.generate``; CPU or GPU, no vLLM
needed); ``server`` samples on an OpenAI-compatible server that loads LoRA
adapters at run time -- vLLM (``vllm serve BASE --enable-lora`` with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) or ``serve.openai_server`` --
as TRL's ``use_vllm`` server mode does: before every batch of rollouts, so
after every optimiser step (and after an evaluation-gate rollback), the
adapter is saved and loaded into the server (:mod:`learners.lora_server`),
and after the last step the final adapter is left served. Either way the
loss is computed by the local torch policy on the returned token ids; the
server's log-probs are not used for the gradient. There is no in-process
``vllm.LLM`` mode: it would share one GPU between the engine and the
trainer and need vLLM's LoRA internals, which server mode keeps behind
two HTTP calls.

Why not TRL's ``GRPOTrainer``: it owns generation (prompt -> completion from
a dataset row, or a custom rollout function returning one sequence per
prompt), so a live multi-step episode whose later prompts depend on the env's
response to earlier actions does not map onto its rows without concatenating
turns or re-implementing the env loop inside its rollout hook. Here the
rollout is the agent acting in the env, and the loss/advantage code is short
and tested (:mod:`learners.losses`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from learners.config import GRPOConfig, from_mapping, register_configs

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from agents.runners import RolloutSpec
    from learners.loop import TrainLoop

__all__ = ["main", "run"]


def _checked_spec(cfg: GRPOConfig, *, live: bool) -> RolloutSpec | None:
    """Raise ``ValueError`` for a setting GRPO cannot train with, before the
    model loads; with ``live`` (the rollouts play real envs), return the
    :class:`agents.runners.RolloutSpec` they play with, its env ids checked."""
    # the settings themselves: GRPOConfig refuses them as it is made
    from agents.runners import check_runner_options

    check_runner_options(  # what the rollout engine would refuse, before the model loads
        cfg.runner,
        workers=cfg.workers,
        envs_per_worker=cfg.envs_per_worker,
        cpus_per_worker=cfg.cpus_per_worker,
        gpus_per_worker=cfg.gpus_per_worker,
    )
    if not live:
        return None
    import browser_env  # noqa: F401 - registers the browser_env/* ids
    from agents.runners import Job, RolloutSpec, check_env_ids, ray_spec_options
    from learners.rollout import check_ray_actor_policy

    check_ray_actor_policy(cfg.runner, serves_adapters=cfg.generation == "server", lora=cfg.lora)
    ray_options = ray_spec_options({"startup_timeout_s": cfg.startup_timeout_s}, cfg.runner)
    spec = RolloutSpec(  # (refuses a timeout <= 0)
        env_kwargs={
            "max_episode_steps": cfg.max_episode_steps,
            "modalities": tuple(cfg.modalities),
        },
        episode_timeout_s=cfg.episode_timeout_s,
        **ray_options,
    )
    check_env_ids(Job(e, 0) for e in [*cfg.env_ids, *cfg.eval_env_ids])
    return spec


def run(
    cfg: GRPOConfig | Mapping[str, Any],
    *,
    play_fn: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Train and save the adapter; returns ``{"output_dir", "metrics", "history"}``
    (and ``"served_model"``, the name the final adapter is served under, with
    ``generation=server``).

    ``play_fn(env_id, seed, sample_seed) -> Trajectory`` replaces the live env
    rollout (for tests and for custom environments); it is called once per
    rollout, in group order.

    A setting or model it cannot train with is :class:`browser_env.refusal.Refused`
    (a ``ValueError``), before the first step.
    """
    from browser_env.refusal import refusing

    with refusing():
        if not isinstance(cfg, GRPOConfig):
            cfg = from_mapping(GRPOConfig, cfg)
        spec = _checked_spec(cfg, live=play_fn is None)

    import torch

    from agents.runners import Job
    from agents.seeding import derive_seed
    from learners.loop import TrainLoop
    from learners.losses import entropy, group_advantages, grpo_token_loss, k3_kl
    from learners.rollout import LearnerRollouts, attach_env_gate, make_agent
    from learners.trainable import completion_logits, no_dropout

    with refusing():  # the model loads
        loop = TrainLoop(cfg, "grpo")
    with loop:  # the output dir held, the eval envs open, until the run ends, however it ends
        backend = loop.backend
        loop.data_info = {"env_ids": list(cfg.env_ids), "train_seeds": list(cfg.train_seeds)}
        attach_env_gate(loop, cfg)
        reference = _Reference(loop) if cfg.beta > 0 else None
        if reference is not None and reference.state is not None:
            loop.keep_state("reference", lambda: reference.state)  # fixed: never rolled back
        server = None
        if cfg.generation == "server":
            from learners.lora_server import LoRAServer

            server = LoRAServer(
                cfg.server_url,
                cfg.server_adapter_dir or loop.out / "served",
                lora_name=cfg.server_lora_name,
                token_env=cfg.server_token_env,
                timeout=cfg.server_timeout,
                tokenizer=loop.trainable.base_model,
                multimodal=bool(getattr(backend, "multimodal", False)),
            )
            try:
                server.check()
            except BaseException:
                server.close()
                raise
        agent = make_agent(
            server.backend if server is not None else backend,
            cfg,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
        )
        rollouts = None
        if spec is not None:
            try:
                rollouts = LearnerRollouts.for_learner(
                    agent, loop.cfg, spec, server=server, base_model=loop.trainable.base_model
                )
            except BaseException:
                if server is not None:
                    server.close()
                raise

        def loss_step(step: int) -> dict[str, float]:
            model = backend.model
            rng = random.Random(derive_seed(cfg.seed, step))
            groups = [
                (rng.choice(cfg.env_ids), rng.choice(cfg.train_seeds))
                for _ in range(cfg.batch_size)
            ]
            # 1. G rollouts per group, sampled from the current policy
            model.eval()
            if server is not None:
                server.push(model, step)
            jobs = [
                Job(env_id, seed, agent_seed=derive_seed(cfg.seed, step, g, k))
                for g, (env_id, seed) in enumerate(groups)
                for k in range(cfg.num_generations)
            ]
            keys = [g for g in range(len(groups)) for _ in range(cfg.num_generations)]
            if rollouts is not None:
                rollouts.sync(model, server.backend.model_name if server is not None else None)
                trajectories = rollouts.play(jobs)  # every group's G rollouts in one batch
            else:
                trajectories = [play_fn(j.env_id, j.seed, j.agent_seed) for j in jobs]
            # 2. episode rewards -> group-relative advantages, over the rollouts that
            # played out: one that timed out or failed (a lost Ray worker, a page that
            # would not load) says nothing about the policy, so it is left out of its
            # group rather than counted as a reward of 0
            failed = [t for t in trajectories if t.status != "ok"]
            if len(failed) == len(trajectories):
                raise RuntimeError(
                    f"every rollout of step {step} failed; the first: {failed[0].status}: "
                    f"{failed[0].error}"
                )
            rolled_out = len(trajectories)
            successes = sum(t.success for t in trajectories)
            played = [i for i, t in enumerate(trajectories) if t.status == "ok"]
            trajectories = [trajectories[i] for i in played]
            if server is not None and any(
                not s.completion_ids for t in trajectories for s in t.steps
            ):
                raise RuntimeError(
                    f"the server at {cfg.server_url} returned no token ids: it must support "
                    "return_token_ids (vLLM >= 0.10.2, serve.openai_server)"
                )
            rewards = [
                (float(t.success) if cfg.reward == "success" else t.episode_return)
                + cfg.format_reward * t.parse_rate
                for t in trajectories
            ]
            advantages = group_advantages(
                rewards, [keys[i] for i in played], scale=cfg.scale_rewards
            )
            # 3. one sample per step, each with its own prompt
            samples = [
                (s, float(advantages[i]))
                for i, t in enumerate(trajectories)
                for s in t.steps
                if s.completion_ids
            ]
            n_tokens = sum(len(s.completion_ids) for s, _ in samples)
            stats = dict.fromkeys(("loss", "entropy", "clip_ratio", "kl"), 0.0)
            for sample, adv in samples:
                if adv == 0.0 and cfg.beta == 0.0:
                    continue  # no signal: skip the forward pass (its gradient is zero)
                with no_dropout(model):
                    logits = completion_logits(
                        backend, sample.messages, sample.images, sample.completion_ids
                    )
                # the distribution the rollout sampled from (as TRL's GRPOTrainer scores it)
                logits = logits.float() / cfg.temperature
                ids = torch.as_tensor(sample.completion_ids, device=logits.device)
                logps = torch.log_softmax(logits, -1).gather(-1, ids[:, None])[:, 0][None]
                ref = None if reference is None else reference.logps(sample, ids, cfg.temperature)
                mask = torch.ones_like(logps, dtype=torch.bool)
                loss, s = grpo_token_loss(
                    logps,
                    logps.detach(),
                    torch.tensor([adv], device=logps.device),
                    mask,
                    epsilon=cfg.epsilon,
                    ref_logps=ref,
                    beta=cfg.beta,
                )
                weight = ids.numel() / n_tokens
                (loss * weight).backward()
                stats["loss"] += float(loss.detach()) * weight
                stats["clip_ratio"] += s["clip_ratio"] * weight
                with torch.no_grad():
                    stats["entropy"] += float(entropy(logits).mean()) * weight
                    if ref is not None:
                        stats["kl"] += float(k3_kl(logps, ref).mean()) * weight
            n = len(trajectories)
            return {
                **stats,
                "reward_mean": sum(rewards) / n,
                "reward_std": float(torch.tensor(rewards).std(unbiased=False)),
                "success_rate": successes
                / rolled_out,  # of every rollout: a failed one is no success
                "return_mean": sum(t.episode_return for t in trajectories) / n,
                "parse_rate": sum(t.parse_rate for t in trajectories) / n,
                "episode_length": sum(len(t.steps) for t in trajectories) / n,
                "completion_length": n_tokens / max(len(samples), 1),
                "num_samples": float(len(samples)),
                "rollouts_failed": float(len(failed)),
            }

        try:
            result = loop.fit(loss_step)
            if server is not None:  # leave the trained adapter served
                result["served_model"] = server.push(loop.trainable.model, loop.cfg.max_steps)
            return result
        finally:
            if rollouts is not None:
                rollouts.close()
            if server is not None:
                server.close()


class _Reference:
    """The reference policy of the KL term: the policy as this training started.

    With LoRA it is the initial adapter weights (a fresh LoRA's B = 0 makes it
    the base model; ``init_adapter`` makes it that adapter), swapped into the
    live model for the reference forward pass, and carried in checkpoints so a
    resumed run keeps the same reference. Without LoRA it is a frozen model
    loaded from where the weights started (the base model, or the finished
    model in ``output_dir`` a run continues), never a copy of the live model,
    which a resumed run has already moved.
    """

    def __init__(self, loop: TrainLoop) -> None:
        from learners.trainable import trainable_state

        self.backend = loop.backend
        self.params = loop.trainable.trainable_parameters()
        self.lora = hasattr(loop.trainable.model, "peft_config")
        self.state: dict[str, Any] | None = None
        self.model = None
        if self.lora:
            self.state = loop.resume_state.get("reference") or trainable_state(loop.trainable)
        else:
            live = loop.trainable.model
            start = loop.trainable.init_from or loop.trainable.base_model
            model = type(live).from_pretrained(start, dtype=next(live.parameters()).dtype)
            self.model = model.to(live.device).eval().requires_grad_(False)

    def logps(self, sample: Any, ids: Any, temperature: float) -> Any:
        """The sampled tokens' log-probs under softmax(reference logits / temperature)."""
        import torch

        from learners.trainable import completion_logits, no_dropout, swapped_weights

        live = self.backend.model
        with torch.no_grad():
            if self.lora:
                with swapped_weights(self.params, self.state), no_dropout(live):
                    logits = completion_logits(
                        self.backend, sample.messages, sample.images, sample.completion_ids
                    )
            else:
                self.backend.model = self.model
                try:
                    logits = completion_logits(
                        self.backend, sample.messages, sample.images, sample.completion_ids
                    )
                finally:
                    self.backend.model = live
        logps = torch.log_softmax(logits.float() / temperature, -1)
        return logps.gather(-1, ids[:, None])[:, 0][None]


def hydra_entry(cfg: DictConfig) -> dict[str, Any]:
    """The ``@hydra.main`` body: ``cfg.learner`` (with ``model=`` and ``+backend=``
    checked by :func:`learners.entry.learner_values`); a refusal in one line."""
    from browser_env.refusal import exit_on_interrupt, exit_on_refusal, refusing
    from learners.entry import learner_values, say_where

    with exit_on_refusal(), exit_on_interrupt():  # Ctrl-C: the loop's resume line, status 130
        with refusing():
            values = learner_values(cfg, "grpo")
        for key in ("runner", "workers"):  # top-level, as on benchmarks.run and agents.run
            if cfg.get(key) is not None:
                values[key] = cfg[key]
        return say_where(run(values))


def main() -> None:
    import hydra

    register_configs()
    hydra.main(version_base="1.3", config_path="../conf", config_name="grpo")(hydra_entry)()


if __name__ == "__main__":
    main()
