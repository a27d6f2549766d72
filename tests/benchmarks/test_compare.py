"""benchmarks.compare: statistics, labels, the command line, and, end to end,
two real runs merged into one report whose links open the viewer's pages,
with the benchmark run's wandb log read back from its offline directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
from hydra import compose, initialize_config_dir

from agents.rollout import EpisodeResult, token_usage
from benchmarks.compare import (
    Cell,
    compare,
    find_runs,
    load_runs,
    plain_dirs_to_overrides,
    wilson,
)
from benchmarks.report import write_results

ROOT = Path(__file__).resolve().parents[2]
CONF = str(ROOT / "conf")


def _episode(env_id: str, success: bool, steps: int = 2, tokens: int = 10) -> EpisodeResult:
    return EpisodeResult(
        env_id, 0, "g", success, 1.0 if success else -1.0, steps, True, False, None, 0,
        [20.0] * steps, [5.0] * steps, 30.0, prompt_tokens=tokens, completion_tokens=tokens,
    )  # fmt: skip


def _fake_run(path: Path, agent: str, wins: list[bool], overrides: list[str] | None = None) -> Path:
    episodes = [_episode("browser_env/miniwob.a-v0", w) for w in wins]
    episodes.append(_episode("browser_env/miniwob.b-v0", True, steps=4))
    write_results(path / "results.json", episodes, suite="s", agent=agent)
    if overrides is not None:
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return path


def test_wilson_interval():
    low, high = wilson(0, 5)
    assert low == 0.0 and 0.4 < high < 0.5  # not empty at 0/n, unlike the normal approximation
    low, high = wilson(5, 5)
    assert 0.5 < low < 0.6 and high == 1.0
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_cell_statistics_and_legacy_results_without_tokens():
    eps = [_episode("x", True, 2).to_dict(), _episode("x", False, 4).to_dict()]
    cell = Cell.of(eps)
    assert cell.success_rate == 0.5 and cell.mean_steps == 3.0
    assert cell.tokens == 20.0 and cell.agent_ms == 5.0 and cell.env_ms == 20.0
    for e in eps:
        del e["prompt_tokens"], e["completion_tokens"]
    assert Cell.of(eps).tokens is None


def test_token_usage_reads_each_backend_shape():
    assert token_usage({}) == (0, 0)  # random / expert agents: no model
    local = {
        "generation": {"token_ids": [1, 2], "info": {"prompt_tokens": 7, "completion_tokens": 2}}
    }
    assert token_usage(local) == (7, 2)
    server = {
        "generation": {
            "token_ids": [],
            "info": {"usage": {"prompt_tokens": 9, "completion_tokens": 3}},
        }
    }
    assert token_usage(server) == (9, 3)
    assert token_usage({"generation": {"token_ids": [5, 6, 7], "info": {}}}) == (0, 3)


def test_runs_of_a_sweep_are_found_in_order_and_labelled_by_differing_overrides(tmp_path):
    sweep = tmp_path / "sweep"
    for i, agent in enumerate(["random", "expert", "tiny", "a", "b", "c", "d", "e", "f", "g", "h"]):
        _fake_run(sweep / str(i), agent, [i % 2 == 0], [f"agent={agent}", "suite=s"])
    runs = load_runs([sweep])
    assert [r.path.name for r in runs] == [str(i) for i in range(11)]  # 10 after 9, not after 1
    assert runs[0].label == "agent=random" and runs[1].label == "agent=expert"
    # without Hydra's record: agent / suite, made distinct by the dir name
    _fake_run(tmp_path / "x", "random", [True])
    _fake_run(tmp_path / "y", "random", [False])
    assert [r.label for r in load_runs([tmp_path / "x", tmp_path / "y"])] == [
        "random / s (x)",
        "random / s (y)",
    ]


def test_runs_are_labelled_by_the_overrides_their_results_record(tmp_path):
    """A ``--multirun`` job with ``output_dir=runs/${hydra:job.num}`` has no
    ``.hydra/`` in its run dir: its ``results.json`` records its overrides, which
    label it (also over a ``.hydra/`` left by another command), and options that
    do not change what was measured are left out of labels."""
    common = ["suite=miniwob_tiny", "output_dir=runs/${hydra:job.num}", "progress=false"]
    for n, extra in enumerate(
        (["agent=random", "episodes=30"], ["agent=random", "episodes=30", "resume=true"],
         ["agent=expert", "episodes=30", "wandb=false", "+hydra.job.chdir=false"])
    ):  # fmt: skip
        run = _fake_run(tmp_path / "runs" / str(n), "x", [True], ["agent=stale"])
        data = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**data, "overrides": [*extra, *common]}))
    labels = [r.label for r in load_runs([tmp_path / "runs"])]
    assert labels == ["agent=random (0)", "agent=random (1)", "agent=expert"]


def test_bad_inputs_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        find_runs([tmp_path / "missing"])
    with pytest.raises(ValueError, match="no results.json"):
        find_runs([tmp_path])
    with pytest.raises(ValueError, match="no runs"):
        compare([], tmp_path)


def test_plain_arguments_become_the_runs_override():
    argv = ["a/b", "--multirun", "view=false", "-cn", "compare", "dir with 'quote'"]
    assert plain_dirs_to_overrides(argv) == [
        "--multirun",
        "-cn",
        "compare",
        "view=false",
        "runs=['a/b','dir with \\'quote\\'']",
    ]


def test_plain_dirs_and_overrides_around_a_flag_reach_hydra_together(tmp_path):
    """``compare DIR view=false --cfg job``: a flag between the overrides would
    split Hydra's positional overrides (argparse: unrecognized arguments)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", str(tmp_path), "view=false", "--cfg", "job"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "view: false" in out.stdout and str(tmp_path) in out.stdout


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="compare", overrides=list(overrides))


def test_the_config_keeps_its_defaults_and_takes_plain_dirs():
    """``conf/compare.yaml`` over :class:`CompareConfig` composes to what the YAML
    held before (``--cfg job``), every key with its help; plain dirs land in ``runs``."""
    import dataclasses

    from omegaconf import OmegaConf

    from benchmarks.compare import CompareConfig

    assert OmegaConf.to_container(_compose()) == {"runs": [], "view": True, "output_dir": None}
    assert all(f.metadata.get("help") for f in dataclasses.fields(CompareConfig))
    cfg = _compose(*plain_dirs_to_overrides(["a", "dir b", "view=false"]))
    assert list(cfg.runs) == ["a", "dir b"] and cfg.view is False


@pytest.mark.parametrize(
    ("override", "key"),
    [("view=maybe", "view"), ("runs=abc", "runs"), ("veiw=false", "veiw")],
)
def test_a_value_of_the_wrong_kind_or_a_misspelt_key_is_hydras_error_naming_it(override, key):
    """Hydra refuses it while it composes the config, before any run is read."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as raised:
        _compose(override)
    assert f"full_key: {key}" in str(raised.value.__cause__)


def test_command_line_takes_plain_dirs(tmp_path):
    _fake_run(tmp_path / "r1", "random", [True, False])
    _fake_run(tmp_path / "r2", "expert", [True, True])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", str(tmp_path / "r1"), str(tmp_path / "r2"), f"output_dir={out}"],
        capture_output=True, text=True, cwd=ROOT, env=os.environ, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "success [95% CI]" in proc.stdout and "50% [9%-91%]" in proc.stdout
    data = json.loads((out / "compare.json").read_text())
    assert [r["agent"] for r in data["runs"]] == ["random", "expert"]
    assert data["runs"][1]["tasks"]["miniwob.a"]["successes"] == 2
    assert (out / "tasks.png").stat().st_size > 5000 and (out / "cost.png").stat().st_size > 5000
    # output_dir= is Hydra's run dir too: its config and log go with the results, not under outputs/
    assert (out / ".hydra" / "config.yaml").exists() and (out / "compare.log").exists()


@pytest.mark.browser
def test_two_real_runs_compared_with_links_to_episodes_and_wandb_logged(tmp_path):
    from benchmarks.run import run
    from benchmarks.tracking import read_offline_run

    dirs = {}
    for agent in ("random", "expert"):
        dirs[agent] = tmp_path / agent
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(
                config_name="benchmark",
                overrides=[
                    f"agent={agent}",
                    "suite=miniwob_smoke",
                    "suite.tasks=[click-test]",
                    "episodes=2",
                    "progress=false",
                    f"wandb={agent == 'expert'}",
                    f"output_dir={dirs[agent]}",
                ],
            )
        run(cfg)
    assert not (dirs["random"] / "wandb").exists()
    logged = read_offline_run(dirs["expert"] / "wandb")
    assert logged["config"]["agent_name"] == "expert" and logged["config"]["episodes"] == 2
    rows = [h for h in logged["history"] if "episode/success" in h]
    assert [r["episode/success"] for r in rows] == [1.0, 1.0] and [r["_step"] for r in rows] == [
        0,
        1,
    ]
    assert all(r["episode/steps"] >= 1 for r in rows)
    assert logged["summary"]["success_rate"] == 1.0
    assert logged["summary"]["task/miniwob.click-test/success_rate"] == 1.0

    out = tmp_path / "cmp"
    data = compare([dirs["random"], dirs["expert"]], out)
    assert [r["overall"]["episodes"] for r in data["runs"]] == [2, 2]
    assert data["runs"][1]["overall"]["success_rate"] == 1.0
    page = (out / "report.html").read_text()
    links = [unquote(h) for h in re.findall(r"href='([^']+)'", page)]
    episode_pages = [h for h in links if h.endswith("/report.html")]
    # every episode of both runs is linked twice (run row and task row), and the pages exist
    assert len(episode_pages) == 2 * 4 and all((out / h).resolve().is_file() for h in links)
    assert any(h.endswith("expert/episodes/index.html") for h in links)
    assert "Content-Security-Policy" in page and "<script" not in page
