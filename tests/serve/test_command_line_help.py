"""Every Hydra command line's ``--help`` (:mod:`browser_env.cli_help`): its
own config groups only, and every key of its config dataclasses with help
text. Composed in process, as each command's ``main`` composes it."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"

#: config name -> (module with the register function, its name, the groups --help lists)
APPS = {
    "run": ("agents.run_config", "register_config", {"agent", "backend", "online"}),
    "benchmark": ("benchmarks.config", "register_config", {"agent", "backend", "suite"}),
    "compare": ("benchmarks.compare", "register_config", set()),
    "learner_speed": ("benchmarks.learner_speed", "register_config", set()),
    "record": ("browser_env.record", "register_config", set()),
    "serve": ("serve.__main__", "register_config", set()),
    "openai_server": ("serve.openai_server.cli", "register_config", {"backend"}),
    "sft": ("learners.config", "register_configs", set()),  # learner: fixed by the command
    "sdft": ("learners.config", "register_configs", set()),
    "grpo": ("learners.config", "register_configs", set()),
    "demo": ("learners.demo", "register_config", set()),
    "study": ("learners.study", "register_config", set()),
}


def test_every_app_config_is_in_the_table():
    apps = {p.stem for p in CONF.glob("*.yaml")}
    assert apps == set(APPS)


@pytest.mark.parametrize("name", sorted(APPS))
def test_help_lists_the_commands_groups_and_every_key_with_its_help(name):
    module, register, groups = APPS[name]
    getattr(importlib.import_module(module), register)()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, return_hydra_config=True)
        text = cfg.hydra.help.template  # resolved as --help resolves it
    assert text.startswith(f"{cfg.hydra.help.app_name}: its config groups and keys.")
    listed = {
        line.split(":")[0]
        for line in text.split("== Keys")[0].splitlines()
        if line and not line.startswith(("==", "python -m", "--cfg"))
    }
    assert listed == groups
    lines = text.split("== Keys", 1)[1].splitlines()[1:]
    keys = [line for line in lines if "=" in line and not line.startswith((" ", "=="))]
    assert keys, text
    for key in keys:  # every field of the command's dataclasses has its help under it
        following = lines[lines.index(key) + 1]
        assert following.startswith("    ") and following.strip(), (name, key)
    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):  # each field is listed (learners: under learner.)
        for field in dataclasses.fields(schema):
            assert any(k.split("=")[0].split(".")[0] == field.name for k in keys), field.name
