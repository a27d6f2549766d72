"""The HTTP surface over a fake backend: auth, empty store, 404s, downloads, light import."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from _serve_helpers import AUTH, TOKEN, tar_dir

REPO = Path(__file__).resolve().parents[2]

ROUTES = [
    ("GET", "/v1/datasets"),
    ("PUT", "/v1/datasets"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/job-00000000000000000000"),
    ("GET", "/v1/jobs/job-00000000000000000000/logs"),
    ("GET", "/v1/jobs/job-00000000000000000000/adapter"),
    ("POST", "/v1/jobs/job-00000000000000000000/cancel"),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer " + "x" * 36},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong", "basic", "bare", "empty"],
)
def test_every_route_but_healthz_needs_the_token(api, headers):
    client, service, backend = api
    for method, path in ROUTES:
        response = client.request(method, path, headers=headers, content=b"x")
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert backend.submissions == [] and service.store.datasets() == []
    # FastAPI's own pages would answer without it: there are none
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404, path


def test_empty_store_lists_nothing_and_unknown_ids_are_404(api):
    client, _, _ = api
    assert client.get("/v1/jobs", headers=AUTH).json() == []
    assert client.get("/v1/datasets", headers=AUTH).json() == []
    for suffix in ("", "/logs", "/adapter"):
        for job_id in ("job-00000000000000000000", "nope", "job-XYZ", "job-" + "0" * 40):
            response = client.get(f"/v1/jobs/{job_id}{suffix}", headers=AUTH)
            assert response.status_code == 404, (job_id, suffix, response.text)
    response = client.post("/v1/jobs/job-00000000000000000000/cancel", headers=AUTH)
    assert response.status_code == 404


def test_download_never_leaves_the_state_dir(api, tmp_path, episodes):
    client, service, backend = api
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("SENTINEL-SECRET")
    dataset = client.put("/v1/datasets", content=tar_dir(episodes), headers=AUTH).json()
    job = client.post(
        "/v1/jobs", json={"learner": "sft", "dataset_ids": [dataset["dataset_id"]]}, headers=AUTH
    ).json()
    job_dir = service.store.job_dir(job["job_id"])
    adapter = job_dir / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "leak.txt").symlink_to(sentinel)
    (adapter / "checkpoint-1").mkdir()
    (adapter / "checkpoint-1" / "state.pt").write_bytes(b"ckpt")
    (job_dir / "result.json").write_text(json.dumps({"status": "succeeded"}))
    backend.states[job["job_id"]] = "SUCCEEDED"
    service.tick()

    for bad in (
        "..%2F..%2Fsentinel.txt",
        "%2E%2E",
        "%2E%2E%2F%2E%2E%2Fsentinel.txt",
        "job-..",
        "..",
        "job-00000000000000000000%2F..%2F..%2F..%2Fsentinel.txt",
        f"{job['job_id']}%2F..%2F..%2F..%2Fsentinel.txt",
    ):
        for suffix in ("/adapter", "/logs", ""):
            response = client.get(f"/v1/jobs/{bad}{suffix}", headers=AUTH)
            assert response.status_code in (404, 405), (bad, suffix, response.status_code)
            assert b"SENTINEL" not in response.content

    response = client.get(f"/v1/jobs/{job['job_id']}/adapter", headers=AUTH)
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        members = tar.getmembers()
        assert sorted(m.name for m in members) == [
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
        assert all(m.isreg() and "/" not in m.name for m in members)
        assert tar.extractfile("adapter_model.safetensors").read() == b"weights"
    assert b"SENTINEL" not in response.content
    assert list((service.store.root / "tmp").iterdir()) == []


def test_refuses_to_start_without_a_token_unless_loopback_and_allowed(tmp_path, monkeypatch):
    from serve.config import from_mapping, is_loopback

    monkeypatch.delenv("BROWSER_RL_SERVE_TOKEN", raising=False)
    base = {"state_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="allow_no_auth"):
        from_mapping(base).token()
    assert from_mapping({**base, "allow_no_auth": True}).token() is None
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(ValueError, match="without a token"):
            from_mapping({**base, "host": host, "allow_no_auth": True}).token()
    monkeypatch.setenv("BROWSER_RL_SERVE_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 32"):
        from_mapping(base).token()
    monkeypatch.setenv("BROWSER_RL_SERVE_TOKEN", TOKEN)
    assert from_mapping({**base, "host": "0.0.0.0"}).token() == TOKEN
    assert is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="unknown serve settings"):
        from_mapping({"hots": "x"})


def test_import_serve_is_light():
    code = (
        "import sys, serve, serve.config, serve.store, serve.service, serve.app, serve.client\n"
        "heavy = sorted(m for m in ('ray', 'torch', 'transformers') if m in sys.modules)\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_committed_deploy_config_is_generated_loopback_and_tokenless():
    import yaml

    from serve.deployment import DEPLOY_ARGS, deploy_config

    path = REPO / "serve" / "deploy.yaml"
    committed = yaml.safe_load(path.read_text())
    assert committed == deploy_config(DEPLOY_ARGS)  # regenerate: python -m serve.deployment PATH
    assert committed["http_options"]["host"] == "127.0.0.1"
    args = committed["applications"][0]["args"]
    assert not any("token" in key for key in args)  # the token never goes into a config file
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema(**committed)
    assert schema.http_options.host == "127.0.0.1"


def test_the_deploy_config_command_writes_the_committed_file_and_answers_help(tmp_path, capsys):
    from serve.deployment import main

    main([str(tmp_path / "deploy.yaml")])
    assert (tmp_path / "deploy.yaml").read_text() == (REPO / "serve" / "deploy.yaml").read_text()
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])  # used to write the config into a file named --help
    assert exit_.value.code == 0 and "usage: python -m serve.deployment" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.yaml"]


def test_python_m_serve_refuses_a_public_bind_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BROWSER_RL_SERVE_TOKEN"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "serve",
            "host=0.0.0.0",
            "allow_no_auth=true",
            f"state_dir={tmp_path / 'state'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode != 0
    assert "refusing to serve on '0.0.0.0' without a token" in done.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_a_succeeded_job_without_an_adapter_is_404_and_leaves_nothing(api):
    client, service, backend = api
    job_id = client.post("/v1/jobs", json={"learner": "grpo"}, headers=AUTH).json()["job_id"]
    (service.store.job_dir(job_id) / "result.json").write_text(
        json.dumps({"version": 1, "status": "succeeded"})
    )
    backend.states[job_id] = "SUCCEEDED"
    service.tick()
    response = client.get(f"/v1/jobs/{job_id}/adapter", headers=AUTH)
    assert response.status_code == 404 and "no adapter" in response.json()["detail"]
    assert list((service.store.root / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("byte_range", "status"), [("bytes=999999-", 416), ("bytes=oops", 400), ("bytes=0-9", 206)]
)
def test_a_ranged_adapter_download_leaves_no_temp_dir(api, byte_range, status):
    # Starlette answers a bad Range itself, without running the response's background task
    client, service, backend = api
    job_id = client.post("/v1/jobs", json={"learner": "grpo"}, headers=AUTH).json()["job_id"]
    job_dir = service.store.job_dir(job_id)
    (job_dir / "adapter").mkdir()
    (job_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 1000)
    (job_dir / "result.json").write_text(json.dumps({"version": 1, "status": "succeeded"}))
    backend.states[job_id] = "SUCCEEDED"
    service.tick()
    response = client.get(f"/v1/jobs/{job_id}/adapter", headers={**AUTH, "Range": byte_range})
    assert response.status_code == status
    assert list((service.store.root / "tmp").iterdir()) == []


def test_a_job_request_body_is_capped(make_service):
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, backend = make_service(max_job_request_bytes=4096)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    big = {"learner": "grpo", "overrides": {"tasks": ["x" * 100] * 100}}
    response = client.post("/v1/jobs", json=big, headers=AUTH)
    assert response.status_code == 413, response.text[:200]
    body = json.dumps(big).encode()
    chunked = client.post(
        "/v1/jobs",
        content=(body[i : i + 1000] for i in range(0, len(body), 1000)),  # no Content-Length
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413, chunked.text[:200]
    assert service.jobs() == [] and backend.submissions == []
    small = {"learner": "grpo", "overrides": {"tasks": ["click-test"]}}
    assert client.post("/v1/jobs", json=small, headers=AUTH).status_code == 201
    assert client.post("/v1/jobs", content=b"{", headers=AUTH).status_code == 422


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"poll_interval_s": 0}, "poll_interval_s must be a finite number > 0"),
        # NaN passed every comparison: the scheduler spun, a job with no resources was 422
        ({"poll_interval_s": float("nan")}, "poll_interval_s must be a finite number > 0"),
        ({"ray_jobs_timeout_s": float("inf")}, "ray_jobs_timeout_s must be a finite number > 0"),
        ({"default_num_cpus": float("nan")}, "default_num_cpus must be a finite number >= 0"),
        ({"replica_num_cpus": float("inf")}, "replica_num_cpus must be a finite number >= 0"),
        ({"max_queued_jobs": 0}, "max_queued_jobs must be >= 1"),
        ({"ray_start_attempts": 0}, "ray_start_attempts must be >= 1"),
        ({"ray_num_cpus": 0}, "ray_num_cpus must be >= 1 or null"),
        ({"default_num_gpus": -1}, "default_num_gpus must be a finite number >= 0"),
        ({"max_num_cpus": -1}, "max_num_cpus must be a finite number >= 0 or null"),
        ({"max_num_gpus": float("inf")}, "max_num_gpus must be a finite number >= 0 or null"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_ray_starts(setting, message):
    from serve.config import from_mapping

    with pytest.raises(ValueError, match=message):
        from_mapping(setting)


@pytest.mark.parametrize(
    ("route", "declared"),
    [
        ("/v1/jobs", "9" * 5000),
        ("/v1/jobs", "0" * 5000 + "1"),
        ("/v1/datasets", "9" * 5000),
    ],
    ids=["job-huge", "job-zeros", "upload-huge"],
)
def test_a_content_length_of_thousands_of_digits_is_413_not_500(api, route, declared):
    client, service, backend = api
    client = type(client)(client.app, raise_server_exceptions=False)
    method = client.put if route == "/v1/datasets" else client.post
    response = method(route, content=b"{}", headers={**AUTH, "Content-Length": declared})
    if declared.lstrip("0") == "1":  # a lie about a small body: read and judged by its bytes
        assert response.status_code == 422, response.text[:200]
    else:
        assert response.status_code == 413, response.text[:200]
    assert service.jobs() == [] and backend.submissions == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"learner": "grpo", "resources": {"num_cpus": NaN}}',
        b'{"learner": "grpo", "resources": {"num_gpus": Infinity}}',
        b'{"learner": "grpo", "resources": {"num_cpus": 1e999}}',
        b'{"learner": "grpo", "overrides": {"learning_rate": NaN}}',
        b'{"learner": "grpo", "overrides": {"epsilon": -Infinity}}',
    ],
    ids=["cpus-nan", "gpus-inf", "cpus-overflow", "override-nan", "override-inf"],
)
def test_non_finite_numbers_in_a_job_request_are_422(api, body):
    client, service, backend = api
    response = client.post(
        "/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text[:200]
    assert service.jobs() == [] and backend.submissions == []
