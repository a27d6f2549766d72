"""MLX SDFT checkpoints carry the optimiser and the EMA teacher: a resumed run goes on exactly."""

from __future__ import annotations

import pytest

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")
pytest.importorskip("torch")

import numpy as np  # noqa: E402

CFG = {
    "wandb": False,
    "progress": False,
    "batch_size": 2,
    "max_new_tokens": 8,
    "backend": "mlx",
    "learning_rate": 1e-2,
    "ema_rate": 0.5,  # a moving teacher, so its state matters too
    "max_steps": 4,
    "save_steps": 2,
}


def _adapter(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.exhaustive  # ~40 s; the torch learners' resume is checked in the default tier
def test_sdft_mlx_resume_restores_optimizer_and_ends_like_an_uninterrupted_run(
    tmp_path, episodes_dir, monkeypatch
):
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    import learners.sdft_mlx as sdft_mlx
    from learners.checkpoint import Checkpoints
    from learners.sdft import run

    cfg = {**CFG, "episodes": [str(episodes_dir)]}
    straight = tmp_path / "straight"
    run({**cfg, "output_dir": str(straight)})

    saved: dict[str, np.ndarray] = {}
    real_save = sdft_mlx.MLXCheckpoints.save

    def save_then_crash(self, step, optimizer, extra=None, name=None):
        real_save(self, step, optimizer, extra, name)
        saved.update({k: np.array(v) for k, v in tree_flatten(optimizer.state)})
        raise KeyboardInterrupt("killed after the first checkpoint")

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(sdft_mlx.MLXCheckpoints, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run({**cfg, "output_dir": str(interrupted)})
    monkeypatch.undo()
    ckpt = interrupted / "checkpoints" / "step-000002"
    # the torch learners' layout: one Checkpoints class finds it
    assert Checkpoints(interrupted).latest() == ckpt
    assert Checkpoints.read_step(ckpt)["step"] == 2
    assert not list((interrupted / "checkpoints").glob("*.tmp"))

    # the optimiser state a resume loads is the one the run had when it saved
    optimizer = optim.AdamW(learning_rate=cfg["learning_rate"])
    manager = sdft_mlx.MLXCheckpoints(interrupted, None, rank=8, scale=2.0, base="")
    teacher = manager.restore(ckpt, optimizer)["extra"].get("teacher")
    restored = {k: np.array(v) for k, v in tree_flatten(optimizer.state)}
    assert restored.keys() == saved.keys() and int(restored["step"]) == 2
    assert any(k.endswith(".m") for k in restored) and any(k.endswith(".v") for k in restored)
    for name, value in saved.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)
    assert teacher is not None
    assert set(teacher) == {k.removesuffix(".m") for k in restored if k.endswith(".m")}

    result = run({**cfg, "output_dir": str(interrupted)})  # resumes at step 2
    assert [row["step"] for row in result["history"]] == [3, 4]
    want, got = _adapter(straight), _adapter(interrupted)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.exhaustive  # MLX SDFT for a few steps (tens of seconds on 2 busy cores)
def test_sdft_mlx_evaluation_gate_rolls_student_and_teacher_back_to_the_best(
    tmp_path, episodes_dir
):
    """The torch learners' gate on MLX: a new best is saved as checkpoints/best; a
    drop past the tolerance puts the best adapter back into the model, so the
    final adapter equals the best checkpoint's."""
    from learners.sdft import run

    scores = iter([0.5, 0.8, 0.2])
    out = tmp_path / "out"
    result = run(
        {
            **CFG,
            "episodes": [str(episodes_dir)],
            "output_dir": str(out),
            "max_steps": 3,
            "save_steps": 0,
            "eval_steps": 1,
            "rollback_tolerance": 0.1,
        },
        evaluate_fn=lambda: next(scores),
    )
    rows = result["history"]
    assert [row["eval/success_rate"] for row in rows] == [0.5, 0.8, 0.2]
    assert rows[2].get("eval/rolled_back") == 1.0 and "eval/rolled_back" not in rows[1]
    assert result["metrics"]["gate/best_step"] == 2
    best = out / "checkpoints" / "best"
    assert (best / "teacher.safetensors").is_file() and (best / "step.json").is_file()
    want, got = _adapter(best), _adapter(out)
    assert want.keys() == got.keys()
    for name in want:  # step 3 was undone: the saved adapter is step 2's
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)


def test_an_mlx_run_that_fails_before_writing_leaves_no_empty_output_dir(
    tmp_path, episodes_dir, monkeypatch
):
    """The torch learners remove the output dir their hold made when the run
    wrote nothing into it; MLX SDFT left it behind, empty."""
    import learners.sdft_mlx as sdft_mlx
    from learners.sdft import run

    def fails(*args, **kwargs):
        raise RuntimeError("the model did not load")

    monkeypatch.setattr(sdft_mlx, "_train", fails)
    out = tmp_path / "sdft"
    with pytest.raises(RuntimeError, match="did not load"):
        run({**CFG, "episodes": [str(episodes_dir)], "output_dir": str(out)})
    assert not out.exists()
