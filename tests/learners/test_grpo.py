"""GRPO: per-step samples with their own prompts, group advantages, LoRA updates, live env."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from learners.rollout import StepSample, Trajectory  # noqa: E402

FAST = {"wandb": False, "progress": False, "save_steps": 0}


def _fake_play(seen):
    """Episodes of 2 steps whose success alternates within a group: a non-zero signal."""

    def play_fn(env_id, seed, sample_seed):
        win = sample_seed % 2 == 0
        steps = [
            StepSample(
                messages=[{"role": "user", "content": f"seed {seed} step {t} obs"}],
                images=[],
                completion_ids=[5, 6, 7] if t == 0 else [8, 9],
                parsed=True,
            )
            for t in range(2)
        ]
        seen.append((env_id, seed, sample_seed, [s.messages for s in steps]))
        return Trajectory(env_id, seed, steps, float(win), win)

    return play_fn


def test_grpo_updates_every_lora_weight_with_per_step_samples(tmp_path):
    from learners.grpo import run

    seen = []
    out = tmp_path / "grpo"
    result = run(
        {
            **FAST,
            "output_dir": str(out),
            "max_steps": 2,
            "learning_rate": 1e-2,
            "num_generations": 2,
            "batch_size": 2,
            "env_ids": ["browser_env/miniwob.click-test-v0"],
            "train_seeds": [0, 1, 2],
        },
        play_fn=_fake_play(seen),
    )
    assert len(seen) == 2 * 2 * 2  # steps x groups x G
    # within a step's batch, each group's G rollouts share env id and seed
    assert len({(e, s) for e, s, _, _ in seen[:2]}) == 1
    assert len({(e, s) for e, s, _, _ in seen[2:4]}) == 1
    row = result["history"][-1]
    assert row["reward_mean"] == pytest.approx(0.5) and row["success_rate"] == pytest.approx(0.5)
    assert row["num_samples"] == 2 * 2 * 2  # every step of every episode is its own sample
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    import peft
    from transformers import AutoModelForCausalLM

    from agents.tiny import tiny_model_path

    torch.manual_seed(0)
    init = peft.get_peft_model_state_dict(
        peft.get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model_path("text")),
            peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
    )
    for name, value in init.items():
        assert not torch.equal(value, weights[name]), f"{name} did not change"
    meta = json.loads((out / "training.json").read_text())
    assert meta["hyperparameters"]["lora_r"] == 8 and meta["hyperparameters"]["lora_alpha"] == 16


def test_grpo_all_equal_rewards_give_no_update(tmp_path):
    from learners.grpo import run

    def lose(env_id, seed, sample_seed):
        step = StepSample([{"role": "user", "content": "x"}], [], [5, 6], True)
        return Trajectory(env_id, seed, [step], 0.0, False)

    out = tmp_path / "grpo"
    run({**FAST, "output_dir": str(out), "max_steps": 2, "learning_rate": 1e-2}, play_fn=lose)
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert all(v.abs().sum() == 0 for k, v in weights.items() if "lora_B" in k)


@pytest.mark.browser
def test_grpo_on_the_live_env(tmp_path):
    from learners.grpo import run

    result = run(
        {
            **FAST,
            "output_dir": str(tmp_path / "grpo"),
            "max_steps": 1,
            "num_generations": 2,
            "max_episode_steps": 2,
            "max_new_tokens": 8,
            "format_reward": 0.1,
            "env_ids": ["browser_env/miniwob.click-test-v0"],
            "train_seeds": [0],
        }
    )
    row = result["history"][-1]
    assert row["episode_length"] >= 1 and 0.0 <= row["success_rate"] <= 1.0
    assert row["num_samples"] >= 2
