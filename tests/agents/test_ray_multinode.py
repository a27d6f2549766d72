"""runner=ray on a two-node Ray cluster (Ray's own test utility, both nodes on
127.0.0.1), joined through RAY_ADDRESS as a real cluster would be."""

from __future__ import annotations

import pytest

import browser_env  # noqa: F401 - registers the ids
from agents.experts.expert import ScriptedExpert
from agents.runners import Job, RolloutSpec, run_rollouts

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.exhaustive]

SPEC = RolloutSpec(env_kwargs={"modalities": ("elements", "text")}, max_steps=5)
JOBS = [
    Job(f"browser_env/miniwob.{task}-v0", seed)
    for task in ("click-button", "click-test")
    for seed in (0, 1)
]


def _two_nodes(monkeypatch, **second):
    """A head and a second node on 127.0.0.1, one CPU each (``second``: more of
    the second node's resources), joined through ``RAY_ADDRESS``."""
    import os
    import tempfile

    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("a Ray is already initialised in this process; the test needs its own")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: socket paths are capped
    # Ray's test cluster writes its address to $RAY_TMPDIR/ray/ray_current_cluster
    # (default /tmp/ray, which need not exist): keep it in this test's dir.
    os.makedirs(os.path.join(temp, "ray"))
    monkeypatch.setenv("RAY_TMPDIR", temp)
    loopback = {"num_cpus": 1, "num_gpus": 0, "node_ip_address": "127.0.0.1", "temp_dir": temp}
    cluster = Cluster(initialize_head=True, head_node_args={**loopback, "include_dashboard": False})
    try:
        cluster.add_node(**{**loopback, **second})
        cluster.wait_for_nodes()
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture()
def two_nodes(monkeypatch):
    yield from _two_nodes(monkeypatch)


@pytest.fixture()
def a_gpu_node(monkeypatch):
    """The second node says it has one GPU (Ray takes a node's word for it)."""
    yield from _two_nodes(monkeypatch, num_gpus=1)


def test_actors_spread_over_the_nodes_and_the_table_equals_local(two_nodes, tmp_path):
    import dataclasses
    from pathlib import Path

    import ray

    from agents.runners.ray_runner import RayRunner
    from browser_env.episodes.loader import load_episode

    local = run_rollouts(JOBS, SPEC, agent=ScriptedExpert(), runner="local")
    spec = dataclasses.replace(SPEC, record_dir=str(tmp_path / "episodes"))
    runner = RayRunner(spec, ScriptedExpert, workers=2)
    try:
        assert ray.get_runtime_context().gcs_address == two_nodes.address  # joined, not embedded
        nodes = ray.get([actor.node_id.remote() for actor in runner.actors])
        assert len(set(nodes)) == 2  # one CPU a node: each actor on its own node
        # the actor on the driver's node records in place, the other sends its episodes back
        roots = ray.get(
            [actor.__ray_call__.remote(lambda w: w.ship_root) for actor in runner.actors]
        )
        assert sorted(root is None for root in roots) == [False, True]
        remote = runner.run(JOBS)
    finally:
        runner.close()
    key = sorted((r.env_id, r.seed, r.success, r.steps, r.actions) for r in local)
    assert sorted((r.env_id, r.seed, r.success, r.steps, r.actions) for r in remote) == key
    assert all(r.status == "ok" for r in remote)
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == sorted(
        Path(r.episode_dir).name for r in remote
    )
    assert all(load_episode(r.episode_dir).complete for r in remote)


def test_gpus_per_worker_places_actors_on_the_gpu_node_and_gives_them_the_gpu(a_gpu_node):
    import pytest
    import ray

    from agents.runners.ray_runner import RayRunner

    # half a GPU each: both actors share the (declared) GPU of the second node
    runner = RayRunner(SPEC, ScriptedExpert, workers=2, cpus_per_worker=0, gpus_per_worker=0.5)
    try:
        gpu_node = next(n["NodeID"] for n in ray.nodes() if n["Resources"].get("GPU"))
        assert ray.get([a.node_id.remote() for a in runner.actors]) == [gpu_node, gpu_node]
        assert [
            list(map(str, ids)) for ids in ray.get([a.gpu_ids.remote() for a in runner.actors])
        ] == [["0"], ["0"]]
        remote = runner.run(JOBS)
    finally:
        runner.close()
    assert all(r.status == "ok" and r.success for r in remote)
    # a cluster joined through RAY_ADDRESS may grow: a warning, not an error
    with pytest.warns(UserWarning, match=r"largest Ray node has 1 GPU\(s\).*cluster to grow"):
        waiting = RayRunner(SPEC, ScriptedExpert, workers=1, gpus_per_worker=2)
    waiting.close()  # its actor never started: closed at once
