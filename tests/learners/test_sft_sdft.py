"""SFT and SDFT end to end on the tiny model: weights change, the adapter loads, resume works."""

from __future__ import annotations

import json
import re

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


def test_continuing_a_finished_adapter_never_resumes_or_keeps_its_old_checkpoints(
    tmp_path, episodes_dir, killer
):
    """A run into a finished adapter dir clears that run's checkpoints first: a
    crash of the continuing run, before or after its first checkpoint, is resumed
    from the continuing run's own start or checkpoint (never the old run's newest,
    nor a fresh LoRA), its checkpoints are not pruned against the old run's higher
    step numbers, and the result is the uninterrupted continuation's adapter."""
    import shutil

    from learners.sft import run

    base = {
        **{k: v for k, v in FAST.items() if k != "max_new_tokens"},
        "episodes": [str(episodes_dir)],
        "learning_rate": 1e-2,
        "lora_dropout": 0.0,  # a step is then a function of the weights and the step alone
        "save_steps": 2,
    }
    out = tmp_path / "sft"
    run({**base, "output_dir": str(out), "max_steps": 6})
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000002", "step-000004"]
    first = _lora_weights(out)
    straight = tmp_path / "straight"  # the same adapter, continued without a crash
    shutil.copytree(out, straight)
    run({**base, "output_dir": str(straight), "max_steps": 4})
    want = _lora_weights(straight)

    killer.at = 1  # the continuation dies before its first checkpoint
    with pytest.raises(killer.error):
        run({**base, "output_dir": str(out), "max_steps": 4})
    assert not list(ckpts.glob("step-*"))  # the finished run's are gone
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "running" and meta["init_from"] == str(out)

    killer.at = 3  # the rerun starts the continuation over, and dies at step 4
    with pytest.raises(killer.error):
        run({**base, "output_dir": str(out), "max_steps": 4})
    assert killer.resumed == []
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000002"]  # its own, kept
    for name, value in _lora_weights(out).items():  # the adapter it started from is in place
        assert torch.equal(value, first[name]), name

    result = run({**base, "output_dir": str(out), "max_steps": 4})
    assert killer.resumed == [ckpts / "step-000002"]
    assert [row["step"] for row in result["history"]] == [3, 4]
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "complete" and meta["steps"] == 4
    assert meta["init_from"] == str(out) and len(meta["runs"]) == 1
    got = _lora_weights(out)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


def test_a_continuation_refused_for_its_data_leaves_the_finished_runs_checkpoints(
    tmp_path, episodes_dir
):
    """The finished run's checkpoints are cleared once the continuation starts
    training, not as its model loads: one refused before (its filters leave no
    samples) leaves the output dir as it was."""
    from learners.sft import run

    base = {
        **{k: v for k, v in FAST.items() if k != "max_new_tokens"},
        "episodes": [str(episodes_dir)],
        "save_steps": 2,
        "max_steps": 3,  # a checkpoint at step 2; the last step is the final save
    }
    out = tmp_path / "sft"
    run({**base, "output_dir": str(out)})
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-000002"]
    with pytest.raises(ValueError, match=r"no samples: .* none kept by learner\.tasks="):
        run({**base, "output_dir": str(out), "tasks": ["no-such-task"]})
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == kept
    assert json.loads((out / "training.json").read_text())["status"] == "complete"


def test_a_finished_full_model_run_is_continued_not_resumed(
    tmp_path, episodes_dir, killer, monkeypatch
):
    """lora=false: a finished run (``model.safetensors``, no adapter_config.json)
    is finished. The same command again continues from its final model -- it does
    not resume its mid-run checkpoint and overwrite the final model with that --
    and LoRA training into the directory is refused."""
    from safetensors.torch import load_file

    from learners.loop import TrainLoop
    from learners.sft import run

    base = {
        **{k: v for k, v in FAST.items() if k != "max_new_tokens"},
        "episodes": [str(episodes_dir)],
        "output_dir": str(tmp_path / "full"),
        "learning_rate": 1e-3,
        "lora": False,
        "max_steps": 4,
        "save_steps": 2,
    }
    out = tmp_path / "full"
    run(base)
    final = load_file(str(out / "model.safetensors"))
    assert not (out / "adapter_config.json").exists()
    started = {}
    fit = TrainLoop.fit

    def spy(self, loss_step, **kwargs):
        started.update(
            {k: v.detach().clone() for k, v in self.trainable.model.state_dict().items()}
        )
        return fit(self, loss_step, **kwargs)

    monkeypatch.setattr(TrainLoop, "fit", spy)
    result = run(base)
    assert killer.resumed == []
    assert [row["step"] for row in result["history"]] == [1, 2, 3, 4]
    for name, value in final.items():  # it started from the finished model
        assert torch.equal(started[name], value), name
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "complete" and meta["init_from"] == str(out)
    assert len(meta["runs"]) == 1
    assert any(
        not torch.equal(v, final[k]) for k, v in load_file(str(out / "model.safetensors")).items()
    )
    with pytest.raises(ValueError, match="holds a full model"):
        run({**base, "lora": True})


def test_a_resumed_gate_rolls_back_to_its_own_best_not_one_saved_after_its_checkpoint(
    tmp_path, episodes_dir, killer
):
    """The gate of a crashed run saved a new ``best/`` after its newest step
    checkpoint; the resumed run's gate record (from that checkpoint) names the
    earlier best. A rollback restores the earlier best -- as the run never
    interrupted does -- not the crashed run's later weights."""
    from learners.sdft import run

    base = {
        **FAST,
        "episodes": [str(episodes_dir)],
        "learning_rate": 1e-2,
        "max_steps": 4,
        "save_steps": 2,
        "eval_steps": 1,
        "rollback_tolerance": 0.0,
    }
    straight, out = tmp_path / "straight", tmp_path / "sdft"
    # step 1 is the best; steps 3 and 4 fall below it and roll back to it
    run({**base, "output_dir": str(straight)}, evaluate_fn=iter([0.5, 0.5, 0.0, 0.0]).__next__)
    # the crashed run: step 1 best, checkpoint step-2, step 3 a new best, death at step 4
    killer.at = 3
    with pytest.raises(killer.error):
        run({**base, "output_dir": str(out)}, evaluate_fn=iter([0.5, 0.5, 0.9]).__next__)
    assert json.loads((out / "checkpoints" / "best" / "step.json").read_text())["step"] == 3
    # resumed from step-2 (best: step 1), steps 3 and 4 fall below the best
    result = run({**base, "output_dir": str(out)}, evaluate_fn=iter([0.0, 0.0]).__next__)
    assert killer.resumed == [out / "checkpoints" / "step-000002"]
    assert [row.get("eval/rolled_back") for row in result["history"]] == [1.0, 1.0]
    assert result["metrics"]["gate/best_step"] == 1
    assert json.loads((out / "checkpoints" / "best" / "step.json").read_text())["step"] == 1
    want, got = _lora_weights(straight), _lora_weights(out)
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


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


def test_port_jitter_rewrites_local_ports_only_the_same_in_prompt_and_target():
    import random

    from learners.sft import jitter_port

    messages = [
        {"role": "system", "content": "no url"},
        {
            "role": "user",
            "content": "URL: http://127.0.0.1:34927/a.html https://example.com:8443/ "
            "http://localhost:5000/b",
        },
    ]
    target = '{"action": "NAVIGATE", "value": "http://127.0.0.1:34927/b.html"}'
    out, moved = jitter_port(messages, target, random.Random(1))
    assert out[0] == messages[0]
    content = out[1]["content"]
    assert "34927" not in content and "https://example.com:8443/" in content
    ports = re.findall(r"http://(?:127\.0\.0\.1|localhost):(\d+)/", content)
    assert len(ports) == 2 and ports[0] != ports[1] and "5000" not in ports
    assert moved == target.replace("34927", ports[0])


def test_sft_port_jitter_moves_a_navigate_targets_port_with_its_prompts(
    tmp_path, tiny_model, monkeypatch
):
    """What SFT trains on under ``port_jitter``: the NAVIGATE target carries the port
    of the prompt it is trained with, never the recorded one (a target that kept
    the recorded port taught the model to emit a port from memory)."""
    import numpy as np

    from browser_env.episodes import AgentInfo, EpisodeMeta, EpisodeWriter
    from browser_env.observation import make_element
    from learners import trainable
    from learners.sft import run

    goal = "Open the shop page"
    obs = {
        "goal": goal,
        "url": "http://127.0.0.1:8123/index.html",
        "elements": (make_element("e1", "a", "link", "Shop", bbox=(0, 0, 10, 10)),),
        "text": "Welcome",
        "last_action_error": "",
        "screenshot": np.zeros((8, 8, 3), dtype=np.uint8),
    }
    episodes = tmp_path / "episodes"
    writer = EpisodeWriter(
        episodes,
        EpisodeMeta(
            env_id="browser_env/site.shop-v0",
            task="shop",
            seed=0,
            source="scripted",
            goal=goal,
            agent=AgentInfo(name="expert"),
        ),
    )
    navigate = {"action": "NAVIGATE", "value": "http://127.0.0.1:8123/shop.html"}
    writer.write_step(obs, navigate, 1.0, True, False, {"success": True})
    writer.close()

    seen = []
    real = trainable.completion_logits

    def spy(backend, messages, images, completion_ids):
        text = backend.tokenizer.decode(list(completion_ids), skip_special_tokens=True)
        seen.append((messages[-1]["content"], text))
        return real(backend, messages, images, completion_ids)

    monkeypatch.setattr(trainable, "completion_logits", spy)
    run(
        {
            "wandb": False,
            "progress": False,
            "episodes": [str(episodes)],
            "output_dir": str(tmp_path / "out"),
            "batch_size": 1,
            "max_steps": 3,
            "save_steps": 0,
            "port_jitter": True,
        }
    )
    assert len(seen) == 3
    for prompt, target in seen:
        ports = set(re.findall(r"127\.0\.0\.1:(\d+)", prompt))
        assert len(ports) == 1 and "8123" not in ports, prompt
        assert json.loads(target)["value"] == f"http://127.0.0.1:{ports.pop()}/shop.html"
    assert len({prompt for prompt, _ in seen}) > 1  # a new port for each draw


def test_run_start_continues_finished_outputs_and_resumes_interrupted_runs(tmp_path):
    """The decision the torch learners and MLX SDFT share (no model needed)."""
    from learners.checkpoint import Checkpoints, RunStart, run_start

    out = tmp_path / "out"
    assert run_start(out) == RunStart()

    def record(status, init_from=None, saved="adapter_config.json"):
        out.mkdir(exist_ok=True)
        meta = {"status": status, "init_from": init_from, "base_model": "tiny"}
        (out / "training.json").write_text(json.dumps(meta))
        if saved:
            (out / saved).write_text("{}")

    step = Checkpoints(out).write(4, lambda path: None)
    record("running")  # an interrupted fresh run: its newest checkpoint
    assert run_start(out) == RunStart(resume=step)
    record("complete")  # finished: continued from, its checkpoints stale
    assert run_start(out) == RunStart(continues=str(out), kind="adapter", stale=True)
    record("running", init_from=str(out))  # an interrupted continuation: the same start
    assert run_start(out) == RunStart(continues=str(out), kind="adapter", resume=step)
    Checkpoints(out).clear()
    assert run_start(out) == RunStart(continues=str(out), kind="adapter")
    (out / "adapter_config.json").unlink()
    record("complete", saved="model.safetensors")  # lora=false writes no adapter_config.json
    assert run_start(out) == RunStart(continues=str(out), kind="model", stale=True)
