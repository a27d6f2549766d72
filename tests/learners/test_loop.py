"""TrainLoop.fit's clean-up: what it started is ended however fit ends."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


def _sft_cfg(episodes_dir, out, **overrides):
    """A quiet one-batch SFT run of ``episodes_dir`` into ``out``."""
    return {
        "wandb": False,
        "progress": False,
        "batch_size": 2,
        "episodes": [str(episodes_dir)],
        "output_dir": str(out),
        **overrides,
    }


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
    cfg = _sft_cfg(episodes_dir, out, max_steps=1, save_steps=0)
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


def _benchmark_run_dir(root):
    """What ``benchmarks.run`` leaves: results.jsonl and episode dirs, no learner's files."""
    root.mkdir(parents=True)
    (root / "results.jsonl").write_text('{"seed": 0, "success": true}\n')
    (root / "episodes" / "ep-0").mkdir(parents=True)
    (root / "episodes" / "ep-0" / "episode.json").write_text("{}")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("learner", ["sft", "sdft", "grpo"])
def test_an_output_dir_that_is_a_file_or_another_tools_dir_is_refused_before_the_model_loads(
    tmp_path, episodes_dir, monkeypatch, learner
):
    """Not a FileExistsError once the model has loaded, nor training into a
    benchmark's run dir and mixing files: one line naming the key, the path and
    what to pick instead, and the dir left as it was."""
    import importlib

    import learners.loop
    from browser_env.refusal import Refused

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(learners.loop, "load_trainable", no_model)
    run = importlib.import_module(f"learners.{learner}").run
    data = {} if learner == "grpo" else {"episodes": [str(episodes_dir)]}
    play = {"play_fn": lambda *args: None} if learner == "grpo" else {}  # no live env check
    a_file = tmp_path / "results.jsonl"
    a_file.write_text("{}\n")
    bench = tmp_path / "bench"
    before = _benchmark_run_dir(bench)
    pick = "a new or empty directory, or a learner's earlier output to continue training it"
    for out, what in (
        (a_file, "is a file, not a directory"),
        (a_file / "adapter", f"is below {a_file}, a file, not a directory"),
        (bench, "holds files no learner wrote (episodes/, results.jsonl; no training.json"),
    ):
        with pytest.raises(Refused) as refused:
            run({**data, "output_dir": str(out), "wandb": False}, **play)
        message = str(refused.value)
        assert message.startswith(f"learner.output_dir={out} {what}"), message
        assert message.endswith(f"set learner.output_dir to {pick}") and "\n" not in message
    assert sorted(str(p.relative_to(bench)) for p in bench.rglob("*")) == before
    assert a_file.read_text() == "{}\n"


@pytest.mark.parametrize("learner", ["sft", "sdft"])
def test_episodes_the_filters_keep_none_of_are_refused_before_the_model_loads(
    tmp_path, episodes_dir, monkeypatch, learner
):
    """A misspelt ``learner.tasks`` (or an empty episodes dir) is told in one line
    before the model loads, not after it, and nothing is written."""
    import importlib

    import learners.loop
    from browser_env.refusal import Refused

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(learners.loop, "load_trainable", no_model)
    run = importlib.import_module(f"learners.{learner}").run
    out = tmp_path / "adapter"
    empty = tmp_path / "empty"
    empty.mkdir()
    for data, message in (
        (
            {"episodes": [str(episodes_dir)], "tasks": ["no-such-task"]},
            "none kept by learner.tasks",
        ),
        ({"episodes": [str(empty)]}, "no samples: no episodes under learner.episodes"),
        ({"episodes": []}, "no episodes given: set learner.episodes=[DIR, ...]"),
    ):
        with pytest.raises(Refused) as refused:
            run({**data, "output_dir": str(out), "wandb": False})
        assert message in str(refused.value)
    assert not out.exists()


def test_new_empty_finished_and_interrupted_output_dirs_are_still_trained_into(tmp_path):
    """What :func:`check_output_dir` lets through, which :func:`run_start` starts,
    continues or resumes (no model needed)."""
    from learners.checkpoint import Checkpoints, RunStart, check_output_dir, run_start

    new = tmp_path / "new" / "adapter"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_text("")  # hidden entries do not count
    interrupted = tmp_path / "interrupted"
    step = Checkpoints(interrupted).write(2, lambda path: None)  # died before training.json
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "training.json").write_text(json.dumps({"status": "complete"}))
    (finished / "adapter_config.json").write_text("{}")
    assert run_start(new) == run_start(empty) == RunStart()
    assert run_start(interrupted) == RunStart(resume=step)
    assert run_start(finished) == RunStart(continues=str(finished), kind="adapter", stale=True)
    check_output_dir(tmp_path / "online", "online.output_dir")
    with pytest.raises(ValueError, match=r"^online\.output_dir=.* holds files"):
        check_output_dir(tmp_path, "online.output_dir")


def test_an_adapter_or_model_no_learner_run_wrote_is_not_overwritten(tmp_path):
    """A saved adapter or model without ``training.json`` (downloaded, copied) is
    not this project's output to continue: training into it would overwrite it,
    so it is refused, naming the option that trains on from it."""
    from learners.checkpoint import check_output_dir

    adapter, model = tmp_path / "adapter", tmp_path / "model"
    for out, name in ((adapter, "adapter_config.json"), (model, "model.safetensors")):
        out.mkdir()
        (out / name).write_text("{}")
    with pytest.raises(ValueError) as refused:
        check_output_dir(adapter)
    assert str(refused.value) == (
        f"learner.output_dir={adapter} holds a saved adapter that no learner run wrote there "
        "(no training.json): training into it would overwrite it; to train on from it, set "
        f"learner.init_adapter={adapter} and learner.output_dir to a new directory"
    )
    with pytest.raises(ValueError, match=rf"set learner\.model={model} and learner\.output_dir"):
        check_output_dir(model)
    with pytest.raises(ValueError, match=r"saved adapter .*; set out to a new or empty directory$"):
        check_output_dir(adapter, "out", under=tmp_path)
    (adapter / "training.json").write_text(json.dumps({"status": "complete"}))
    check_output_dir(adapter)  # a learner's finished output: continued


def test_a_run_that_dies_as_its_tracker_starts_is_a_learner_output_the_rerun_takes(
    tmp_path, monkeypatch
):
    """``training.json`` is written before the tracker's ``metrics.jsonl`` and
    ``wandb/``: a run that dies as wandb starts leaves a dir the same command
    trains into again, not one refused as no learner's."""
    import learners.loop
    from learners.checkpoint import check_output_dir
    from learners.config import LearnerConfig
    from learners.loop import TrainLoop

    out = tmp_path / "adapter"

    def wandb_fails(cfg, learner, output_dir):  # as Tracker starts: its files, then wandb
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
        (out / "wandb").mkdir()
        raise RuntimeError("wandb could not start")

    monkeypatch.setattr(learners.loop, "Tracker", wandb_fails)
    cfg = LearnerConfig(output_dir=str(out), wandb=False, progress=False, max_steps=1)
    with pytest.raises(RuntimeError, match="wandb"):
        TrainLoop(cfg, "sft").fit(lambda step: {"loss": 0.0})
    check_output_dir(out)
    assert json.loads((out / "training.json").read_text())["status"] == "running"


@pytest.mark.parametrize("learner", ["sft", "sdft", "grpo"])
def test_a_second_run_into_an_output_dir_in_use_is_refused_at_once(
    tmp_path, episodes_dir, monkeypatch, learner
):
    """Two runs into one ``learner.output_dir`` at once both trained, mixing
    their metrics.jsonl and overwriting each other's adapter: the second is
    refused in one line, naming the key, before its model loads."""
    import importlib

    import learners.loop
    from browser_env.dirlock import hold_dir
    from browser_env.refusal import Refused

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(learners.loop, "load_trainable", no_model)
    run = importlib.import_module(f"learners.{learner}").run
    data = {} if learner == "grpo" else {"episodes": [str(episodes_dir)]}
    play = {"play_fn": lambda *args: None} if learner == "grpo" else {}
    out = tmp_path / "adapter"
    # the first run, training there now
    with hold_dir(out, "learner.output_dir"), pytest.raises(Refused) as refused:
        run({**data, "output_dir": str(out), "wandb": False}, **play)
    assert str(refused.value) == (
        f"learner.output_dir={out} is in use by another run, writing there now: wait for it "
        "to end, or set learner.output_dir to another directory"
    )
    assert list(out.iterdir()) == []


def test_the_output_dir_is_held_from_the_loop_made_until_the_run_ends_however_it_ends(
    tmp_path, episodes_dir
):
    """Held while the loop lives (a second loop is refused), let go when fit
    returns or raises, and when a ``with loop:`` block ends without fit (a
    refusal after the model loaded), which leaves no empty dir it made; the
    same process then trains into the dir again (the study and the demo do)."""
    from browser_env.dirlock import DirInUse, hold_dir
    from learners.config import LearnerConfig
    from learners.loop import TrainLoop

    out = tmp_path / "adapter"
    cfg = LearnerConfig(output_dir=str(out), wandb=False, progress=False, max_steps=1)
    with TrainLoop(cfg, "sft") as loop:
        with pytest.raises(DirInUse, match="learner.output_dir=.* is in use"):
            TrainLoop(cfg, "sft")
        assert out.is_dir()
    assert not out.exists()  # made by the loop, still empty: removed
    TrainLoop(cfg, "sft").fit(lambda step: {"loss": 0.0})
    with hold_dir(out):
        pass
    loop = TrainLoop(cfg, "sft")
    with pytest.raises(ZeroDivisionError):
        loop.fit(lambda step: {"loss": 1 / 0})
    with hold_dir(out):
        pass
    assert (out / "training.json").is_file()


def test_ctrl_c_leaves_interrupted_and_the_resumed_run_logs_each_step_once(
    tmp_path, episodes_dir, killer, capsys
):
    """After Ctrl+C, training.json said ``running`` and the resumed run appended
    the steps past the checkpoint again (1,2,3 then 3,4,...) without a word.
    Now: ``interrupted`` (which resumes as ``running`` did), a line saying where
    the rerun resumed, and each step logged once -- the finished run this one
    continues keeps its own lines."""
    from learners.sft import run

    out = tmp_path / "sft"
    cfg = _sft_cfg(episodes_dir, out, save_steps=2)

    def logged():
        return [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()]

    run({**cfg, "max_steps": 2})  # a finished run, continued below
    killer.at, killer.ctrl_c = 3, True  # as step 4 starts: steps 1-3 logged, step-2 saved
    with pytest.raises(KeyboardInterrupt):
        run({**cfg, "max_steps": 6})
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "interrupted" and meta["steps"] == 2
    assert logged() == [1, 2, 1, 2, 3]
    capsys.readouterr()
    result = run({**cfg, "max_steps": 6})
    assert killer.resumed == [out / "checkpoints" / "step-000002"]
    assert "sft: resumed from checkpoint step-000002 (step 2 of 6)" in capsys.readouterr().err
    assert [row["step"] for row in result["history"]] == [3, 4, 5, 6]
    assert logged() == [1, 2, 1, 2, 3, 4, 5, 6]
    assert json.loads((out / "training.json").read_text())["status"] == "complete"


def test_a_run_interrupted_before_its_first_checkpoint_starts_over_logging_each_step_once(
    tmp_path, episodes_dir, killer
):
    from learners.sft import run

    out = tmp_path / "sft"
    cfg = _sft_cfg(episodes_dir, out, save_steps=0, max_steps=3)
    killer.at, killer.ctrl_c = 2, True
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "interrupted" and meta["steps"] == 0
    run(cfg)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()]
    assert steps == [1, 2, 3]


def test_rewind_metrics_without_a_recorded_count_drops_the_trailing_steps_past_the_checkpoint(
    tmp_path,
):
    """A checkpoint written before checkpoints recorded metrics.jsonl's length:
    the trailing lines past its step go (a line cut off by a crash too)."""
    from learners.tracking import rewind_metrics

    rows = [{"step": s} for s in (1, 2, 1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo'
    )
    (tmp_path / "training.json").write_text(json.dumps({"status": "running"}))
    assert rewind_metrics(tmp_path, resume_step=2) is None
    kept = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()]
    assert kept == [1, 2, 1, 2]


def test_ctrl_c_before_a_continued_run_starts_leaves_the_finished_record_as_it_was(
    tmp_path, episodes_dir, monkeypatch, capsys
):
    """A Ctrl-C before fit wrote ``running`` (here: while it rewinds the metrics)
    found the finished run's training.json and rewrote it as ``interrupted``,
    steps 0, no metrics; it is this run's to mark only once fit has written it."""
    import learners.loop
    from learners.sft import run

    out = tmp_path / "sft"
    cfg = _sft_cfg(episodes_dir, out, save_steps=0, max_steps=2)
    run(cfg)
    before = (out / "training.json").read_text()

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(learners.loop, "rewind_metrics", ctrl_c)
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert (out / "training.json").read_text() == before
    assert (
        f"sft: interrupted; the same command trains on from the finished run again in {out}"
        in capsys.readouterr().err
    )
