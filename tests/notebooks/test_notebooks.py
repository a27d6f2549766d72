"""The committed notebooks run top to bottom (nbclient, the venv's python3
kernel) with small settings; their results are checked from the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.notebooks import execute
from benchmarks.tracking import read_offline_run

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _outputs(notebook) -> str:
    """All text the notebook printed or displayed; fails on any error output."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{output.ename}: {output.evalue}"
            texts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def _images(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


@pytest.mark.browser
@pytest.mark.slow  # ~70 s here: the tiny policy on three backends
def test_compare_backends_runs_with_the_tiny_policy(tmp_path):
    notebook = execute(
        NOTEBOOKS / "compare_backends.ipynb",
        {
            "PROBE_TASKS": ["click-dialog-2"],
            "PROBE_SEEDS": [1000],
            "SUITE_TASKS": ["click-dialog-2"],
            "EPISODES": 1,
            "OUTPUT_DIR": str(tmp_path),
        },
        output=tmp_path / "executed.ipynb",
        timeout=600,
    )
    text = _outputs(notebook)
    assert "TensorRT-LLM:" in text  # runs, or says why it is skipped
    actions = {}
    for kind in ("transformers", "mlx", "openai"):
        results = json.loads((tmp_path / kind / "results.json").read_text())
        assert results["overall"]["episodes"] == 1 and kind in text
        actions[kind] = results["episodes"][0]["actions"]
    # greedy decoding of one model: every backend plays the same episode
    assert actions["mlx"] == actions["transformers"] == actions["openai"]
    assert _images(notebook) >= 2  # the backend figures and the success plot, inline


@pytest.mark.browser
@pytest.mark.exhaustive  # 25 s; the learners' own tests cover the SFT it drives
def test_train_and_evaluate_runs_with_small_settings(tmp_path):
    notebook = execute(
        NOTEBOOKS / "train_and_evaluate.ipynb",
        {
            "TASKS": ["click-button-sequence"],
            "RECORD_EPISODES": 2,
            "SFT_STEPS": 3,
            "EVAL_EPISODES": 1,
            "OUTPUT_DIR": str(tmp_path),
        },
        output=tmp_path / "executed.ipynb",
        timeout=600,
    )
    text = _outputs(notebook)
    assert "2 of 2 demonstrations succeeded" in text
    training = json.loads((tmp_path / "sft" / "training.json").read_text())
    assert training["steps"] == 3 and training["metrics"]["loss"] > 0
    # the learner logged to wandb, offline: every step's loss is in the run file
    logged = read_offline_run(tmp_path / "sft" / "wandb")
    losses = [row["loss"] for row in logged["history"] if "loss" in row]
    assert [row["_step"] for row in logged["history"] if "loss" in row] == [1, 2, 3]
    assert losses[-1] == pytest.approx(training["metrics"]["loss"])
    assert logged["config"]["learner"] == "sft" and logged["config"]["max_steps"] == 3
    assert (
        tmp_path / "sft" / "config.json"
    ).is_file()  # a full model (lora=False), loadable as one
    assert (tmp_path / "eval_after" / "episodes" / "index.html").is_file()
    assert _images(notebook) >= 2  # the loss curve and the first screenshot


@pytest.mark.exhaustive
@pytest.mark.parametrize("name", ["compare_backends", "train_and_evaluate"])
def test_notebooks_run_with_their_default_parameters(name, tmp_path):
    notebook = execute(
        NOTEBOOKS / f"{name}.ipynb",
        {"OUTPUT_DIR": str(tmp_path)},
        output=tmp_path / "executed.ipynb",
        timeout=3600,
    )
    _outputs(notebook)
    assert _images(notebook) >= 2
