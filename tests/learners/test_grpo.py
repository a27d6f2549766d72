"""GRPO: per-step samples with their own prompts, group advantages, LoRA updates, live env."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from learners.rollout import StepSample, Trajectory  # noqa: E402

FAST = {"wandb": False, "progress": False, "save_steps": 0}


PROMPT = [{"role": "user", "content": "Click the OK button."}]
WIN, LOSE = [5, 6, 7], [8, 9]


def _group_play(seen):
    """Each group's G rollouts alternate between a rewarded completion (the
    episode succeeds) and an unrewarded one, on the same prompt."""
    count = [0]

    def play_fn(env_id, seed, sample_seed):
        win = count[0] % 2 == 0
        count[0] += 1
        steps = [StepSample(PROMPT, [], WIN if win else LOSE, True)]
        seen.append((env_id, seed, sample_seed))
        return Trajectory(env_id, seed, steps, float(win), win)

    return play_fn


def _completion_logps(adapter, completions):
    """``[(base, adapted)]`` log p(ids | PROMPT) for each of ``completions``
    under the tiny model without and with ``adapter`` (one model load)."""
    import peft

    from agents.backends.transformers import TransformersBackend
    from learners.trainable import completion_logits

    backend = TransformersBackend("tiny", device="cpu", dtype="float32")

    def logp(ids):
        with torch.no_grad():
            logits = completion_logits(backend, PROMPT, [], ids)
        return float(
            torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(ids)[:, None]).sum()
        )

    base = [logp(ids) for ids in completions]
    backend.model = peft.PeftModel.from_pretrained(backend.model, str(adapter)).eval()
    adapted = [logp(ids) for ids in completions]
    backend.close()
    return list(zip(base, adapted, strict=True))


def _train(tmp_path, play_fn, **overrides):
    from learners.grpo import run

    out = tmp_path / "grpo"
    config = {
        **FAST,
        "output_dir": str(out),
        "max_steps": 3,
        "learning_rate": 1e-2,
        "num_generations": 2,
        "batch_size": 2,
        "env_ids": ["browser_env/miniwob.click-test-v0"],
        "train_seeds": [0, 1, 2],
        **overrides,
    }
    return out, run(config, play_fn=play_fn)


def _rewarded_completion_rises(tmp_path, **overrides):
    seen = []
    out, result = _train(tmp_path, _group_play(seen), **overrides)
    (win_0, win_1), (lose_0, lose_1) = _completion_logps(out, [WIN, LOSE])
    return seen, result, win_1 - win_0, lose_1 - lose_0


def test_grpo_raises_the_rewarded_completions_log_prob(tmp_path):
    seen, result, win, lose = _rewarded_completion_rises(tmp_path)
    assert win > 0.05 and lose < -0.05, (win, lose)
    assert len(seen) == 3 * 2 * 2  # steps x groups x G
    # within a step's batch, each group's G rollouts share env id and seed ...
    assert len({(e, s) for e, s, _ in seen[:2]}) == 1
    assert len({(e, s) for e, s, _ in seen[2:4]}) == 1
    # ... and every rollout samples with a seed of its own
    assert len({sample_seed for _, _, sample_seed in seen}) == len(seen)
    row = result["history"][-1]
    assert row["reward_mean"] == pytest.approx(0.5) and row["num_samples"] == 4
    meta = json.loads((tmp_path / "grpo" / "training.json").read_text())
    assert meta["hyperparameters"]["lora_r"] == 8 and meta["hyperparameters"]["reward"] == "success"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grpo_learns_on_cuda(tmp_path):
    """Trained on CUDA (with a KL term, so the reference's path runs there too),
    scored on CPU: the adapter moves between devices."""
    _, result, win, lose = _rewarded_completion_rises(tmp_path, device="cuda", beta=0.01)
    assert win > 0.05 and lose < -0.05, (win, lose)
    assert all(row["kl"] >= 0 for row in result["history"]) and result["history"][-1]["kl"] > 0


def test_an_unknown_env_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import gymnasium as gym

    import learners.loop
    from browser_env.refusal import Refused
    from learners.grpo import run

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the env ids were checked")

    monkeypatch.setattr(learners.loop.TrainLoop, "__init__", no_model)
    config = {**FAST, "output_dir": str(tmp_path / "grpo"), "train_seeds": [0]}
    # Gymnasium's NameNotFound (with its suggestions), as a refusal (browser_env.refusal)
    with pytest.raises(Refused, match="miniwob.click-tset") as raised:
        run({**config, "env_ids": ["miniwob.click-tset"]})
    assert isinstance(raised.value.__cause__, gym.error.NameNotFound)
    with pytest.raises(Refused, match="miniwob.nope"):
        run({**config, "env_ids": ["miniwob.click-test"], "eval_env_ids": ["miniwob.nope"]})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_generations": 1}, "num_generations"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"generation": "server", "lora": False}, "generation=server"),
        ({"runner": "cluster"}, "runner must be"),
        ({"runner": "ray", "lora": False}, "runner=ray with generation=local"),
        ({"runner": "vector", "gpus_per_worker": 0.5}, "runner=ray only"),
        ({"episode_timeout_s": 0}, "episode_timeout_s must be finite seconds > 0"),
        ({"startup_timeout_s": 5}, "startup_timeout_s .* runner=ray only"),
    ],
)
def test_bad_configs_are_refused_before_the_model_loads(tmp_path, monkeypatch, overrides, message):
    import learners.loop

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the config was checked")

    monkeypatch.setattr(learners.loop.TrainLoop, "__init__", no_model)
    from learners.grpo import run

    config = {**FAST, "output_dir": str(tmp_path / "grpo"), "env_ids": ["e"], "train_seeds": [0]}
    with pytest.raises(ValueError, match=message):
        run({**config, **overrides})


def test_a_flipped_advantage_sign_fails_the_learning_check(tmp_path, monkeypatch):
    """The check above is not passed by noise: with the advantages negated the
    rewarded completion's log-prob falls."""
    import learners.losses

    original = learners.losses.group_advantages
    monkeypatch.setattr(learners.losses, "group_advantages", lambda *a, **k: -original(*a, **k))
    _, _, win, lose = _rewarded_completion_rises(tmp_path)
    assert win < -0.05 and lose > 0.05, (win, lose)


def _stall_vs_wrong_answer(env_id, seed, sample_seed, count=[0]):  # noqa: B006
    """A stall (WAIT until truncation: return 0) and a wrong FINISH (return -1);
    neither solves the task."""
    count[0] += 1
    stall = count[0] % 2 == 0
    step = StepSample(PROMPT, [], LOSE if stall else WIN, True)
    return Trajectory(env_id, seed, [step], 0.0 if stall else -1.0, False)


@pytest.mark.parametrize(("reward", "moves"), [("success", False), ("return", True)])
def test_default_binary_reward_does_not_prefer_stalling(tmp_path, reward, moves):
    overrides = {} if reward == "success" else {"reward": "return"}
    out, _ = _train(tmp_path, _stall_vs_wrong_answer, max_steps=1, **overrides)
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    changed = any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    assert changed is moves  # the raw return would push towards the stall


def test_grpo_kl_is_to_the_initial_policy_and_never_negative(tmp_path):
    """beta > 0: the reference is the adapter training started from (so the
    first step's KL is 0, not the adapter's distance to the bare base model);
    the logged KL is >= 0 and grows as the policy moves."""
    from learners.grpo import run

    init, _ = _train(tmp_path / "init", _group_play([]), max_steps=2)
    result = run(
        {
            **FAST,
            "output_dir": str(tmp_path / "kl"),
            "init_adapter": str(init),
            "max_steps": 3,
            "learning_rate": 1e-2,
            "num_generations": 2,
            "beta": 0.1,
        },
        play_fn=_group_play([]),
    )
    kls = [row["kl"] for row in result["history"]]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)
    assert all(k >= 0 for k in kls) and kls[-1] > 1e-4, kls


def test_grpo_kl_without_lora_is_not_skipped(tmp_path):
    from learners.grpo import run

    result = run(
        {
            **FAST,
            "output_dir": str(tmp_path / "full"),
            "lora": False,
            "max_steps": 2,
            "learning_rate": 1e-3,
            "num_generations": 2,
            "beta": 0.1,
        },
        play_fn=_group_play([]),
    )
    kls = [row["kl"] for row in result["history"]]
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 1e-6, kls


def test_grpo_log_probs_are_those_of_the_sampling_temperature(tmp_path):
    """Rollouts are drawn from softmax(logits / temperature); the loss scores
    them under that distribution, as TRL's GRPOTrainer does: at temperature 2
    the logged KL (k3 of the sampled tokens' log-probs, the loss's own) and
    entropy are those of log_softmax(logits / 2), computed here by hand from
    the step-1 checkpoint and the base model (the reference)."""
    import peft

    from agents.backends.transformers import TransformersBackend
    from learners.trainable import completion_logits

    out, result = _train(
        tmp_path, _group_play([]), temperature=2.0, beta=0.1, max_steps=2, save_steps=1
    )
    backend = TransformersBackend("tiny", device="cpu", dtype="float32")
    rollouts = [WIN, LOSE]  # each group is one of each; two groups a step
    with torch.no_grad():
        base = [completion_logits(backend, PROMPT, [], ids) for ids in rollouts]
        step_1 = out / "checkpoints" / "step-000001"
        backend.model = peft.PeftModel.from_pretrained(backend.model, str(step_1)).eval()
        policy = [completion_logits(backend, PROMPT, [], ids) for ids in rollouts]
    backend.close()
    n_tokens = sum(len(ids) for ids in rollouts)

    def token_logps(logits, ids, temperature):
        logps = torch.log_softmax(logits.float() / temperature, -1)
        return logps.gather(-1, torch.tensor(ids)[:, None])[:, 0]

    def kl(temperature):  # the k3 estimate, averaged over the step's completion tokens
        total = 0.0
        for ids, ref, pol in zip(rollouts, base, policy, strict=True):
            d = token_logps(ref, ids, temperature) - token_logps(pol, ids, temperature)
            total += float((torch.exp(d) - d - 1).sum())
        return total / n_tokens

    def entropy(logits, temperature):
        logps = torch.log_softmax(logits.float() / temperature, -1)
        return float(-(logps.exp() * logps).sum(-1).sum())

    first, last = result["history"]
    assert last["kl"] == pytest.approx(kl(2.0), rel=1e-4)
    assert kl(2.0) != pytest.approx(kl(1.0), rel=1e-2)  # the check tells the two apart
    want = sum(entropy(logits, 2.0) for logits in base) / n_tokens  # step 1: B = 0, the base
    assert first["entropy"] == pytest.approx(want, rel=1e-4)


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


def test_rollouts_that_did_not_play_out_are_left_out_of_their_group(tmp_path):
    """A rollout the engine recorded as ``error`` or ``timeout`` (a Ray worker
    lost twice, a page that hung) is neither scored 0 in its group's advantages
    nor trained on; a step where every rollout failed raises."""
    statuses = ["ok", "ok", "error", "timeout"]  # each group's G = 4 rollouts
    count = [0]

    def play_fn(env_id, seed, sample_seed):
        status = statuses[count[0] % 4]
        win = count[0] % 4 == 0
        count[0] += 1
        steps = [StepSample(PROMPT, [], WIN if win else LOSE, True)]
        error = None if status == "ok" else "worker lost twice: x"
        return Trajectory(env_id, seed, steps, float(win), win, status=status, error=error)

    _, result = _train(tmp_path, play_fn, num_generations=4, max_steps=1)
    row = result["history"][-1]
    # counted as rewards of 0 they would make the mean 1/4 and train 8 samples
    assert row["reward_mean"] == pytest.approx(0.5) and row["num_samples"] == 4
    assert row["rollouts_failed"] == 4
    assert row["success_rate"] == pytest.approx(0.25)  # of every rollout: a failed one failed

    statuses[:] = ["error"] * 4
    with pytest.raises(RuntimeError, match="every rollout of step 0 failed.*worker lost twice"):
        _train(tmp_path / "all", play_fn, num_generations=4, max_steps=1)


@pytest.mark.browser
def test_grpo_episode_timeout_reaches_the_rollout_engine(tmp_path):
    """learner.episode_timeout_s is the engine's: with a limit no episode can
    meet, every rollout is a timeout and the step raises rather than train."""
    from learners.grpo import run

    config = {
        **FAST,
        "output_dir": str(tmp_path / "grpo"),
        "max_steps": 1,
        "batch_size": 1,
        "num_generations": 2,
        "max_episode_steps": 2,
        "env_ids": ["browser_env/miniwob.click-test-v0"],
        "train_seeds": [0],
        "episode_timeout_s": 1e-3,
    }
    with pytest.raises(RuntimeError, match="every rollout of step 0 failed; the first: timeout"):
        run(config)


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
            "runner": "vector",  # the group's 2 rollouts as contexts of one browser, batched
            "workers": 2,
        }
    )
    row = result["history"][-1]
    assert row["episode_length"] >= 1 and 0.0 <= row["success_rate"] <= 1.0
    assert row["num_samples"] >= 2


def test_grpo_full_model_reference_after_a_resume_is_the_initial_model(
    tmp_path, monkeypatch, killer
):
    """lora=false, beta > 0: a run resumed from a checkpoint takes its KL reference
    from where training started (the base model), not a copy of the resumed
    weights: its KL and its final model are those of a run never interrupted."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from learners import grpo
    from learners.trainable import resolve_model

    config = {
        **FAST,
        "lora": False,
        "max_steps": 3,
        "save_steps": 1,
        "learning_rate": 1e-3,
        "num_generations": 2,
        "beta": 0.1,
    }
    straight = grpo.run(
        {**config, "output_dir": str(tmp_path / "straight")}, play_fn=_group_play([])
    )
    references = []
    init = grpo._Reference.__init__

    def keep(self, loop):
        init(self, loop)
        references.append(self)

    monkeypatch.setattr(grpo._Reference, "__init__", keep)
    out = tmp_path / "resumed"
    killer.at = 2
    with pytest.raises(killer.error):
        grpo.run({**config, "output_dir": str(out)}, play_fn=_group_play([]))
    resumed = grpo.run({**config, "output_dir": str(out)}, play_fn=_group_play([]))
    assert [row["step"] for row in resumed["history"]] == [3]
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny")).state_dict()
    reference = references[-1].model.state_dict()
    for name, value in base.items():
        assert torch.equal(reference[name], value), name
    want = straight["history"][-1]["kl"]
    assert want > 1e-6
    assert resumed["history"][-1]["kl"] == pytest.approx(want, rel=1e-4)
    want, got = (
        load_file(str(tmp_path / "straight" / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)
