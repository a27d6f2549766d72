"""``--help`` of the Hydra command lines (:mod:`browser_env.cli_help`): the
command's own groups and each key with its value and help text."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from browser_env import cli_help
from browser_env.cli_help import help_field, render

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class _Inner:
    depth: int = help_field(2, "How deep.")


@dataclasses.dataclass
class _Base:
    inherited: str = help_field("x", "A field every command has.")


@dataclasses.dataclass
class _App(_Base):
    episodes: int = help_field(3, "Episodes per task, costing $5 each.")
    name: str = help_field("", "A name.")
    tags: list[str] = help_field(["a", "é"], "Tags.")
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    agent: Any = help_field(None, "The policy (a group).")
    unset: str = help_field("???", "Must be set.")


def _cfg(**choices: Any):
    cfg = OmegaConf.structured(_App)
    cfg.agent = {"_target_": "my.Agent", "temperature": 0.5, "sampling": {"top_p": 1.0}}
    with open_dict(cfg):  # as Hydra's composed config: the app's keys beside hydra's
        cfg.hydra = {"runtime": {"choices": choices}}
    return cfg


def test_keys_show_this_commands_values_and_their_help_own_fields_first():
    text = render(_cfg())
    lines = text.splitlines()
    assert lines[0] == "== Keys (key=value; the values shown are this command's) =="
    keys = [line for line in lines if "=" in line and not line.startswith(("    ", "=="))]
    assert keys == [
        "episodes=3",
        'name=""',
        "tags=[a, é]",  # as typed, not escaped
        "inner.depth=2",  # a nested structured config, flattened
        "agent=<my.Agent>",
        "  agent.temperature=0.5",  # a group's object: its keys, nested dicts flattened
        "  agent.sampling.top_p=1.0",
        "unset=???",
        "inherited=x",  # inherited fields after the command's own
    ]
    assert lines[lines.index("episodes=3") + 1] == "    Episodes per task, costing $5 each."
    assert lines[lines.index("inner.depth=2") + 1] == "    How deep."


def test_groups_list_options_and_the_choice_less_hydras_and_the_fixed_ones(monkeypatch):
    options = {"agent": ["expert", "random"], "learner": ["sft", "grpo"], "online": ["sdft"]}
    monkeypatch.setattr(cli_help, "_options", lambda group: options.get(group, []))
    choices = {"agent": "random", "learner": "sft", "online": None, "hydra/help": "browser_rl"}
    text = render(_cfg(**choices), fixed=("learner",))
    head = text.split("\n\n")[0].splitlines()
    assert head == [
        "== Config groups (group=option; * marks this command's choice) ==",
        "agent: expert, *random*",
        "online: sdft, *null*",
    ]


def test_the_resolver_escapes_dollars_for_hydras_template():
    """Hydra fills the help template with ``string.Template``: a ``$`` in a help
    text must reach it as ``$$`` or ``--help`` fails (or eats the text)."""
    cli_help.register()
    cli_help.register()  # idempotent
    resolved = cli_help._resolve(_root_=_cfg())
    assert "$$5" in resolved
    assert "costing $5 each" in string.Template(resolved).substitute()


def test_help_of_a_real_command_line_lists_its_groups_and_keys_only():
    from _commands import python_m

    out = python_m("agents.run", "agent=tiny", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("python -m agents.run: its config groups and keys.")
    assert "agent: expert, llm, random, *tiny*" in out.stdout
    assert "learner:" not in out.stdout and "suite:" not in out.stdout  # not agents.run's
    lines = out.stdout.splitlines()
    assert lines[lines.index("max_steps=15") + 1] == "    Steps per episode at most."
    assert "  agent.sampling.max_new_tokens=40" in lines


def test_a_plain_root_lists_its_keys_and_what_a_shortcut_sets():
    """A root with no dataclass behind it (``python -m learners.sft``): its plain
    keys, a key named like a field of a structured node saying it sets that."""
    assert render(OmegaConf.create({"x": 1})).splitlines()[1:] == ["x=1"]
    cfg = OmegaConf.create({"episodes": None, "other": 2})
    cfg.app = OmegaConf.structured(_App)
    lines = render(cfg).splitlines()
    assert lines[1:5] == [
        "episodes=null",
        "    When set, sets app.episodes (and wins over it).",
        "other=2",
        "app.episodes=3",
    ]
