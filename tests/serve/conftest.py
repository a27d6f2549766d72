"""Fixtures of the fast tier: the FastAPI app over a TrainingService with a fake backend."""

from __future__ import annotations

import os

import pytest
from _serve_helpers import TOKEN, FakeBackend, write_click_episode

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture
def make_service(tmp_path):
    """``make_service(**settings) -> (service, backend)`` on ``tmp_path/state``."""
    from serve.config import from_mapping
    from serve.service import TrainingService

    made = []

    def make(backend: FakeBackend | None = None, **settings):
        settings.setdefault("state_dir", str(tmp_path / "state"))
        backend = backend or FakeBackend()
        service = TrainingService(from_mapping(settings), backend)
        made.append(service)
        return service, backend

    yield make
    for service in made:
        service.close()


@pytest.fixture
def api(make_service):
    """``(TestClient, service, backend)`` with the default limits, authenticated by TOKEN."""
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, backend = make_service()
    app = create_app(service, TOKEN, max_upload_bytes=service.cfg.max_upload_bytes)
    with TestClient(app) as client:
        yield client, service, backend


@pytest.fixture(scope="session")
def episodes(tmp_path_factory):
    """A run dir holding three solved click episodes."""
    root = tmp_path_factory.mktemp("episodes")
    for seed, target in enumerate(["ONE", "TWO", "THREE"]):
        write_click_episode(root, seed, target)
    return root
