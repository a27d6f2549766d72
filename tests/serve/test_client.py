"""The client and the job entrypoint against the fast-tier app (no Ray)."""

from __future__ import annotations

import json
import subprocess
import sys

from _serve_helpers import TOKEN


def _finish(service, backend, job_id):
    adapter = service.store.job_dir(job_id) / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "training.json").write_text(json.dumps({"metrics": {"loss": 0.5}}))
    (service.store.job_dir(job_id) / "job.log").write_text("sft: 100%|##| 2/2 [00:01<00:00]\n")
    (service.store.job_dir(job_id) / "result.json").write_text('{"status": "succeeded"}')
    backend.states[job_id] = "SUCCEEDED"
    service.tick()


def test_client_uploads_trains_follows_and_downloads(api, episodes, tmp_path, monkeypatch, capsys):
    client_app, service, backend = api
    import serve.client
    from serve.client import TrainingClient, main

    class Client(TrainingClient):
        def __init__(self, url, token=None, **kwargs):
            client_app.headers.pop("Authorization", None)
            super().__init__(url, token, http=client_app, **kwargs)

        def close(self):  # the fixture closes the TestClient
            pass

    monkeypatch.setattr(serve.client, "TrainingClient", Client)
    with Client("http://testserver", TOKEN) as client:
        manifest = client.upload(episodes)
        assert manifest["episodes"] == 3 and client.upload(episodes) == manifest
        job = client.train("sft", [manifest["dataset_id"]], {"max_steps": 2})
        assert (
            client.train("sft", [manifest["dataset_id"]], {"max_steps": 2})["job_id"]
            != (job["job_id"])
        )  # a fresh idempotency key per call
        _finish(service, backend, job["job_id"])
        done = client.follow(job["job_id"], poll=0.01, progress=False)
        assert done["status"] == "succeeded" and done["metrics"] == {"loss": 0.5}
        assert done["progress"] == {"step": 2, "total": 2}
        target = client.download(job["job_id"], tmp_path / "adapter")
        assert sorted(p.name for p in target.iterdir()) == ["adapter_config.json", "training.json"]

    monkeypatch.setenv("BROWSER_RL_SERVE_TOKEN", TOKEN)
    assert main(["--url", "http://testserver", "status", job["job_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    assert main(["--url", "http://testserver", "cancel", job["job_id"]]) == 1  # finished: 409
    assert "409" in capsys.readouterr().err
    monkeypatch.setenv("BROWSER_RL_SERVE_TOKEN", "x" * 40)
    assert main(["--url", "http://testserver", "status"]) == 1
    assert "401" in capsys.readouterr().err


def test_job_entry_writes_pid_log_and_a_failed_result(tmp_path):
    from serve.store import write_json

    write_json(
        tmp_path / "spec.json",
        {"job_id": "job-x", "learner": "sft", "config": {"demo_fraction": 5.0}},
    )
    done = subprocess.run(
        [sys.executable, "-m", "serve.job_entry", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and "demo_fraction" in result["error"]
    assert int((tmp_path / "pid").read_text()) > 0
    assert "demo_fraction" in (tmp_path / "job.log").read_text()
    assert "logging to" in done.stdout  # Ray's own log says where the real one is


def _adapter_archive(weights: bytes) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("adapter_config.json", b'{"r": 8}'), ("adapter.safetensors", weights)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _serving(body: bytes):
    import httpx

    from serve.client import TrainingClient

    def handler(request):
        return httpx.Response(200, content=body, headers={"content-type": "application/gzip"})

    http = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    return TrainingClient(http=http, token="x")


def test_a_cut_download_leaves_dest_as_it_was(tmp_path):
    import os

    import pytest

    from serve.client import ClientError

    whole = _adapter_archive(os.urandom(1 << 20))
    cut = whole[: len(whole) * 2 // 3]  # the connection dropped two thirds in
    dest = tmp_path / "adapter"
    dest.mkdir()
    old = {"adapter_config.json": b'{"r": 4}', "adapter.safetensors": b"OLD" * 1000}
    for name, data in old.items():
        (dest / name).write_bytes(data)
    with pytest.raises(ClientError) as caught:
        _serving(cut).download("job-1", dest)
    assert caught.value.status == 502 and "job-1" in caught.value.detail
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    with pytest.raises(ClientError):
        _serving(cut).download("job-1", tmp_path / "new" / "adapter")
    assert not (tmp_path / "new" / "adapter").exists()
    assert list((tmp_path / "new").iterdir()) == []


def test_a_download_replaces_an_existing_adapter_only_when_complete(tmp_path):
    import os

    weights = os.urandom(1 << 16)
    dest = tmp_path / "adapter"
    dest.mkdir()
    (dest / "adapter.safetensors").write_bytes(b"OLD")
    (dest / "notes.txt").write_text("mine")
    assert _serving(_adapter_archive(weights)).download("job-1", dest) == dest
    assert (dest / "adapter.safetensors").read_bytes() == weights
    assert (dest / "adapter_config.json").read_bytes() == b'{"r": 8}'
    assert (dest / "notes.txt").read_text() == "mine"  # a file the adapter lacks stays
    assert sorted(p.name for p in dest.iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
        "notes.txt",
    ]
    fresh = tmp_path / "fresh" / "adapter"
    _serving(_adapter_archive(weights)).download("job-1", fresh)
    assert sorted(p.name for p in fresh.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["adapter"]
