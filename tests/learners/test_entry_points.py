"""Hydra entry points (compose, run, --multirun) and the evaluation gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _commands import python_m

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["sft", "sdft", "grpo"])
def test_configs_compose_into_learner_configs(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from learners.config import GRPOConfig, SDFTConfig, SFTConfig, from_mapping, register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=["learner.max_steps=7"])
    cls = {"sft": SFTConfig, "sdft": SDFTConfig, "grpo": GRPOConfig}[name]
    learner = from_mapping(cls, OmegaConf.to_container(cfg.learner))
    assert learner.max_steps == 7 and learner.lora_r == 8 and learner.lora_alpha == 16
    # every dataclass field is in the composed config (the structured config holds them all)
    import dataclasses

    assert {f.name for f in dataclasses.fields(cls)} == set(cfg.learner)
    # the dataclass is the one source of the defaults: the YAML restates none of them
    assert learner == dataclasses.replace(cls(), max_steps=7)


def test_unknown_learner_keys_are_an_error_that_names_them(name="sdft"):
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from learners.config import LEARNER_CONFIGS, from_mapping, register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="max_stpes"):
            compose(config_name=name, overrides=["learner.max_stpes=3"])
        cfg = compose(config_name=name, overrides=["learner.prompt.max_history=2"])
    assert cfg.learner.prompt.max_history == 2
    # a key added with + reaches the learner, which names it
    with pytest.raises(ValueError, match="max_stpes"):
        from_mapping(LEARNER_CONFIGS[name], _values(name, ["+learner.max_stpes=3"]))


def test_learner_env_ids_take_every_spelling_of_an_env():
    from learners.config import GRPOConfig, SFTConfig

    cfg = GRPOConfig(env_ids=["miniwob.click-test", "browser_env/open-v0"], eval_env_ids=["open"])
    assert cfg.env_ids == ["browser_env/miniwob.click-test-v0", "browser_env/open-v0"]
    assert cfg.eval_env_ids == ["browser_env/open-v0"]
    with pytest.raises(ValueError, match="not a browser_env env"):
        SFTConfig(eval_env_ids=["ALE/Pong-v5"])


def _run(args, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.exhaustive  # ~13 s; test_configs_compose_into_learner_configs composes every config
def test_sft_entry_point_multirun(tmp_path, episodes_dir):
    _run(
        [
            "-m",
            "learners.sft",
            "--multirun",
            f"learner.episodes=[{episodes_dir}]",
            "learner.max_steps=1",
            "learner.batch_size=1",
            "learner.progress=false",
            "learner.learning_rate=1e-3,1e-2",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=tmp_path,
    )
    for job in ("0", "1"):
        meta = json.loads((tmp_path / "sweep" / job / "adapter" / "training.json").read_text())
        assert meta["status"] == "complete"
    lrs = {
        json.loads((tmp_path / "sweep" / j / "adapter" / "training.json").read_text())[
            "hyperparameters"
        ]["learning_rate"]
        for j in ("0", "1")
    }
    assert lrs == {1e-3, 1e-2}


@pytest.mark.exhaustive  # ~14 s; the default tier composes +backend=mlx and trains MLX SDFT elsewhere
def test_sdft_entry_point_with_mlx_backend_override(tmp_path, episodes_dir):
    pytest.importorskip("mlx_lm")
    _run(
        [
            "-m",
            "learners.sdft",
            "+backend=mlx",
            f"learner.episodes=[{episodes_dir}]",
            "learner.max_steps=1",
            "learner.batch_size=1",
            "learner.max_new_tokens=4",
            f"learner.output_dir={tmp_path}/out",
            "learner.progress=false",
        ],
        cwd=tmp_path,
    )
    meta = json.loads((tmp_path / "out" / "training.json").read_text())
    assert meta["data"]["backend"] == "mlx" and meta["learner"] == "sdft"


def test_eval_gate_rolls_back_to_the_best_checkpoint(tmp_path):
    from learners.checkpoint import CheckpointManager, EvalGate
    from learners.config import SFTConfig
    from learners.trainable import load_trainable

    trainable = load_trainable(SFTConfig(output_dir=str(tmp_path), wandb=False))
    params = trainable.trainable_parameters()
    scores = iter([0.5, 0.8, 0.2])
    gate = EvalGate(CheckpointManager(tmp_path, trainable), lambda: next(scores), tolerance=0.1)
    assert gate(1)["eval/success_rate"] == 0.5
    with torch.no_grad():
        for _, p in params:
            p.add_(0.01)
    gate(2)  # new best: saved
    best = {n: p.detach().clone() for n, p in params}
    with torch.no_grad():
        for _, p in params:
            p.add_(1.0)
    metrics = gate(3)  # 0.2 < 0.8 - 0.1: roll back
    assert metrics["eval/rolled_back"] == 1.0 and gate.best == 0.8 and gate.best_step == 2
    for n, p in params:
        assert torch.equal(p, best[n]), n


@pytest.mark.browser
def test_training_with_the_env_evaluation_gate(tmp_path, episodes_dir):
    from learners.sft import run

    result = run(
        {
            "episodes": [str(episodes_dir)],
            "output_dir": str(tmp_path / "out"),
            "max_steps": 2,
            "batch_size": 1,
            "wandb": False,
            "progress": False,
            "save_steps": 0,
            "eval_steps": 1,
            "eval_env_ids": ["browser_env/miniwob.click-test-v0"],
            "eval_seeds": [0],
            "eval_max_steps": 2,
        }
    )
    assert all("eval/success_rate" in row for row in result["history"])
    assert (tmp_path / "out" / "checkpoints" / "best" / "adapter_model.safetensors").is_file()
    meta = json.loads((tmp_path / "out" / "training.json").read_text())
    assert meta["metrics"]["gate/best_step"] == 1


def _values(name, overrides):
    from hydra import compose, initialize_config_dir

    from learners.config import register_configs
    from learners.entry import learner_values

    register_configs()
    if name != "grpo" and not any(o.startswith("learner.episodes=") for o in overrides):
        overrides = [*overrides, f"learner.episodes=[{ROOT}]"]  # any dir that exists
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    trainable = ("transformers", "mlx") if name == "sdft" else ("transformers",)
    return learner_values(cfg, name, trainable=trainable)


@pytest.mark.parametrize("name", ["sft", "sdft", "grpo"])
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+backend=openai"], r"cannot train with \+backend=openai"),
        (["+backend=tensorrt"], r"cannot train with \+backend=tensorrt"),
        (["+backend=transformers", "backend.model=some/model"], r"backend\.model.*learner\.model"),
        (["+backend=transformers", "backend.device=cuda"], r"backend\.device.*learner\.device"),
    ],
)
def test_learners_reject_backends_and_settings_they_would_ignore(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        _values(name, overrides)


def test_model_preset_and_training_backend_reach_the_learner():
    assert _values("sft", ["model=smollm2-135m"])["model"] == "smollm2-135m"
    assert _values("grpo", ["+backend=transformers"])["model"] == "tiny-random"  # defaults
    assert _values("sdft", ["+backend=mlx", "model=smollm2-135m"])["backend"] == "mlx"
    with pytest.raises(ValueError, match=r"learners\.sft cannot train with \+backend=mlx"):
        _values("sft", ["+backend=mlx"])


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("grpo", ["workers=abc"], r"workers='abc' \(it sets learner\.workers\).*Integer"),
        ("sft", ["learner.episodes=[]"], r"no episodes given: set learner\.episodes"),
        ("sdft", ["learner.episodes=[/no/such/dir]"], r"no such episode or run directory"),
        ("sft", [f"learner.episodes=[{__file__}]"], r"takes directories .* not files"),
        ("grpo", ["learner.episodes=[/tmp]"], r"grpo plays its own episodes .* learner\.episodes"),
        ("grpo", ["learner.tasks=[click-tab]"], r"does not read learner\.tasks"),
        ("grpo", ["learner.success_only=false"], r"does not read learner\.success_only"),
    ],
)
def test_bad_values_fail_before_the_model_loads(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        _values(name, overrides)


_PRESETS = r"no preset \(tiny-random, tiny, tiny-text, smollm2-135m\)"


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("sft", ["model=nope"], rf"model='nope' is {_PRESETS} and no local path, nor a hub id"),
        ("sdft", ["model=./no/such"], rf"model='./no/such' is {_PRESETS} and no local path:"),
        ("grpo", ["learner.model=/no/such/dir"], rf"learner\.model='/no/such/dir' is {_PRESETS}"),
        ("grpo", ["model=someone/not-cached"], r"local cache \(HF_HUB_OFFLINE is set\)"),
    ],
)
def test_a_model_that_cannot_load_is_refused_naming_the_option_and_presets(
    monkeypatch, name, overrides, message
):
    """Not transformers' OSError about the hub after the setup (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=f"{message}.*a local model directory must exist"):
        _values(name, overrides)
    # what does load: presets, local dirs, hub ids while the hub can be reached
    assert _values(name, ["model=smollm2-135m"])["model"] == "smollm2-135m"
    assert _values(name, [f"model={ROOT}"])["model"] == str(ROOT)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert _values(name, ["model=Qwen/Qwen2.5-0.5B-Instruct"])["model"].startswith("Qwen/")


def test_sft_entry_point_refuses_an_unknown_model_before_the_hub(tmp_path):
    proc = python_m(
        "learners.sft",
        "model=nope",
        f"learner.episodes=[{tmp_path}]",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert "model='nope' is no preset" in proc.stderr, proc.stderr[-3000:]
    assert "huggingface.co" not in proc.stderr
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["learners.sft"], "error: no episodes given: set learner.episodes=[DIR, ...]"),
        (["learners.sdft", "learner.episodes=[/nope]"], "no such episode or run directory"),
        (["learners.grpo", "learner.num_generations=1"], "error: num_generations (G) must be"),
        (
            ["learners.sdft", f"learner.episodes=[{ROOT}]", "learner.max_new_tokens=0"],
            "error: max_new_tokens must be >= 1, got 0",
        ),
        (
            [
                "learners.sft",
                f"learner.episodes=[{ROOT}]",
                "learner.eval_env_ids=[miniwob.click-tset]",
                "learner.eval_steps=1",
            ],
            "error: learner.eval_env_ids: Environment `miniwob.click-tset` doesn't exist",
        ),
    ],
)
def test_a_refused_command_line_is_one_error_line_and_exit_status_2(tmp_path, args, message):
    """``error: <why>`` and status 2 (:mod:`browser_env.refusal`), not a
    Hydra-wrapped traceback; ``learners.grpo`` checks its own settings in
    ``run``, before the model loads."""
    proc = python_m(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert not (tmp_path / "run").exists()  # no run dir, no adapter dir, no training.json


def test_the_command_line_refuses_another_tools_output_dir_in_one_line(tmp_path, episodes_dir):
    """``learner.output_dir`` at a benchmark's run dir: ``error: <why>`` naming
    the key, the path and what to pick, status 2, before the model loads, and
    the benchmark's files left as they were."""
    bench = tmp_path / "bench"
    (bench / "episodes").mkdir(parents=True)
    (bench / "results.jsonl").write_text("{}\n")
    proc = python_m(
        "learners.sft",
        f"learner.episodes=[{episodes_dir}]",
        f"learner.output_dir={bench}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: learner.output_dir={bench} holds files no learner wrote"), last
    assert "set learner.output_dir to a new or empty directory" in last
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in bench.iterdir()) == ["episodes", "results.jsonl"]


def test_check_model_lives_with_the_presets_and_is_still_importable_from_entry():
    import agents.models
    import learners.entry

    assert learners.entry.check_model is agents.models.check_model


_NO_EVAL_ENV = r"^learner\.eval_env_ids: .*miniwob\.click-tset.* doesn't exist.*click-test"


@pytest.mark.parametrize(
    ("learner", "values", "match"),
    [
        ("sft", {"demo_fraction": 2.0}, r"demo_fraction must be in \[0, 1\]"),
        ("sdft", {"kl_direction": "sideways"}, "kl_direction must be"),
        ("grpo", {"num_generations": 1}, "num_generations"),
        ("grpo", {"env_ids": ["miniwob.no-such-task"]}, "doesn't exist"),
        # the evaluation gate's envs: refused here, not by the first evaluation after training
        ("sft", {"eval_env_ids": ["miniwob.click-tset"], "eval_steps": 1}, _NO_EVAL_ENV),
        ("sdft", {"eval_env_ids": ["miniwob.click-tset"], "eval_steps": 1}, _NO_EVAL_ENV),
        ("sdft", {"eval_env_ids": ["miniwob.click-tset"], "backend": "mlx"}, _NO_EVAL_ENV),
        # sampling settings: SamplingParams refused them at the first step, the model loaded
        ("sdft", {"max_new_tokens": 0}, r"^max_new_tokens must be >= 1, got 0$"),
        ("sdft", {"temperature": -0.5}, r"^temperature must be a finite number >= 0, got -0.5$"),
        ("sdft", {"top_p": 0.0}, r"^top_p must be in \(0, 1\], got 0.0$"),
        ("grpo", {"top_p": 0.0}, r"^top_p must be in \(0, 1\], got 0.0$"),
        ("grpo", {"max_new_tokens": 0}, r"^max_new_tokens must be >= 1, got 0$"),
        # no step to train: an untrained adapter was saved, marked complete
        ("sdft", {"max_steps": 0}, r"^max_steps must be >= 1, got 0$"),
        ("sdft", {"max_steps": 0, "backend": "mlx"}, r"^max_steps must be >= 1, got 0$"),
        ("grpo", {"max_steps": -1}, r"^max_steps must be >= 1, got -1$"),
        # SFT's max_steps <= 0 trains num_epochs passes: -1 trained one step, nan crashed
        ("sft", {"max_steps": 0, "num_epochs": -1.0}, r"^num_epochs must be a finite number > 0"),
        ("sft", {"max_steps": -1, "num_epochs": float("nan")}, r"^num_epochs .* got nan$"),
        ("sft", {"counterfactual_fraction": float("nan")}, r"^counterfactual_fraction must be"),
    ],
)
def test_a_learner_run_refuses_its_settings_before_the_model_loads(
    monkeypatch, learner, values, match
):
    import importlib

    import learners.loop
    from browser_env.refusal import Refused

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(learners.loop, "TrainLoop", no_model)
    run = importlib.import_module(f"learners.{learner}").run
    with pytest.raises(Refused, match=match):
        run({"episodes": [str(ROOT)], **values})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lora_r", 0, r"lora_r must be >= 1, got 0"),
        ("batch_size", 0, r"batch_size must be >= 1, got 0"),
        ("learning_rate", 0.0, r"learning_rate must be > 0"),
        ("device", "gpu", r"device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("device", "cuda:x", r"device must be auto"),
    ],
)
def test_learner_settings_that_would_fail_inside_peft_or_torch_are_refused_first(
    field, value, message
):
    """Checked when the config is made, before a model loads (PEFT's own
    message for r=0, or torch's for a bad device, came after it)."""
    from learners.config import GRPOConfig, SFTConfig

    for cls in (SFTConfig, GRPOConfig):
        with pytest.raises(ValueError, match=message):
            cls(**{field: value})
    assert SFTConfig(device="cuda:1", max_steps=0).device == "cuda:1"  # max_steps <= 0: epochs
    assert SFTConfig(max_steps=5, num_epochs=-1.0).max_steps == 5  # num_epochs unread then


def test_a_finished_command_line_run_says_where_its_adapter_is(tmp_path, capsys):
    """The learners' last line (``hydra_entry``): where the trained weights went,
    by what was saved there; with progress bars and wandb off it is the only one."""
    from learners.entry import say_where

    (tmp_path / "adapter_config.json").write_text("{}")
    result = {"output_dir": str(tmp_path), "metrics": {}}
    assert say_where(result) is result
    assert capsys.readouterr().out == f"adapter: {tmp_path}\n"
    (tmp_path / "adapter_config.json").unlink()
    (tmp_path / "model.safetensors").write_text("")
    say_where(result)
    assert capsys.readouterr().out == f"model: {tmp_path}\n"


def test_ctrl_c_of_a_learner_command_is_its_resume_line_and_status_130(tmp_path, episodes_dir):
    """Ctrl-C in a terminal (SIGINT to the process group) printed the loop's
    resume line and then Python's ``KeyboardInterrupt`` traceback: now the line
    alone, and status 130, as ``benchmarks.run`` and ``agents.run`` end."""
    import signal
    import time

    from _commands import start_m

    out = tmp_path / "sft"
    proc = start_m(
        "learners.sft",
        f"learner.episodes=[{episodes_dir}]",
        f"learner.output_dir={out}",
        "learner.max_steps=100000",
        "learner.save_steps=0",
        "learner.progress=false",
        "learner.wandb=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 240
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"sft: interrupted; the same command starts again from the start in {out}"
    ), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert json.loads((out / "training.json").read_text())["status"] == "interrupted"
