"""benchmarks.learner_speed on the tiny random model: every arm runs, is timed and trains.

No assertion on speed (the machine is shared); the figures live in
docs/learners.md ("Speed against TRL").
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parents[2] / "conf")

# The smallest recipe that still has every part: a 3-button page without page text
# (a ~550-token prompt), one warm-up and one timed step, one torch thread.
TINY = [
    "model=tiny-random",
    "batch_size=2",
    "num_generations=2",
    "warmup_steps=1",
    "steps=1",
    "threads=1",
    "max_new_tokens=8",
    "data.samples=4",
    "data.elements=3",
    "data.text_words=0",
    "progress=false",
]


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            config_name="learner_speed", overrides=[*TINY, f"output_dir={tmp_path}", *overrides]
        )


def _check(results: dict, tmp_path: Path) -> None:
    from benchmarks.learner_arms import ARMS

    rows = {(r["algorithm"], r["implementation"]): r for r in results["rows"]}
    assert set(rows) == set(ARMS)  # sft and grpo: ours and TRL; sdft: ours
    assert results["not_compared"] == ["sdft/trl"]
    for key, row in rows.items():
        assert row["step_s"] and all(math.isfinite(t) and t > 0 for t in row["step_s"]), key
        assert math.isfinite(row["peak_mib"]) and row["peak_mib"] > 0, key
        # a fresh LoRA starts with B = 0: a positive norm means the trainer updated it
        assert row["lora_b_norm"] > 0, key
    for algorithm in ("sft", "grpo"):  # the same tokens went through both trainers
        ours, trl = rows[(algorithm, "ours")], rows[(algorithm, "trl")]
        assert ours["completion_tokens_per_step"] == pytest.approx(
            trl["completion_tokens_per_step"]
        )
        assert results["ratios"][algorithm]["time"] > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["algorithm"] for r in saved["rows"]] == [r["algorithm"] for r in results["rows"]]
    assert (tmp_path / "learner_speed.png").stat().st_size > 0


@pytest.mark.slow  # ~3 s of training, but the first to import TRL's trainers (~6 s)
def test_learner_speed_tiny_in_process(tmp_path, capsys):
    from benchmarks.learner_speed import run

    results = run(_cfg(tmp_path, "isolate=false"))
    _check(results, tmp_path)
    table = capsys.readouterr().out
    for row in results["rows"]:
        assert f"| {row['algorithm']} | {row['implementation']} |" in table


@pytest.mark.exhaustive
def test_learner_speed_tiny_isolated(tmp_path):
    """The default mode: every arm (and the tokenisation) in a fresh spawned process."""
    from benchmarks.learner_speed import run

    _check(run(_cfg(tmp_path, "isolate=true")), tmp_path)


def test_step_clock_times_steps_after_the_warm_up():
    import torch

    from benchmarks.learner_clock import StepClock

    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    with StepClock(warmup=2, steps=2) as clock:
        for _ in range(5):  # the fifth step is counted, not timed
            time.sleep(0.02)
            weight.sum().backward()
            optimizer.step()
    assert clock.count == 5
    assert len(clock.times) == 2
    assert all(t >= 0.02 for t in clock.times)
    assert clock.peak_mib > 0
    optimizer.step()  # after the clock is left its hook is gone
    assert clock.count == 5


DEFAULTS = {
    "model": "tiny-random",
    "algorithms": ["sft", "sdft", "grpo"],
    "implementations": ["ours", "trl"],
    "batch_size": 4,
    "num_generations": 2,
    "warmup_steps": 2,
    "steps": 5,
    "learning_rate": 1.0e-4,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
    "max_new_tokens": 24,
    "seed": 0,
    "device": "cpu",
    "threads": None,
    "isolate": True,
    "episodes": None,
    "data": {"samples": 16, "elements": 12, "text_words": 200},
    "prompt": {},
    "plot": True,
    "progress": True,
    "output_dir": None,
}
"""What ``conf/learner_speed.yaml`` held before :class:`LearnerSpeedConfig` took its defaults."""


def test_the_config_keeps_its_defaults():
    """``conf/learner_speed.yaml`` over :class:`LearnerSpeedConfig` composes to the
    values the YAML held (``--cfg job``), every key with its help."""
    import dataclasses

    from omegaconf import OmegaConf

    from benchmarks.learner_speed import LearnerSpeedConfig, LoraSettings, SyntheticData

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="learner_speed")
        lists = compose(config_name="learner_speed", overrides=["lora.target_modules=[q,v]"])
    assert OmegaConf.to_container(cfg) == DEFAULTS
    assert list(lists.lora.target_modules) == ["q", "v"]  # a list or 'all-linear'
    for schema in (LearnerSpeedConfig, LoraSettings, SyntheticData):
        assert all(f.metadata.get("help") for f in dataclasses.fields(schema)), schema


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("steps=abc", "steps"),
        ("learning_rate=fast", "learning_rate"),
        ("isolate=maybe", "isolate"),
        ("algorithms=sft", "algorithms"),
        ("lora.r=x", "lora.r"),
        ("data.samples=1.5", "data.samples"),
        ("stpes=3", "stpes"),
        ("lora.rank=4", "lora.rank"),
    ],
)
def test_a_value_of_the_wrong_kind_or_a_misspelt_key_is_hydras_error_naming_it(override, key):
    """Hydra refuses it while it composes the config, before a model loads."""
    from hydra.errors import ConfigCompositionException

    with (
        initialize_config_dir(config_dir=CONF, version_base="1.3"),
        pytest.raises(ConfigCompositionException) as raised,
    ):
        compose(config_name="learner_speed", overrides=[override])
    assert f"full_key: {key}" in str(raised.value.__cause__)


def test_bad_settings_are_refused(tmp_path):
    from benchmarks.learner_clock import StepClock
    from benchmarks.learner_speed import run

    with pytest.raises(ValueError, match="unknown algorithms"):
        run(_cfg(tmp_path, "algorithms=[ppo]"))
    with pytest.raises(ValueError, match="warmup"):
        StepClock(warmup=0, steps=1)
