"""GRPO groups roll out through the rollout engine: runner=vector plays the same
episodes as runner=local (greedy, and sampled: each row of a batch draws from
its own rollout's seed), and the trajectories come back in job order."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.browser

ENV = "browser_env/miniwob.click-test-v0"


@pytest.fixture(scope="module")
def tiny_policy():
    from agents.backends.transformers import TransformersBackend
    from agents.pretrained import path

    backend = TransformersBackend(path("tiny-miniwob"), device="cpu", dtype="float32")
    yield backend
    backend.close()


def _group_jobs():
    from agents.runners import Job
    from agents.seeding import derive_seed

    # two groups (task seeds 1 and 0) of G = 2 rollouts, each with its own sampling seed
    return [
        Job(ENV, seed, agent_seed=derive_seed(0, 0, g, k))
        for g, seed in enumerate((1, 0))
        for k in range(2)
    ]


def _play(backend, runner, workers, temperature=0.0):
    from types import SimpleNamespace

    from agents.agent import PromptConfig
    from agents.runners import RolloutSpec
    from learners.rollout import LearnerRollouts, make_agent

    cfg = SimpleNamespace(prompt=PromptConfig(use_screenshot=False), runner=runner, workers=workers)
    agent = make_agent(backend, cfg, temperature=temperature, max_new_tokens=24)
    spec = RolloutSpec(env_kwargs={"max_episode_steps": 2, "modalities": ("elements", "text")})
    rollouts = LearnerRollouts.for_learner(agent, cfg, spec)
    try:
        return rollouts.play(_group_jobs())
    finally:
        rollouts.close()


def _episode(t):
    return (
        t.env_id,
        t.seed,
        t.success,
        t.episode_return,
        [(s.completion_ids, s.parsed, s.messages) for s in t.steps],
    )


@pytest.mark.parametrize(  # ~11 s each; sampled, each row's own seed: the harder of the two
    "temperature", [pytest.param(0.0, marks=pytest.mark.exhaustive), 1.0]
)
def test_a_grpo_group_through_runner_vector_equals_runner_local(tiny_policy, temperature):
    local = _play(tiny_policy, "local", 1, temperature)
    vector = _play(tiny_policy, "vector", 4, temperature)
    assert [t.seed for t in local] == [1, 1, 0, 0]  # job (group) order, not sorted
    assert all(t.steps and t.steps[0].completion_ids for t in local)  # samples to train on
    assert [_episode(t) for t in vector] == [_episode(t) for t in local]
    if temperature > 0:  # a group's rollouts share the task seed, not the draws
        firsts = [t.steps[0].completion_ids for t in local]
        assert firsts[0] != firsts[1] or firsts[2] != firsts[3]


@pytest.mark.slow
@pytest.mark.exhaustive  # Ray, a model load in the actor: ~30 s
def test_grpo_ray_actors_act_with_the_trainers_current_adapter(tmp_path, tiny_model):
    """runner=ray: before a batch every actor loads the trainer's current LoRA,
    so its greedy episodes are the trainer's own; without the sync they are not."""
    from types import SimpleNamespace

    import torch

    from agents.agent import PromptConfig
    from agents.backends.base import SamplingParams
    from agents.runners import RolloutSpec
    from learners.config import GRPOConfig
    from learners.rollout import LearnerRollouts, make_agent
    from learners.trainable import load_trainable

    cfg = GRPOConfig(model=tiny_model, output_dir=str(tmp_path / "out"), wandb=False)
    policy = load_trainable(cfg)
    with torch.no_grad():  # a LoRA that changes what the model says (a fresh one has B = 0)
        torch.manual_seed(0)
        for name, p in policy.trainable_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    policy.model.eval()  # as GRPO samples: no dropout
    spec = RolloutSpec(env_kwargs={"max_episode_steps": 2, "modalities": ("elements", "text")})
    prompt = PromptConfig(use_screenshot=False)

    def rollouts(runner, workers):
        run_cfg = SimpleNamespace(
            **{**vars(cfg), "prompt": prompt, "runner": runner, "workers": workers}
        )
        agent = make_agent(policy.backend, run_cfg, temperature=0.0, max_new_tokens=12)
        return LearnerRollouts.for_learner(agent, run_cfg, spec, base_model=policy.base_model)

    ray_ = rollouts("ray", 2)
    try:
        stale = ray_.play(_group_jobs())  # actors: the bare base model
        ray_.sync(policy.model)
        fresh = ray_.play(_group_jobs())
    finally:
        ray_.close()

    def trainers_own(trajectory):
        # each actor serves MiniWoB++ from a port of its own, so prompts differ from a local
        # run's: check each step against the trainer's greedy output for that very prompt
        greedy = SamplingParams(max_new_tokens=12)
        return all(
            list(policy.backend.generate(s.messages, None, greedy).token_ids) == s.completion_ids
            for s in trajectory.steps
        )

    assert all(trainers_own(t) for t in fresh)
    assert not any(trainers_own(t) for t in stale)
