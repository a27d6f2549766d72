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
    from learners.sdft import run

    cfg = {**CFG, "episodes": [str(episodes_dir)]}
    straight = tmp_path / "straight"
    run({**cfg, "output_dir": str(straight)})

    saved: dict[str, np.ndarray] = {}
    real_save = sdft_mlx.save_checkpoint

    def save_then_crash(path, model, optimizer, teacher, step, **kw):
        real_save(path, model, optimizer, teacher, step, **kw)
        saved.update({k: np.array(v) for k, v in tree_flatten(optimizer.state)})
        raise KeyboardInterrupt("killed after the first checkpoint")

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(sdft_mlx, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run({**cfg, "output_dir": str(interrupted)})
    monkeypatch.undo()
    ckpt = interrupted / "checkpoints" / "step-000002"
    assert sdft_mlx.latest_checkpoint(interrupted / "checkpoints") == ckpt
    assert not list((interrupted / "checkpoints").glob("*.tmp"))

    # the optimiser state a resume loads is the one the run had when it saved
    optimizer = optim.AdamW(learning_rate=cfg["learning_rate"])
    teacher = sdft_mlx._restore_state(ckpt, optimizer)
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
