"""Resuming an interrupted run: only the same learner with the same settings
(run-control ones aside: :data:`learners.resume_rule.RESUME_MAY_CHANGE`)."""

from __future__ import annotations

import json
import re

import pytest

from learners.checkpoint import Checkpoints, run_start, write_training_json
from learners.config import GRPOConfig, SDFTConfig, SFTConfig


def _interrupted(out, cls, learner, **settings):
    """What a run of ``learner`` with ``cls(**settings)`` leaves in ``out``
    when it dies after its step-2 checkpoint (no model needed)."""
    config = cls(output_dir=str(out), **settings)
    write_training_json(
        out,
        learner=learner,
        base_model="tiny-random",
        config=config,
        data={},
        metrics={},
        status="interrupted",
        steps=2,
    )
    return Checkpoints(out).write(2, lambda path: None)


@pytest.mark.parametrize(
    ("cls", "changes", "refused"),
    [
        # run control: how long, how often it saves, evaluates and logs, where rollouts run
        (SFTConfig, {"max_steps": 500, "save_steps": 7, "save_total_limit": 5}, []),
        (SFTConfig, {"logging_steps": 3, "wandb": False, "progress": False}, []),
        (SFTConfig, {"eval_steps": 5, "rollback_tolerance": 0.1, "num_epochs": 2.0}, []),
        (GRPOConfig, {"runner": "vector", "workers": 4, "generation": "server"}, []),
        # what shapes the saved state, or what the steps still to come would do
        (SFTConfig, {"lora_alpha": 32, "seed": 1}, ["lora_alpha", "seed"]),
        (SFTConfig, {"weight_decay": 0.1, "max_grad_norm": 0.5}, ["max_grad_norm", "weight_decay"]),
        (SFTConfig, {"episodes": ["/other"], "batch_size": 2}, ["batch_size", "episodes"]),
        (
            SFTConfig,
            {"lora_target_modules": ["q_proj"], "model": "x"},
            ["lora_target_modules", "model"],
        ),
        (SFTConfig, {"eval_seeds": [7], "demo_fraction": 0.5}, ["demo_fraction", "eval_seeds"]),
        (SFTConfig, {"prompt": {"max_history": 2}}, ["prompt.max_history"]),
        (SDFTConfig, {"backend": "mlx", "ema_rate": 0.5}, ["backend", "ema_rate"]),
        (GRPOConfig, {"beta": 0.1, "num_generations": 8}, ["beta", "num_generations"]),
    ],
)
def test_which_settings_a_resume_may_change(tmp_path, cls, changes, refused):
    """Each setting either passes or is named in the refusal, which keeps the
    checkpoint there to resume with the run's own settings."""
    learner = {SFTConfig: "sft", SDFTConfig: "sdft", GRPOConfig: "grpo"}[cls]
    out = tmp_path / "out"
    step = _interrupted(out, cls, learner)
    config = cls(output_dir=str(out), **changes)
    if not refused:
        assert run_start(out, learner=learner, config=config).resume == step
        return
    with pytest.raises(ValueError, match="with other settings") as err:
        run_start(out, learner=learner, config=config)
    message = str(err.value)
    assert _named(message) == refused, message
    assert "\n" not in message and "set learner.output_dir to a new directory" in message
    assert run_start(out, learner=learner, config=cls(output_dir=str(out))).resume == step


def _named(message):
    """The keys a refusal names as changed (``learner.KEY=SAVED there, NOW now; ...``)."""
    changed = re.search(r"with other settings: (.*?)\. Resume it", message)
    assert changed, message
    return [d.split("=")[0].removeprefix("learner.") for d in changed.group(1).split("; ")]


def test_another_learners_interrupted_run_is_not_resumed(tmp_path):
    """GRPO (or SDFT) into a dir where SFT was interrupted used to take up SFT's
    checkpoint, optimiser state and all."""
    out = tmp_path / "out"
    _interrupted(out, SFTConfig, "sft")
    with pytest.raises(ValueError, match="interrupted sft run .*, which grpo cannot resume"):
        run_start(out, learner="grpo", config=GRPOConfig(output_dir=str(out)))


# end to end on the tiny model: what the command line hits


@pytest.fixture
def trains():
    pytest.importorskip("torch")
    pytest.importorskip("peft")


def _sft_cfg(episodes_dir, out, **overrides):
    return {
        "wandb": False,
        "progress": False,
        "batch_size": 2,
        "episodes": [str(episodes_dir)],
        "output_dir": str(out),
        "save_steps": 2,
        "max_steps": 4,
        **overrides,
    }


def _ctrl_c_after_step_2(killer, run, cfg):
    killer.at, killer.ctrl_c = 3, True  # as step 4 starts: step-2 saved
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    killer.ctrl_c = False


def _state(out):
    """What a refused run must leave as it was."""
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    return files, (out / "training.json").read_text(), (out / "metrics.jsonl").read_text()


def test_a_resume_with_another_lora_rank_or_learning_rate_is_refused_and_max_steps_may_change(
    tmp_path, episodes_dir, trains, killer
):
    """A changed ``lora_r`` was a 40-line size-mismatch traceback from
    ``load_state_dict``; a changed ``learning_rate`` was silently replaced by the
    checkpoint optimiser's (while training.json recorded the new one). Both are
    refused now, in one line naming the key, before the model loads, and the
    dir is left to resume; ``max_steps`` (and the other run-control settings)
    may change: that resume trains on from the checkpoint."""
    from browser_env.refusal import Refused
    from learners.sft import run

    out = tmp_path / "sft"
    cfg = _sft_cfg(episodes_dir, out)
    _ctrl_c_after_step_2(killer, run, cfg)
    before = _state(out)
    for key, value, shown in [
        ("lora_r", 4, "learner.lora_r=8 there, 4 now"),
        ("learning_rate", 1e-3, "learner.learning_rate=0.0002 there, 0.001 now"),
    ]:
        with pytest.raises(Refused) as err:
            run({**cfg, key: value})
        message = str(err.value)
        assert shown in message and _named(message) == [key], message
        assert message.startswith(f"learner.output_dir={out} holds an interrupted sft run")
        assert "\n" not in message
    assert killer.resumed == [] and _state(out) == before

    result = run({**cfg, "max_steps": 5, "save_steps": 3, "logging_steps": 1})
    assert killer.resumed == [out / "checkpoints" / "step-000002"]
    assert [row["step"] for row in result["history"]] == [3, 4, 5]
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "complete" and meta["hyperparameters"]["max_steps"] == 5


def test_sdft_does_not_resume_an_interrupted_sft_run(tmp_path, episodes_dir, trains, killer):
    """SDFT into the dir of an interrupted SFT run took up SFT's checkpoint
    (weights and AdamW state) as its own; now it is refused, naming both."""
    from browser_env.refusal import Refused
    from learners.sdft import run as sdft
    from learners.sft import run as sft

    out = tmp_path / "sft"
    cfg = _sft_cfg(episodes_dir, out)
    _ctrl_c_after_step_2(killer, sft, cfg)
    before = _state(out)
    with pytest.raises(
        Refused, match=r"interrupted sft run \(step-000002\), which sdft cannot"
    ) as err:
        sdft({**cfg, "max_new_tokens": 4})
    assert "resume it with learners.sft, or set learner.output_dir" in str(err.value)
    assert killer.resumed == [] and _state(out) == before
