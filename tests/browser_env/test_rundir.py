"""run_dir: Hydra's run directory inside a job, the given default outside one."""

from __future__ import annotations

from pathlib import Path

from browser_env.rundir import run_dir

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_outside_a_hydra_job_the_default():
    assert run_dir() == Path("outputs")
    assert run_dir(Path("outputs") / "benchmarks") == Path("outputs/benchmarks")


def test_inside_a_hydra_job_its_run_dir(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name="record", return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    try:
        assert run_dir("outputs") == tmp_path
    finally:
        HydraConfig.instance().cfg = None
    assert run_dir() == Path("outputs")
