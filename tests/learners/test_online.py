"""learners.online.OnlineSDFT (agents.run online=sdft) without a browser: updates
from a recorded episode, checkpoints each one, loads it into the agent, and
stops at its budget. Also: agents never imports learners."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from learners.online import OnlineSDFT

ROOT = Path(__file__).resolve().parents[2]


def test_agents_has_no_static_import_of_learners():
    pattern = re.compile(r"^\s*(from|import)\s+learners\b", re.MULTILINE)
    offenders = [p for p in (ROOT / "agents").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_budget_stops_updates(tmp_path):
    trainer = OnlineSDFT(output_dir=str(tmp_path), max_updates=0)
    assert trainer.exhausted
    assert trainer.update(SimpleNamespace(backend=None), tmp_path) is None
    trainer = OnlineSDFT(output_dir=str(tmp_path), budget_s=1.0)
    trainer.spent_s = 2.0
    assert trainer.exhausted
    with pytest.raises(ValueError):
        OnlineSDFT(output_dir=str(tmp_path), steps_per_update=0)


def test_update_trains_checkpoints_and_loads_the_adapter(tmp_path, episodes_dir):
    from agents.backends.transformers import TransformersBackend
    from agents.tiny import tiny_model_path

    episode = sorted(p.parent for p in Path(episodes_dir).glob("*/episode.json"))[0]
    backend = TransformersBackend(str(tiny_model_path("text")), device="cpu", dtype="float32")
    agent = SimpleNamespace(backend=backend)
    out = tmp_path / "online"
    trainer = OnlineSDFT(
        output_dir=str(out),
        max_updates=2,
        steps_per_update=1,
        sdft={"learning_rate": 1e-2, "batch_size": 1, "max_new_tokens": 8, "wandb": False},
    )
    first = trainer.update(agent, episode)
    second = trainer.update(agent, episode)
    assert trainer.update(agent, episode) is None  # max_updates spent
    assert first["update"] == 1 and second["update"] == 2
    for n in (1, 2):
        assert (out / "updates" / f"update-{n:04d}" / "adapter_model.safetensors").is_file()
    assert backend.adapter == str(out)
    assert hasattr(backend.model, "peft_config")
    lines = (out / "online.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2]
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "complete" and meta.get("runs")  # the second continued the first
    # a later run into the same dir goes on from it (tests/agents/test_run.py plays it)
    later = OnlineSDFT(output_dir=str(out), max_updates=1)
    assert (later.goes_on_from, later.first_update) == (str(out), 3)
    assert sorted(p.name for p in (out / "updates").iterdir()) == ["update-0001", "update-0002"]
    backend.close()


def test_an_online_output_dir_no_learner_wrote_is_refused_before_any_episode(tmp_path):
    """``agents.run ... online.output_dir=X`` checks X as it builds the trainer
    (a refusal there is one line), not after the first success's training."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    with pytest.raises(ValueError, match=rf"^online\.output_dir={a_file} is a file"):
        OnlineSDFT(output_dir=str(a_file))
    with pytest.raises(ValueError, match=r"^online\.output_dir=.* holds files no learner wrote"):
        OnlineSDFT(output_dir=str(tmp_path))
    earlier = tmp_path / "online"  # an earlier online run's: its updates go on from it
    (earlier / "updates" / "update-0001").mkdir(parents=True)
    (earlier / "training.json").write_text(json.dumps({"status": "complete"}))
    (earlier / "online.jsonl").write_text("{}\n")
    goes_on = OnlineSDFT(output_dir=str(earlier))
    assert goes_on.output_dir == str(earlier) and goes_on.first_update == 2
    assert goes_on.goes_on_from is None  # no adapter was saved there: nothing to load
