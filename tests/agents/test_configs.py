"""Compose every conf/agent/*.yaml through conf/run.yaml and instantiate it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agents.agent import Agent, LLMAgent, PromptConfig
from agents.backends.base import SamplingParams
from agents.guards import GuardConfig
from agents.random_agent import RandomAgent
from agents.run import build_agent

CONF = Path(__file__).resolve().parents[2] / "conf"
AGENTS = sorted(p.stem for p in (CONF / "agent").glob("*.yaml"))


def compose_run(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="run", overrides=list(overrides))


def test_agent_group_lists_the_baselines():
    assert {"random", "llm"} <= set(AGENTS)


@pytest.mark.parametrize("name", AGENTS)
def test_every_agent_config_instantiates(name, scripted_backend):
    cfg = compose_run(f"agent={name}")
    assert cfg.agent._target_
    kwargs = {"backend": scripted_backend()} if "backend" in cfg.agent else {}
    agent = instantiate(cfg.agent, **kwargs)
    assert isinstance(agent, Agent)


def test_llm_config_builds_typed_parts(scripted_backend):
    cfg = compose_run(
        "agent=llm",
        "agent.prompt.budget_tokens=512",
        "agent.guards.max_waits=0",
        "agent.sampling.stop=[END]",
    )
    agent = instantiate(cfg.agent, backend=scripted_backend())
    assert isinstance(agent, LLMAgent)
    assert agent.prompt_config == PromptConfig(budget_tokens=512)
    assert agent.guards.config == GuardConfig(max_waits=0)
    assert agent.sampling == SamplingParams(stop=("END",))


def test_llm_backend_comes_from_the_backend_group():
    cfg = compose_run("agent=llm", "model=my-model", "adapter=/tmp/lora")
    OmegaConf.set_struct(cfg, False)
    # a stand-in backend node; builtins.dict records the arguments it was built with
    cfg.backend = {"_target_": "builtins.dict", "model": None, "adapter": None}
    agent = build_agent(cfg)
    assert agent.backend == {"model": "my-model", "adapter": "/tmp/lora"}


def test_adapter_needs_a_backend_that_takes_one():
    cfg = compose_run("agent=llm", "adapter=/tmp/lora")
    OmegaConf.set_struct(cfg, False)
    cfg.backend = {"_target_": "agents.backends.openai.OpenAIBackend", "model": "m"}
    with pytest.raises(ValueError, match="adapter"):
        build_agent(cfg)


def test_run_defaults():
    cfg = compose_run()
    assert cfg.agent._target_ == "agents.random_agent.RandomAgent"
    assert cfg.max_steps == 15 and cfg.headless is True
    assert isinstance(build_agent(cfg), RandomAgent)


def test_tiny_is_an_llm_agent_with_only_its_overrides():
    tiny, llm = compose_run("agent=tiny").agent, compose_run("agent=llm").agent
    assert tiny._target_ == llm._target_ and tiny.guards == llm.guards
    assert tiny.max_parse_failures == llm.max_parse_failures
    assert {k: v for k, v in tiny.prompt.items() if k != "use_screenshot"} == {
        k: v for k, v in llm.prompt.items() if k != "use_screenshot"
    }
    assert tiny.prompt.use_screenshot is False and tiny.sampling.max_new_tokens == 40
    assert tiny.backend._target_ == "agents.backends.transformers.TransformersBackend"


def test_every_app_names_its_own_command_in_its_help():
    """``--help``'s first line is Hydra's ``<app_name> is powered by Hydra``;
    without ``hydra.help.app_name`` it named the calling file (``__main__``,
    ``cli``, ``run`` for two apps). Each top-level config names the module
    whose ``@hydra.main`` loads it."""
    import importlib.util
    import re

    import yaml

    apps = sorted(CONF.glob("*.yaml"))
    assert len(apps) >= 12
    for path in apps:
        app_name = yaml.safe_load(path.read_text())["hydra"]["help"]["app_name"]
        module = re.fullmatch(r"python -m ([\w.]+)", app_name).group(1)
        spec = importlib.util.find_spec(module)
        origin = Path(spec.origin)  # a package (python -m serve): its own modules
        files = sorted(origin.parent.glob("*.py")) if spec.submodule_search_locations else [origin]
        loads = [f.name for f in files if f'config_name="{path.stem}"' in f.read_text()]
        assert loads, (path.name, module)
