"""RayVectorEnv on an embedded local Ray: what a failed construction leaves behind."""

from __future__ import annotations

import os
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_cluster():
    from browser_env.ray_local import init_ray, shutdown_ray

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("RAY_ADDRESS is set: another cluster's actors would hold its CPUs too")
    started = init_ray(num_cpus=2, num_gpus=0)
    yield
    if started:
        shutdown_ray()


def test_an_init_that_fails_after_its_actors_were_made_leaves_none_alive(ray_cluster):
    """An unknown ``autoreset_mode`` is refused by ``SyncVectorEnv.__init__``,
    after the actors (and their browsers) were made: they must be closed and
    killed, or each would hold its CPU, and its browser, for good."""
    import ray

    from browser_env.ray_vector import RayVectorEnv

    with pytest.raises(ValueError, match="AutoresetMode") as raised:
        RayVectorEnv(
            "browser_env/open-v0", num_envs=2, num_cpus=1, autoreset_mode="bogus", start_ray=False
        )
    # (``raised`` keeps the half-made env, and so its actor handles, referenced,
    # as a caller that keeps the exception does)
    total = ray.cluster_resources()["CPU"]
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0.0) == total, "an actor still holds its CPU"
    assert raised.value is not None
