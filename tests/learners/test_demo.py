"""The learn-demo pipeline runs end to end with a tiny budget (the real figures are in docs/learners.md)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")


@pytest.mark.slow
@pytest.mark.browser
def test_learn_demo_pipeline_small(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from learners.demo import main

    report = main(
        [
            "--out",
            str(tmp_path),
            "--tasks",
            "click-test",
            "--train-seeds",
            "2",
            "--eval-seeds",
            "1",
            "--max-steps",
            "2",
            "--sft-steps",
            "2",
            "--sdft-steps",
            "1",
            "--export",
            str(tmp_path / "policy"),
        ]
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
    assert meta["produced_by"].startswith("python -m learners.demo --out")
    assert meta["stage"] in ("sft", "sdft") and meta["args"]["counterfactual_fraction"] == 1.0
