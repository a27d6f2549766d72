"""The learn-demo pipeline runs end to end with a tiny budget (the real figures are in docs/learners.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_demo(*overrides: str):
    from hydra import compose, initialize_config_dir

    from learners.demo import register_config

    register_config()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(config_name="demo", overrides=list(overrides))


def test_config_composes_and_the_recorded_command_reproduces_it():
    import dataclasses

    from omegaconf import OmegaConf

    from learners.demo import TASKS, DemoConfig, command_line

    default = compose_demo()
    assert OmegaConf.to_container(default) == dataclasses.asdict(DemoConfig())
    assert list(default.tasks) == list(TASKS) and default.export is None
    with pytest.raises(Exception, match="sft_step"):
        compose_demo("sft_step=3")  # a typo is refused: the schema is closed
    cfg = DemoConfig(
        **OmegaConf.to_container(compose_demo("tasks=[click-test]", "port_jitter=false"))
    )
    command = command_line(cfg)
    assert command == "python -m learners.demo tasks=[click-test] port_jitter=false"
    again = compose_demo(*command.split()[3:])
    assert DemoConfig(**OmegaConf.to_container(again)) == cfg


@pytest.mark.slow
@pytest.mark.exhaustive  # ~25 s: the whole demo pipeline; its config and command are checked by default
@pytest.mark.browser
def test_learn_demo_pipeline_small(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from omegaconf import OmegaConf

    from learners.demo import run

    report = run(
        OmegaConf.to_container(
            compose_demo(
                f"out={tmp_path}",
                "tasks=[click-test]",
                "train_seeds=2",
                "eval_seeds=1",
                "max_steps=2",
                "sft_steps=2",
                "sdft_steps=1",
                f"export={tmp_path / 'policy'}",
            )
        )
    )
    assert report["expert_success"] == {"click-test": 1.0}
    for stage in ("before", "sft", "sdft"):
        assert 0.0 <= report[stage]["student"]["success_rate"] <= 1.0
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["tasks"] == ["click-test"]
    assert (tmp_path / "sdft" / "adapter_model.safetensors").is_file()
    policy = tmp_path / "policy"
    assert (policy / "config.json").is_file() and (policy / "model.safetensors").is_file()
    meta = json.loads((policy / "training.json").read_text())
    assert meta["produced_by"].startswith("python -m learners.demo out=")
    assert meta["stage"] in ("sft", "sdft") and meta["args"]["counterfactual_fraction"] == 1.0


def test_the_demo_refuses_a_learner_dir_in_its_out_before_it_records(tmp_path, monkeypatch):
    """``out/sft`` holding someone else's files is refused before the expert
    episodes are recorded (minutes), not when SFT starts after them."""
    import torch

    import learners.demo

    def no_recording(*args, **kwargs):
        raise AssertionError("the episodes were recorded")

    monkeypatch.setattr(learners.demo, "record_expert_episodes", no_recording)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "notes.txt").write_text("mine\n")
    with pytest.raises(ValueError) as refused:
        learners.demo.run({"out": str(tmp_path), "threads": torch.get_num_threads()})
    assert str(refused.value).startswith(
        f"{tmp_path / 'sft'} (where this command trains, below out={tmp_path}) holds files "
        "no learner wrote"
    ) and str(refused.value).endswith("set out to a new or empty directory")
    assert (tmp_path / "sft" / "notes.txt").read_text() == "mine\n"


def test_the_demo_command_line_refuses_a_stray_dir_in_one_line(tmp_path):
    """``python -m learners.demo out=O`` with someone else's files in ``O/sft``:
    ``error: <why>`` naming ``out``, exit status 2, no traceback (it was a
    Hydra-wrapped ``ValueError`` naming a ``learner.output_dir`` the demo has not)."""
    from _commands import python_m

    (tmp_path / "o" / "sft").mkdir(parents=True)
    (tmp_path / "o" / "sft" / "notes.txt").write_text("mine\n")
    done = python_m("learners.demo", f"out={tmp_path / 'o'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'o' / 'sft'} (where this command trains, below out="
        f"{tmp_path / 'o'}) holds files no learner wrote (notes.txt; no training.json or "
        "checkpoints/): training into it would mix them with its own; set out to a new or "
        "empty directory"
    ], done.stderr[-2000:]
    assert (tmp_path / "o" / "sft" / "notes.txt").read_text() == "mine\n"
