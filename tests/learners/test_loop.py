"""TrainLoop.fit's clean-up: what it started is ended however fit ends."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


def test_what_fit_holds_is_released_when_its_first_record_cannot_be_written(tmp_path):
    """``training.json`` cannot be written (a directory is in its place): fit
    raises, and the closers (eval envs) still run."""
    from learners.config import LearnerConfig
    from learners.loop import TrainLoop

    out = tmp_path / "adapter"
    loop = TrainLoop(
        LearnerConfig(output_dir=str(out), wandb=False, progress=False, max_steps=1), "sft"
    )
    closed = []
    loop.closers.append(lambda: closed.append(True))
    (out / "training.json").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        loop.fit(lambda step: {"loss": 0.0})
    assert closed == [True]


class _Crash(BaseException):
    """The process dying while it writes the final weights."""


def test_a_crash_while_the_final_weights_are_written_leaves_the_adapter_there_whole(
    tmp_path, episodes_dir, monkeypatch
):
    """A run continuing a finished adapter dies halfway through writing its
    final ``adapter_model.safetensors``: the adapter it continued from is still
    there, whole (it used to be written in place, and torn)."""
    import peft.peft_model
    from safetensors.torch import save_file

    from learners.sft import run

    out = tmp_path / "sft"
    cfg = {
        "wandb": False,
        "progress": False,
        "batch_size": 2,
        "episodes": [str(episodes_dir)],
        "output_dir": str(out),
        "max_steps": 1,
        "save_steps": 0,
    }
    run(cfg)
    before = (out / "adapter_model.safetensors").read_bytes()

    def torn_save(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # half of it reached the disk
            f.truncate(len(before) // 2)
        raise _Crash()

    monkeypatch.setattr(peft.peft_model, "safe_save_file", torn_save)
    with pytest.raises(_Crash):
        run(cfg)
    assert (out / "adapter_model.safetensors").read_bytes() == before
    assert json.loads((out / "training.json").read_text())["status"] == "running"
