"""learners.study end to end with a tiny budget and the tiny random model."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.mark.slow
def test_study_runs_end_to_end_with_a_tiny_budget(tmp_path, click_episode_writer):
    from learners.study import run

    write_click_episode = click_episode_writer

    demos = tmp_path / "demos"
    targets = ["ONE", "TWO", "THREE"]
    for task in ("click-button", "click-other"):
        for seed in [0, 1, 2, 3, 10, 11, 20, 21]:
            write_click_episode(demos, seed, target=targets[seed % 3], task=task)
    out = tmp_path / "study"
    results = run(
        {
            "model": "tiny",
            "demos": [str(demos)],
            "base_tasks": ["click-button"],
            "new_tasks": ["click-other"],
            "train_seeds": [0, 10],
            "val_seeds": [10, 20],
            "test_seeds": [20, 30],
            "algorithms": ["sft", "sdft", "sft+sdft"],
            "stage_a_steps": 2,
            "stage_b_steps": 2,
            "save_steps": 1,
            "max_new_tokens": 4,
            "output_dir": str(out),
            "progress": False,
        }
    )
    assert results["data"]["new_test_decisions"] == 2 and results["data"]["new_val_decisions"] == 2
    for name in ("sft", "sdft", "sft+sdft"):
        record = results["stage_b"][name]
        assert 0.0 <= record["new_test"]["accuracy"] <= 1.0 and record["new_test"]["n"] == 2
        low, high = record["new_test"]["ci95"]
        assert 0.0 <= low <= record["new_test"]["accuracy"] <= high <= 1.0
        assert record["seconds_per_step"] > 0 and record["peak_memory_mib"] > 0
        assert record["cpu_seconds_per_step"] > 0
        assert len(record["validation"]) >= 2  # the final adapter and its checkpoints
        assert record["perplexity"] > 1.0
    assert len(results["stage_b"]["sft+sdft"]["history"]) == 2  # same budget: 1 + 1 steps
    assert "teacher_better" in results["precondition"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["stage_b"].keys() == results["stage_b"].keys()
    table = (out / "results.md").read_text()
    assert "stage B: sdft" in table and "SDFT precondition" in table
    assert (out / "curves.png").stat().st_size > 0


@pytest.mark.exhaustive
@pytest.mark.browser
def test_study_grpo_arm_trains_on_the_live_env(tmp_path, click_episode_writer):
    """The GRPO arm (binary success reward, rollouts in real MiniWoB++ pages)
    trains from the stage-A adapter and is scored like the others."""
    from learners.study import run

    demos = tmp_path / "demos"
    for task in ("click-link", "click-button"):
        for seed in [0, 1, 10, 20]:
            click_episode_writer(demos, seed, target="ONE", task=task)
    out = tmp_path / "study"
    results = run(
        {
            "model": "tiny",
            "demos": [str(demos)],
            "base_tasks": ["click-link"],
            "new_tasks": ["click-button"],
            "train_seeds": [0, 10],
            "val_seeds": [10, 20],
            "test_seeds": [20, 30],
            "algorithms": ["grpo"],
            "stage_a_steps": 1,
            "stage_b_steps": 1,
            "save_steps": 1,
            "max_new_tokens": 4,
            "output_dir": str(out),
            "progress": False,
        }
    )
    record = results["stage_b"]["grpo"]
    assert record["history"] and record["new_test"]["n"] == 1
    assert record["cpu_seconds_per_step"] > 0
    assert json.loads((out / "results.json").read_text())["stage_b"]["grpo"]["selected"]


def test_wilson_interval():
    from learners.study import wilson

    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(7, 30)
    assert low == pytest.approx(0.118, abs=2e-3) and high == pytest.approx(0.409, abs=2e-3)


def test_overlapping_seed_splits_are_rejected():
    from learners.study import StudyConfig

    with pytest.raises(ValueError, match="overlap"):
        StudyConfig(demos=["x"], train_seeds=[0, 100], val_seeds=[50, 60])


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        # stage_b_steps=1 gave the sft+sdft arm's SDFT half 0 steps, refused mid-study;
        # 0 divided by zero after the arms trained
        ({"stage_b_steps": 1}, r"^stage_b_steps must be >= 2 with the sft\+sdft arm"),
        ({"stage_b_steps": 0}, r"^stage_b_steps must be >= 1, got 0"),
        ({"stage_a_steps": 0}, r"^stage_a_steps must be >= 1"),
        ({"save_steps": -1}, r"^save_steps must be >= 1"),
    ],
)
def test_step_counts_a_stage_cannot_run_are_refused_up_front(settings, match):
    from learners.study import StudyConfig

    with pytest.raises(ValueError, match=match):
        StudyConfig(demos=["x"], **settings)
    if settings == {"stage_b_steps": 1}:  # one step is enough for the other arms
        StudyConfig(demos=["x"], stage_b_steps=1, algorithms=["sft", "sdft"])


def test_the_study_refuses_a_learner_dir_before_any_model_loads(tmp_path, monkeypatch):
    """A stage's dir holding someone else's files is refused as the study starts,
    not when that stage's learner starts after the earlier stages trained."""
    import agents.backends.transformers
    from learners.study import run

    def no_model(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr(agents.backends.transformers, "TransformersBackend", no_model)
    theirs = tmp_path / "study" / "stage_b" / "sft_then_sdft" / "sdft"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine\n")
    below = rf"\(where this command trains, below output_dir={tmp_path / 'study'}\)"
    with pytest.raises(ValueError, match=rf"^{theirs} {below} holds files.*set output_dir to"):
        run({"model": "tiny", "demos": [str(tmp_path)], "output_dir": str(tmp_path / "study")})


def test_the_study_refuses_missing_or_unusable_demos_before_any_model_loads(
    tmp_path, monkeypatch, click_episode_writer
):
    """No demos, a demos dir that is not there, one with no episode, or one
    with no episode for a split used to be a ValueError or FileNotFoundError
    traceback (after the model loaded, for all but the first): now each is a
    one-line refusal before any model loads, and nothing is written."""
    import agents.backends.transformers
    from browser_env.refusal import Refused
    from learners.study import run

    def no_model(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr(agents.backends.transformers, "TransformersBackend", no_model)
    empty = tmp_path / "empty"
    empty.mkdir()
    base_only = tmp_path / "base_only"
    click_episode_writer(base_only, 0, task="click-button")
    out = tmp_path / "study"
    common = {"model": "tiny", "output_dir": str(out), "base_tasks": ["click-button"]}
    for values, message in (
        ({}, "no demos: set demos=[DIR, ...]"),
        ({"demos": [str(tmp_path / "nope")]}, "demos: no such episode or run directory"),
        ({"demos": [str(empty)]}, f"demos=[{str(empty)!r}] holds no complete successful"),
        (
            {"demos": [str(base_only)], "new_tasks": ["click-other"]},
            "no new train samples in demos=",
        ),
        ({"demos": [str(empty)], "model": "nope"}, "model='nope' is no preset"),
    ):
        with pytest.raises(Refused) as refused:
            run({**common, **values})
        assert str(refused.value).startswith(message), str(refused.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: no demos: set demos=[DIR, ...] (recorded expert episodes)"),
        (["demos=[/nope]"], "error: demos: no such episode or run directory: ['/nope']"),
    ],
)
def test_the_study_command_line_refuses_in_one_line_and_leaves_no_run_dir(tmp_path, args, message):
    """``error: <why>``, exit status 2, and no ``outputs/study/<time>/study.log``
    left behind (each refused command used to leave one, and a traceback)."""
    from _commands import python_m

    done = python_m("learners.study", "model=tiny", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [message], done.stderr[-2000:]
    assert not any(p.is_file() for p in tmp_path.rglob("*")), list(tmp_path.rglob("*"))
