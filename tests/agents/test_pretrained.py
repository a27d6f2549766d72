"""The embedded tiny policy (agents/pretrained/tiny-miniwob), its agent config
and the benchmark defaults that use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from agents import pretrained
from agents.agent import LLMAgent
from agents.run import build_agent, run

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def test_embedded_policy_is_a_small_hf_model_dir():
    directory = Path(pretrained.path("tiny-miniwob"))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (directory / name).is_file(), name
    assert (directory / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (directory / "tokenizer_config.json").read_text()
    )
    size = sum(f.stat().st_size for f in directory.iterdir())
    assert size < 20 * 2**20
    meta = pretrained.info("tiny-miniwob")
    assert meta["produced_by"].startswith("python -m learners.demo")
    assert set(meta["tasks"]) == set(compose_config("benchmark", "suite=miniwob_tiny").suite.tasks)
    assert "tiny-miniwob" in pretrained.available()


def test_unknown_policy_names_the_available_ones():
    with pytest.raises(FileNotFoundError, match="tiny-miniwob"):
        pretrained.path("no-such-policy")


def test_benchmark_defaults_compose_and_instantiate():
    cfg = compose_config("benchmark")
    suite = instantiate(cfg.suite)
    assert suite.env_ids
    agent = build_agent(cfg)
    try:
        assert hasattr(agent, "act")
        if cfg.suite.name == "miniwob_tiny":
            assert isinstance(agent, LLMAgent)
    finally:
        agent.close()


def test_tiny_agent_takes_top_level_model_and_adapter(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_config("run", "agent=tiny", "model=m", f"adapter={tmp_path}")
    OmegaConf.set_struct(cfg, False)
    # a stand-in for the agent's inline backend; builtins.dict records its arguments
    cfg.agent.backend = {"_target_": "builtins.dict", "model": None, "adapter": None}
    agent = build_agent(cfg)
    assert agent.backend == {"model": "m", "adapter": str(tmp_path)}


@pytest.mark.browser
def test_embedded_policy_loads_and_acts(tmp_path):
    cfg = compose_config(
        "run", "agent=tiny", "env=miniwob.click-test", "max_steps=4", "seed=1000", "record=false"
    )
    summary = run(cfg, verbose=False)
    assert summary["steps"] >= 1
    verbs = {"CLICK", "TYPE", "PRESS_ENTER", "SCROLL", "WAIT", "NAVIGATE", "FINISH"}
    assert all(a["action"] in verbs for a in summary["actions"])
    # Success is not asserted: the tiny policy keys partly on the local server's
    # port (see docs/learners.md), which differs per process; its success rates
    # are measured by benchmarks.run and recorded in training.json.
