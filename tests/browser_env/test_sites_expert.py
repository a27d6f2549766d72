"""The scripted site experts: the sites_smoke check in the default tier, and
the >= 95% sweep over every template and several seeds behind ``exhaustive``."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
from hydra import compose, initialize_config_dir

import browser_env  # noqa: F401 - registers the ids
from agents.experts import ScriptedExpert, UnsupportedTaskError
from agents.experts.sites import SITE_POLICIES, site_task
from agents.rollout import rollout
from browser_env.tasks.sites import site_task_names

CONF = str(Path(__file__).resolve().parents[2] / "conf")
SWEEP_SEEDS = range(100, 105)  # not the smoke suite's seed 0


def test_every_template_has_an_expert_that_its_goals_dispatch_to():
    import random

    from browser_env.tasks.sites import SITES

    assert sorted(SITE_POLICIES) == [f"sites.{name}" for name in site_task_names()]
    for name in site_task_names():
        site_name, template = name.split(".", 1)
        site = SITES[site_name]
        for seed in range(5):
            rng = random.Random(seed)
            goal = site.templates[template](rng, site.build(rng)).text
            assert site_task(f"http://127.0.0.1:1/{site_name}/", goal) == f"sites.{name}", goal
    assert site_task("http://127.0.0.1:1/miniwob/click-test.html", "Buy 2 of x") == ""


def test_expert_can_be_pinned_to_a_site_template():
    assert ScriptedExpert(task="sites.shop.buy-named").task == "sites.shop.buy-named"
    with pytest.raises(UnsupportedTaskError, match="no scripted expert"):
        ScriptedExpert(task="sites.shop.no-such-template")


@pytest.mark.browser
def test_expert_passes_sites_smoke_through_benchmarks_run(tmp_path, capsys):
    """`python -m benchmarks.run suite=sites_smoke agent=expert`, one seed per
    template, the five as contexts of one browser (runner=vector: ~12 s here
    against ~17 s for one browser each, one after another)."""
    from benchmarks.run import run

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="benchmark",
            overrides=[
                "suite=sites_smoke",
                "agent=expert",
                "episodes=1",
                "record=false",
                "modalities=[elements,text]",
                "progress=false",
                "wandb=false",
                "runner=vector",
                "workers=5",
                f"output_dir={tmp_path}",
            ],
        )
    run(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["tasks"]) == 5
    for task in saved["tasks"]:
        assert task["success_rate"] == 1.0, task
        assert task["mean_steps"] >= 4, task
    assert "sites.shop.add-to-cart" in capsys.readouterr().out


@pytest.mark.exhaustive
@pytest.mark.browser
@pytest.mark.parametrize("name", site_task_names())
def test_expert_sweep_every_template(name):
    env = gym.make(f"browser_env/sites.{name}-v0", modalities=("elements", "text"))
    agent = ScriptedExpert()
    try:
        results = [rollout(env, agent, seed) for seed in SWEEP_SEEDS]
    finally:
        env.close()
    success = sum(r.success for r in results) / len(results)
    steps = sum(r.steps for r in results) / len(results)
    assert success >= 0.95, [(r.seed, r.goal) for r in results if not r.success]
    assert steps >= 4
