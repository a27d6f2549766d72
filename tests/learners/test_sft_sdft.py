"""SFT and SDFT end to end on the tiny model: weights change, the adapter loads, resume works."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


FAST = {"wandb": False, "progress": False, "batch_size": 2, "max_new_tokens": 8}


def _lora_weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_sft_changes_every_lora_weight_and_the_adapter_loads(tmp_path, episodes_dir, tiny_model):
    from learners.sft import run

    out = tmp_path / "sft"
    fast = {k: v for k, v in FAST.items() if k != "max_new_tokens"}
    result = run(
        {
            **fast,
            "episodes": [str(episodes_dir)],
            "output_dir": str(out),
            "max_steps": 3,
            "learning_rate": 1e-2,
            "save_steps": 0,
            "demo_fraction": 1.0,
        }
    )
    history = result["history"]
    assert [row["step"] for row in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    weights = _lora_weights(out)
    # LoRA initialises B = 0: every B (and, after B moved, every A) must have left its init
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out)
    assert weights and all(("lora_A" in k or "lora_B" in k) for k in weights)
    for name, value in weights.items():
        if "lora_B" in name:
            assert value.abs().sum() > 0, name
    import peft

    torch.manual_seed(0)
    init = peft.get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    init_state = peft.get_peft_model_state_dict(init)
    for name, value in init_state.items():
        assert not torch.equal(value, weights[name]), f"{name} did not change"
    assert fresh is not None
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "complete" and meta["learner"] == "sft"
    assert meta["prompt_version"].startswith("browser-rl-prompt")
    assert meta["base_model"] == tiny_model
    assert meta["data"]["num_samples"] == 4 and meta["data"]["num_demo_items"] == 4
    assert meta["hyperparameters"]["lora_r"] == 8
    from agents.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_model, adapter=str(out), device="cpu")
    gen = backend.generate([{"role": "user", "content": "hi"}])
    assert gen.token_ids


def test_retraining_into_an_adapter_dir_continues_and_a_crash_resumes(tmp_path, episodes_dir):
    from learners.sft import run

    out = tmp_path / "sft"
    base = {
        **{k: v for k, v in FAST.items() if k != "max_new_tokens"},
        "episodes": [str(episodes_dir)],
        "output_dir": str(out),
    }
    run({**base, "max_steps": 2, "save_steps": 1})
    first = _lora_weights(out)
    # continue a finished adapter: starts from it, keeps the earlier run in training.json
    result = run({**base, "max_steps": 1, "save_steps": 0})
    meta = json.loads((out / "training.json").read_text())
    assert meta["init_from"] == str(out) and len(meta["runs"]) == 1
    assert [r["step"] for r in result["history"]] == [1]
    assert any(not torch.equal(first[k], v) for k, v in _lora_weights(out).items())
    # a crash after checkpoint step-1 of a 3-step run: the rerun resumes at step 2
    crashed = tmp_path / "crashed"
    run({**base, "output_dir": str(crashed), "max_steps": 2, "save_steps": 1})
    meta = json.loads((crashed / "training.json").read_text())
    meta["status"] = "running"
    (crashed / "training.json").write_text(json.dumps(meta))
    assert (crashed / "checkpoints" / "step-000001" / "state.pt").is_file()
    result = run({**base, "output_dir": str(crashed), "max_steps": 3, "save_steps": 1})
    assert [r["step"] for r in result["history"]] == [2, 3]


@pytest.mark.parametrize(
    ("direction", "top_k", "ema_rate"), [("reverse", None, 0.0), ("forward", 5, 0.5)]
)
def test_sdft_trains_and_logs_kl_and_agreement(
    tmp_path, episodes_dir, tiny_model, direction, top_k, ema_rate
):
    from learners.sdft import run

    out = tmp_path / "sdft"
    result = run(
        {
            **FAST,
            "episodes": [str(episodes_dir)],
            "output_dir": str(out),
            "max_steps": 3,
            "learning_rate": 1e-2,
            "kl_direction": direction,
            "top_k": top_k,
            "ema_rate": ema_rate,
            "save_steps": 2,
        }
    )
    row = result["history"][-1]
    for key in ("loss", "kl", "agreement", "entropy", "completion_length", "action_match"):
        assert key in row
    assert result["history"][0]["kl"] > 0  # the demonstration changes the teacher's distribution
    assert 0.0 <= row["agreement"] <= 1.0
    weights = _lora_weights(out)
    assert all(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    state = torch.load(out / "checkpoints" / "step-000002" / "state.pt", weights_only=False)
    teacher = state["extra"]["teacher"]
    lora_b = next(k for k in teacher if "lora_B" in k)
    if ema_rate == 0.0:
        assert teacher[lora_b].abs().sum() == 0  # frozen at the initial student (B = 0)
    else:
        assert teacher[lora_b].abs().sum() > 0
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out)


def test_sdft_samples_a_steps_completions_in_one_batch_each_from_its_own_seed(
    tmp_path, episodes_dir, tiny_model, monkeypatch
):
    """One ``generate_batch`` per step, whose rows are what ``generate`` gives
    each sample alone with its seed: batching changes the speed, not the data."""
    from agents.backends.transformers import TransformersBackend
    from agents.seeding import derive_seed
    from learners.sdft import run

    calls = []
    inner = TransformersBackend.generate_batch

    def spy(self, batch, images=None, sampling=None):
        gens = inner(self, batch, images, sampling)
        alone = [self.generate(m, i, s) for m, i, s in zip(batch, images, sampling, strict=True)]
        calls.append((len(batch), [s.seed for s in sampling], gens, alone))
        return gens

    monkeypatch.setattr(TransformersBackend, "generate_batch", spy)
    config = {**FAST, "episodes": [str(episodes_dir)], "output_dir": str(tmp_path), "seed": 3}
    run({**config, "max_steps": 2, "save_steps": 0, "temperature": 1.0})
    assert [(n, seeds) for n, seeds, _, _ in calls] == [
        (2, [derive_seed(3, step, 0), derive_seed(3, step, 1)]) for step in (0, 1)
    ]
    for _, _, gens, alone in calls:
        assert [g.token_ids for g in gens] == [g.token_ids for g in alone]


def test_config_rejects_unknown_fields():
    from learners.config import SDFTConfig, from_mapping

    with pytest.raises(ValueError, match="unknown"):
        from_mapping(SDFTConfig, {"max_stpes": 3})
    from learners.sdft import run

    with pytest.raises(ValueError, match="kl_direction"):
        run({"kl_direction": "up", "episodes": ["x"]})


def test_mlx_kl_matches_torch():
    mx = pytest.importorskip("mlx.core")
    import numpy as np

    from learners.losses import token_kl
    from learners.sdft_mlx import token_kl_mx

    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 17)).astype("float32"), rng.normal(size=(4, 17)).astype("float32")
    for direction in ("reverse", "forward"):
        for top_k in (None, 5):
            want = token_kl(
                torch.tensor(s), torch.tensor(t), direction=direction, top_k=top_k
            ).numpy()
            got = np.array(token_kl_mx(mx.array(s), mx.array(t), direction=direction, top_k=top_k))
            assert np.allclose(got, want, atol=1e-5), (direction, top_k)


def test_sdft_mlx_adapter_loads_in_both_backends_with_equal_logits(
    tmp_path, episodes_dir, tiny_model
):
    mx = pytest.importorskip("mlx.core")
    pytest.importorskip("mlx_lm")
    import numpy as np

    from agents.backends.mlx import MLXBackend
    from agents.backends.transformers import TransformersBackend
    from learners.sdft import run

    out = tmp_path / "sdft-mlx"
    result = run(
        {
            **FAST,
            "episodes": [str(episodes_dir)],
            "output_dir": str(out),
            "max_steps": 2,
            "learning_rate": 1e-2,
            "backend": "mlx",
        }
    )
    row = result["history"][-1]
    assert {"loss", "kl", "agreement", "completion_length"} <= set(row)
    assert json.loads((out / "training.json").read_text())["data"]["backend"] == "mlx"
    mlx_backend = MLXBackend(tiny_model, adapter=str(out))
    torch_backend = TransformersBackend(tiny_model, adapter=str(out), device="cpu")
    plain = TransformersBackend(tiny_model, device="cpu")
    ids = mlx_backend.encode_chat([{"role": "user", "content": 'Click on the "TWO" button.'}])
    got = np.array(mlx_backend.model(mx.array([ids]))[0])
    with torch.no_grad():
        want = torch_backend.model(torch.tensor([ids])).logits[0].numpy()
        before = plain.model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(want - before).max() > 1e-3  # the adapter is not a no-op


def test_counterfactual_demonstration_is_the_target(episodes_dir):
    import random

    from agents.prompt import DEMO_BEGIN
    from learners.samples import iter_samples
    from learners.sft import counterfactual

    sample = next(iter(iter_samples([episodes_dir])))
    messages, target = counterfactual(sample, random.Random(0))
    assert json.loads(target)["element_id"] != json.loads(sample.target)["element_id"]
    student = sample.messages[-1]["content"]
    content = messages[-1]["content"]
    assert content.startswith(student) and content.split(DEMO_BEGIN)[1].count(target) == 1
    assert messages[:-1] == sample.teacher_messages[:-1]


def test_port_jitter_rewrites_local_ports_only():
    import random

    from learners.sft import jitter_port

    messages = [
        {"role": "system", "content": "no url"},
        {"role": "user", "content": "URL: http://127.0.0.1:34927/a.html https://example.com:8443/"},
    ]
    out = jitter_port(messages, random.Random(1))
    assert out[0] == messages[0]
    assert "34927" not in out[1]["content"] and "https://example.com:8443/" in out[1]["content"]
    assert out[1]["content"].startswith("URL: http://127.0.0.1:")
