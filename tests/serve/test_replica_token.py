"""The replica's token comes from ``build``'s argument, not from its environment.

``python -m serve`` keeps the token out of the environment Ray starts with
(``tests/serve/test_ray_start_stop.py``); the Serve application it deploys
hands it to the replica's constructor instead. Without one (``serve run``,
``serve deploy``) the replica reads it on its node as before.
"""

from __future__ import annotations

import json

import pytest
from _serve_helpers import AUTH, TOKEN, FakeBackend

pytest.importorskip("ray.serve")


@pytest.fixture
def fake_ray_jobs(monkeypatch):
    """RayJobBackend replaced by the fake one; the closing of each service made."""
    import serve.backend

    monkeypatch.setattr(serve.backend, "RayJobBackend", lambda *a, **k: FakeBackend())
    services = []
    yield services
    for service in services:
        service.close()


def test_the_replica_authenticates_with_the_token_build_hands_it(
    tmp_path, monkeypatch, fake_ray_jobs
):
    from fastapi.testclient import TestClient

    from serve.deployment import build, replica_app

    monkeypatch.delenv("BROWSER_RL_SERVE_TOKEN", raising=False)
    application = build({"state_dir": str(tmp_path / "state")}, TOKEN)
    # what Serve keeps and calls the replica's constructor with
    settings, token = application._bound_deployment.init_args
    assert TOKEN not in json.dumps(settings)
    service, app = replica_app(settings, token)
    fake_ray_jobs.append(service)
    with TestClient(app) as client:
        assert client.get("/v1/jobs").status_code == 401
        assert client.get("/v1/jobs", headers=AUTH).status_code == 200


def test_without_a_token_handed_over_the_replica_reads_its_node(
    tmp_path, monkeypatch, fake_ray_jobs
):
    from fastapi.testclient import TestClient

    from serve.deployment import build, replica_app

    monkeypatch.setenv("BROWSER_RL_SERVE_TOKEN", TOKEN)
    application = build({"state_dir": str(tmp_path / "state")})
    [settings] = application._bound_deployment.init_args
    service, app = replica_app(settings)
    fake_ray_jobs.append(service)
    with TestClient(app) as client:
        assert client.get("/v1/jobs", headers=AUTH).status_code == 200
    monkeypatch.delenv("BROWSER_RL_SERVE_TOKEN")
    with pytest.raises(ValueError, match="no token"):
        replica_app(settings)
