"""TrainLoop.fit's clean-up: what it started is ended however fit ends."""

from __future__ import annotations

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
