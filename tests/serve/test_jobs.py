"""Jobs over a fake backend: validation, idempotency, the queue, cancel, logs, restarts."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import pytest
from _serve_helpers import AUTH, FakeBackend, tar_dir


@pytest.fixture
def dataset_id(api, episodes):
    client, _, _ = api
    return client.put("/v1/datasets", content=tar_dir(episodes), headers=AUTH).json()["dataset_id"]


def _job(client, dataset_id, key=None, **extra):
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    body = {"learner": "sft", "dataset_ids": [dataset_id], **extra}
    return client.post("/v1/jobs", json=body, headers=headers)


def _finish(service, backend, job_id, state="SUCCEEDED", status="succeeded"):
    (service.store.job_dir(job_id) / "result.json").write_text(
        json.dumps({"version": 1, "status": status, "error": None})
    )
    backend.states[job_id] = state
    service.tick()


BAD_REQUESTS = [
    ({"learner": "ppo"}, "unknown learner"),
    ({"learner": "sft", "dataset_ids": ["ds-" + "0" * 32]}, "unknown dataset"),
    ({"learner": "sft", "dataset_ids": ["../../etc"]}, "unknown dataset"),
    ({"overrides": {"max_stepz": 3}}, "unknown sft setting"),
    ({"overrides": {"kl_direction": "reverse"}}, "unknown sft setting"),
    ({"overrides": {"output_dir": "/tmp/x"}}, "set by the server"),
    ({"overrides": {"episodes": ["/etc"]}}, "set by the server"),
    ({"overrides": {"init_adapter": "/etc"}}, "set by the server"),
    ({"overrides": {"hydra.run.dir": "/tmp"}}, "set by the server"),
    ({"overrides": {"_target_": "os.system"}}, "set by the server"),
    ({"overrides": {"max_steps": "many"}}, "is not a int"),
    ({"overrides": {"learning_rate": True}}, "is not a float"),
    ({"overrides": {"model": "/root/secret-model"}}, "is not one of"),
    ({"resources": {"num_cpus": -1}}, "num_cpus"),
    ({"resources": {"memory": 10}}, "unknown resource"),
]


@pytest.mark.parametrize(
    "resources, words",
    [
        ({"num_cpus": 1e9}, "num_cpus=1e+09 is more than one job can be given here (3.9)"),
        ({"num_cpus": 4.5}, "num_cpus=4.5 is more than"),
        ({"num_cpus": 4}, "num_cpus=4 is more than"),  # the replica holds 0.1 of the 4 for good
        ({"num_gpus": 2}, "num_gpus=2 is more than one job can be given here (1)"),
    ],
)
def test_resources_no_node_could_give_are_422(api, dataset_id, resources, words):
    """The fake's node has 4 CPUs and 1 GPU, of which this service's replica
    (replica_num_cpus, 0.1) holds a part on the node its jobs are pinned to: Ray
    would leave such a job pending for ever, holding the only max_concurrent_jobs
    slot."""
    client, service, backend = api
    response = _job(client, dataset_id, resources=resources)
    assert response.status_code == 422 and words in response.text, response.text
    assert backend.submissions == [] and service.jobs() == []
    fits = _job(client, dataset_id, resources={"num_cpus": 3.9, "num_gpus": 1})
    assert fits.status_code == 201, fits.text
    assert backend.submissions[0][2]["num_cpus"] == 3.9


ROLLOUTS_REFUSED = [
    (  # no CPU asked, so none to run out of: the env cap bounds the actors
        {"runner": "ray", "workers": 10_000, "cpus_per_worker": 0.0, "envs_per_worker": 64},
        {},
        "runner=ray with workers=10000 x envs_per_worker=64 plays 640000 envs at once; "
        "at most 32 per job here (max_rollout_envs)",
    ),
    ({"runner": "vector", "workers": 33}, {}, "runner=vector with workers=33 plays 33 envs"),
    (
        {"runner": "ray", "workers": 4, "cpus_per_worker": 64.0, "gpus_per_worker": 8.0},
        {"num_cpus": 1},
        "num_cpus=1 for the job plus 256 for its rollout actors (runner=ray: workers=4 x "
        "cpus_per_worker=64) is 257, more than one job can be given here (3.9)",
    ),
    (  # each actor fits, all three with the job do not
        {"runner": "ray", "workers": 3, "cpus_per_worker": 1.0},
        {"num_cpus": 1},
        "num_cpus=1 for the job plus 3 for its rollout actors",
    ),
    (
        {"runner": "ray", "workers": 3, "cpus_per_worker": 0.5, "gpus_per_worker": 0.5},
        {},
        "num_gpus=0 for the job plus 1.5 for its rollout actors (runner=ray: workers=3 x "
        "gpus_per_worker=0.5) is 1.5, more than one job can be given here (1)",
    ),
    ({"runner": "ray", "workers": 0}, {}, "workers must be >= 1, got 0"),
    ({"runner": "vector", "envs_per_worker": 2}, {}, "runner=ray only"),
    ({"runner": "ray", "cpus_per_worker": -1.0}, {}, "cpus_per_worker must be a finite number"),
]


@pytest.mark.parametrize(
    ("overrides", "resources", "words"),
    ROLLOUTS_REFUSED,
    ids=["no-cpu", "vector", "beyond-node", "sum", "gpus", "no-worker", "envs", "negative"],
)
def test_rollout_workers_beyond_the_node_or_the_env_cap_are_422(api, overrides, resources, words):
    """A GRPO job's Ray actors are resources it asks for too: Ray would leave
    them pending for ever (the job holding its max_concurrent_jobs slot), and
    with no CPU asked each would still start a browser."""
    client, service, backend = api
    body = {"learner": "grpo", "overrides": overrides, "resources": resources}
    response = client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]
    assert backend.submissions == [] and service.jobs() == []


def test_rollout_workers_that_fit_are_accepted(make_service):
    service, _ = make_service()
    ray_fits = {"runner": "ray", "workers": 2, "cpus_per_worker": 1.0, "envs_per_worker": 16}
    for overrides in (ray_fits, {"runner": "vector", "workers": 32}, {"runner": "local"}):
        job, created = service.create_job(
            {"learner": "grpo", "overrides": overrides, "resources": {"num_cpus": 1.9}}
        )
        assert created, overrides
    from serve.service import ServiceError

    # a configured maximum holds the job and its actors together
    capped, _ = make_service(max_num_cpus=2)
    with pytest.raises(ServiceError, match="is 3.9, more than one job can be given here"):
        capped.create_job(
            {"learner": "grpo", "overrides": ray_fits, "resources": {"num_cpus": 1.9}}
        )


def test_configured_resource_maximums_replace_what_the_backend_reports(
    make_service, episodes, tmp_path
):
    class Unreported(FakeBackend):
        def capacity(self, *, pinned):
            raise AssertionError("asked although both maximums are configured")

    service, backend = make_service(Unreported(), max_num_cpus=16, max_num_gpus=0)
    archive = tmp_path / "episodes.tar.gz"
    archive.write_bytes(tar_dir(episodes))
    manifest, _ = service.add_dataset(archive, "ab" * 32, archive.stat().st_size)
    request = {"learner": "sft", "dataset_ids": [manifest["dataset_id"]]}
    job, created = service.create_job({**request, "resources": {"num_cpus": 16}})
    assert created and job["resources"]["num_cpus"] == 16.0  # more than the fake's 4
    from serve.service import ServiceError

    with pytest.raises(ServiceError, match="num_gpus=1 is more than") as refused:
        service.create_job({**request, "resources": {"num_gpus": 1}})
    assert refused.value.status == 422


def test_a_backend_that_cannot_report_its_capacity_leaves_resources_unchecked(
    make_service, episodes, tmp_path
):
    class Down(FakeBackend):
        def capacity(self, *, pinned):
            raise ConnectionError("the cluster is restarting")

    service, backend = make_service(Down())
    archive = tmp_path / "episodes.tar.gz"
    archive.write_bytes(tar_dir(episodes))
    manifest, _ = service.add_dataset(archive, "ab" * 32, archive.stat().st_size)
    job, created = service.create_job(
        {"learner": "sft", "dataset_ids": [manifest["dataset_id"]], "resources": {"num_cpus": 64}}
    )
    assert created and job["resources"]["num_cpus"] == 64.0  # queued as while the backend is down


@dataclasses.dataclass
class _OpenConfig:
    """A config with the open field types no learner exposes to requests today."""

    anything: Any = None
    table: dict[str, Any] | None = None
    rates: list[float] | None = None


@pytest.mark.parametrize(
    "overrides",
    [
        {"anything": float("nan")},
        {"anything": [1, [2, {"x": float("inf")}]]},
        {"table": {"a": {"b": [float("-inf")]}}},
        {"rates": [0.1, float("nan")]},
    ],
    ids=["any-nan", "any-nested-inf", "dict-nested-inf", "list-nan"],
)
def test_non_finite_numbers_anywhere_in_an_override_are_refused(overrides):
    from serve.overrides import override_problem

    problem = override_problem(_OpenConfig, "open", overrides)
    assert problem is not None and "NaN or Infinity" in problem, problem
    finite = {"anything": [1, {"x": 2.5}], "table": {"a": [1e300]}, "rates": [0.1]}
    assert override_problem(_OpenConfig, "open", finite) is None


def test_bad_job_requests_are_422(api, dataset_id):
    client, service, backend = api
    for body, words in BAD_REQUESTS:
        request = {"learner": "sft", "dataset_ids": [dataset_id], **body}
        response = client.post("/v1/jobs", json=request, headers=AUTH)
        assert response.status_code == 422, (body, response.text)
        assert words in response.text, (body, response.text)
    assert backend.submissions == [] and client.get("/v1/jobs", headers=AUTH).json() == []


LEARNER_REFUSES = [
    ("sft", {"batch_size": 0}, "sft setting refused: batch_size must be >= 1, got 0"),
    ("sft", {"learning_rate": -1.0}, "learning_rate must be > 0, got -1.0"),
    ("sdft", {"lora_r": -3}, "lora_r must be >= 1, got -3"),
    ("sft", {"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("sdft", {"max_steps": 0}, "max_steps must be >= 1, got 0"),
    ("sft", {"eval_env_ids": ["nope"]}, "eval_env_ids: Environment `nope` doesn't exist"),
    ("grpo", {"env_ids": ["nope"]}, "env_ids: Environment `nope` doesn't exist"),
    # checks that lived in the learners' run(), after the job had started
    ("grpo", {"num_generations": 1}, "num_generations (G) must be >= 2"),
    ("grpo", {"beta": -0.1}, "beta must be a finite number >= 0, got -0.1"),
    ("grpo", {"train_seeds": []}, "env_ids and train_seeds must not be empty"),
    ("grpo", {"temperature": 0.0}, "temperature must be > 0"),
    ("sdft", {"kl_direction": "sideways"}, "kl_direction must be 'reverse' or 'forward'"),
    ("sdft", {"ema_rate": 2.0}, "ema_rate must be in [0, 1], got 2.0"),
    ("sdft", {"backend": "jax"}, "backend must be 'transformers' or 'mlx', got 'jax'"),
]


@pytest.mark.parametrize(
    ("learner", "overrides", "words"),
    LEARNER_REFUSES,
    ids=[f"{learner}-{next(iter(o))}" for learner, o, _ in LEARNER_REFUSES],
)
def test_settings_the_learners_config_refuses_are_422(
    api, dataset_id, monkeypatch, learner, overrides, words
):
    """Such a job would take a slot and a backend job only to fail at start-up;
    the check makes no env (no browser) and reads no path."""
    import gymnasium

    def no_env(*args, **kwargs):
        raise AssertionError("the request check made an env")

    monkeypatch.setattr(gymnasium, "make", no_env)
    client, service, backend = api
    body = {"learner": learner, "dataset_ids": [dataset_id], "overrides": overrides}
    response = client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 422 and words in response.json()["detail"], response.text
    assert backend.submissions == [] and service.jobs() == []


def test_registered_env_ids_in_any_spelling_are_accepted(api, dataset_id):
    client, service, backend = api
    overrides = {"env_ids": ["miniwob.click-test"], "eval_env_ids": ["open"]}
    body = {"learner": "grpo", "dataset_ids": [dataset_id], "overrides": overrides}
    response = client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    spec = json.loads((service.store.job_dir(response.json()["job_id"]) / "spec.json").read_text())
    assert spec["config"]["env_ids"] == ["miniwob.click-test"]  # the learner resolves it


def test_a_dataset_named_twice_is_422(api, dataset_id):
    client, service, backend = api
    body = {"learner": "sft", "dataset_ids": [dataset_id, dataset_id]}
    response = client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == f"dataset {dataset_id!r} is named twice"
    assert backend.submissions == [] and service.jobs() == []


def test_a_good_job_runs_with_the_servers_paths(api, dataset_id):
    client, service, backend = api
    response = _job(client, dataset_id, overrides={"max_steps": 2, "lora_target_modules": ["q"]})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "running" and job["job_id"].startswith("job-")
    [(job_id, entrypoint, options)] = backend.submissions
    assert job_id == job["job_id"] and "serve.job_entry" in entrypoint
    assert options["resources"] == {"node:127.0.0.1": 0.001}  # pinned: no shared storage
    spec = json.loads((service.store.job_dir(job_id) / "spec.json").read_text())
    assert spec["config"]["max_steps"] == 2
    assert spec["config"]["output_dir"] == str(service.store.job_dir(job_id) / "adapter")
    assert spec["config"]["episodes"] == [str(service.store.dataset_dir(dataset_id) / "data")]
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()["metrics"] == {}


def test_an_idempotency_key_makes_one_job_and_one_submission(api, dataset_id):
    client, service, backend = api
    results = []

    def submit():
        results.append(_job(client, dataset_id, key="same-key"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200] * 7 + [201]
    assert len({r.json()["job_id"] for r in results}) == 1
    assert len(backend.submissions) == 1 and len(service.jobs()) == 1
    other = _job(client, dataset_id, key="same-key", overrides={"max_steps": 1})
    assert other.status_code == 409
    assert _job(client, dataset_id, key="another").status_code == 201
    assert len(service.jobs()) == 2


def test_at_most_max_concurrent_jobs_run(make_service, episodes):
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, backend = make_service(max_concurrent_jobs=2)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    ds = client.put("/v1/datasets", content=tar_dir(episodes), headers=AUTH).json()["dataset_id"]
    ids = [_job(client, ds).json()["job_id"] for _ in range(5)]
    states = lambda: [client.get(f"/v1/jobs/{i}", headers=AUTH).json()["status"] for i in ids]
    assert states() == ["running", "running", "queued", "queued", "queued"]
    assert [s[0] for s in backend.submissions] == ids[:2]
    _finish(service, backend, ids[0])
    assert states() == ["succeeded", "running", "running", "queued", "queued"]
    _finish(service, backend, ids[1], "FAILED", "failed")
    _finish(service, backend, ids[2])
    assert states() == ["succeeded", "failed", "succeeded", "running", "running"]
    assert [s[0] for s in backend.submissions] == ids  # each once, in order


def test_cancel_queued_running_and_finished(make_service, episodes):
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, backend = make_service(max_concurrent_jobs=1)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    ds = client.put("/v1/datasets", content=tar_dir(episodes), headers=AUTH).json()["dataset_id"]
    running, queued = (_job(client, ds).json()["job_id"] for _ in range(2))
    response = client.post(f"/v1/jobs/{queued}/cancel", headers=AUTH)
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert backend.stops == [] and [s[0] for s in backend.submissions] == [running]
    for _ in range(2):
        response = client.post(f"/v1/jobs/{running}/cancel", headers=AUTH)
        assert response.status_code == 202 and response.json()["cancel_requested"]
    assert backend.stops == [running]  # one stop, however often asked
    backend.states[running] = "STOPPED"
    service.tick()
    assert client.get(f"/v1/jobs/{running}", headers=AUTH).json()["status"] == "cancelled"
    for job_id in (running, queued):
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH).status_code == 409
    assert [s[0] for s in backend.submissions] == [running]  # the cancelled one never ran


def test_logs_outlive_the_backend_and_page_by_offset(api, dataset_id):
    client, service, backend = api
    job_id = _job(client, dataset_id).json()["job_id"]
    log = service.store.job_dir(job_id) / "job.log"
    log.write_text("step one\nsft:  50%|#####     | 1/2 [00:01<00:01]\n")
    _finish(service, backend, job_id)
    backend.forget()  # a Ray head restart forgets job history and logs
    first = client.get(f"/v1/jobs/{job_id}/logs", headers=AUTH).json()
    assert first["text"].startswith("step one") and first["next_offset"] == log.stat().st_size
    with log.open("a") as f:
        f.write("more\n")
    more = client.get(f"/v1/jobs/{job_id}/logs?offset={first['next_offset']}", headers=AUTH)
    assert more.json()["text"] == "more\n"
    assert client.get(f"/v1/jobs/{job_id}/logs?offset=-1", headers=AUTH).status_code == 422
    job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    assert job["status"] == "succeeded" and job["progress"] == {"step": 1, "total": 2}


def test_a_restart_lists_every_job_and_reconciles_the_running_ones(make_service, episodes):
    service, backend = make_service(max_concurrent_jobs=3)
    root = service.store.root
    archive = root.parent / "eps.tar.gz"
    archive.write_bytes(tar_dir(episodes))
    import hashlib

    ds, _ = service.add_dataset(archive, hashlib.sha256(archive.read_bytes()).hexdigest(), 1)
    request = {"learner": "sft", "dataset_ids": [ds["dataset_id"]]}
    done, lost, lost_too = (service.create_job(request)[0]["job_id"] for _ in range(3))
    waiting = service.create_job(request)[0]["job_id"]  # 4th: queued behind the cap of 3
    (service.store.job_dir(done) / "result.json").write_text(
        json.dumps({"version": 1, "status": "succeeded", "finished_at": "then"})
    )
    service.close()

    # Ray forgot everything (new cluster): result file wins, else "lost".
    again, fresh = make_service(FakeBackend(), max_concurrent_jobs=3)
    jobs = {j["job_id"]: j for j in again.jobs()}
    assert set(jobs) == {done, lost, lost_too, waiting}
    assert jobs[done]["status"] == "succeeded" and jobs[done]["finished_at"] == "then"
    for job_id in (lost, lost_too):
        assert jobs[job_id]["status"] == "failed" and jobs[job_id]["error"].startswith("lost")
    assert jobs[waiting]["status"] == "running"  # the freed slots went to the queue
    assert [s[0] for s in fresh.submissions] == [waiting]
    again.close()

    # resume_lost: the forgotten running job is submitted again under its id.
    third, backend3 = make_service(FakeBackend(), max_concurrent_jobs=3, resume_lost=True)
    jobs = {j["job_id"]: j for j in third.jobs()}
    assert jobs[waiting]["status"] == "running" and jobs[waiting]["attempts"] == 2
    assert [s[0] for s in backend3.submissions] == [waiting]
    assert jobs[lost]["status"] == "failed"  # finished records stay as they were


NETWORK_SETTINGS = [
    ("generation", "server"),
    ("server_url", "http://203.0.113.7:80/v1"),
    ("server_token_env", "BROWSER_RL_SERVE_TOKEN"),
    ("server_lora_name", "../../../../tmp/anything"),
    ("server_adapter_dir", "/tmp/served"),
    ("server_timeout", 1.0),
]


@pytest.mark.parametrize(("key", "value"), NETWORK_SETTINGS, ids=[k for k, _ in NETWORK_SETTINGS])
def test_grpos_generation_server_settings_are_the_servers(api, key, value):
    # A client's server_url would get "Bearer $<server_token_env>" from the
    # job's environment: the service's own secrets.
    client, service, backend = api
    body = {"learner": "grpo", "overrides": {key: value}}
    response = client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert f"override {key!r} is set by the server" in response.json()["detail"]
    assert backend.submissions == [] and service.jobs() == []


def test_every_generation_server_setting_is_server_owned():
    import dataclasses

    from learners.config import GRPOConfig
    from serve.service import SERVER_OWNED

    network = {f.name for f in dataclasses.fields(GRPOConfig) if f.name.startswith("server_")}
    assert network | {"generation"} <= SERVER_OWNED


def test_a_job_process_runs_without_the_services_token(api, dataset_id, monkeypatch):
    import shlex
    import subprocess
    import sys

    client, service, backend = api
    job_id = _job(client, dataset_id).json()["job_id"]
    [(_, entrypoint, _)] = backend.submissions
    command = shlex.split(entrypoint)
    job_command = [sys.executable, "-m", "serve.job_entry", str(service.store.job_dir(job_id))]
    assert command[-4:] == job_command
    # The same command line with a probe in the job entry's place, run by a
    # shell in an environment like the Ray node's.
    probe = "import json, os; print(json.dumps(sorted(os.environ)))"
    command[-4:] = [sys.executable, "-c", probe]
    monkeypatch.setenv("BROWSER_RL_SERVE_TOKEN", "x" * 40)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "y" * 40)
    seen = json.loads(subprocess.run(shlex.join(command), shell=True, capture_output=True).stdout)
    assert "BROWSER_RL_SERVE_TOKEN" not in seen
    assert "RAY_AUTH_TOKEN" in seen  # a job is a Ray client (runner=ray)


def test_the_prompt_override_takes_prompt_settings(api, dataset_id):
    from learners.config import SFTConfig, from_mapping

    client, service, backend = api
    prompt = {"max_history": 2, "rules": ["Be brief."], "use_screenshot": False}
    response = _job(client, dataset_id, overrides={"prompt": prompt})
    assert response.status_code == 201, response.text
    spec = json.loads((service.store.job_dir(response.json()["job_id"]) / "spec.json").read_text())
    built = from_mapping(SFTConfig, spec["config"]).prompt
    assert (built.max_history, built.rules, built.use_screenshot) == (2, ("Be brief.",), False)
    for bad in ({"max_hist": 2}, {"max_history": "two"}, {"rules": [1]}, "short"):
        response = _job(client, dataset_id, overrides={"prompt": bad})
        assert response.status_code == 422 and "is not a PromptConfig" in response.text, bad
    assert len(backend.submissions) == 1


def test_a_key_refused_with_429_makes_the_job_on_retry(make_service, episodes):
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, backend = make_service(max_concurrent_jobs=1, max_queued_jobs=1)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    ds = client.put("/v1/datasets", content=tar_dir(episodes), headers=AUTH).json()["dataset_id"]
    _job(client, ds, key="runs")
    waiting = _job(client, ds, key="waits").json()["job_id"]
    assert _job(client, ds, key="K").status_code == 429
    assert _job(client, ds, key="K").status_code == 429  # still full: refused again, no job
    client.post(f"/v1/jobs/{waiting}/cancel", headers=AUTH)  # the queue has room again
    made = _job(client, ds, key="K")
    assert made.status_code == 201, made.text
    again = _job(client, ds, key="K")
    assert again.status_code == 200 and again.json()["job_id"] == made.json()["job_id"]
    assert len(service.jobs()) == 3


def test_logs_refuse_offsets_past_the_end_and_never_split_a_character(make_service):
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, backend = make_service(max_log_chunk=1000)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    job_id = client.post("/v1/jobs", json={"learner": "grpo"}, headers=AUTH).json()["job_id"]
    logs = f"/v1/jobs/{job_id}/logs"
    assert client.get(logs, params={"offset": 1}, headers=AUTH).status_code == 422  # no log yet
    text = "step 1/10 [" + "\u2588" * 600 + "]\n"  # tqdm's bar: 3 bytes a character
    (service.store.job_dir(job_id) / "job.log").write_text(text, encoding="utf-8")
    size = len(text.encode())
    for offset in (size + 1, 10**20):
        response = client.get(logs, params={"offset": offset}, headers=AUTH)
        assert response.status_code == 422 and "offset" in response.text, offset
    chunks, offset = [], 0
    while True:
        chunk = client.get(logs, params={"offset": offset}, headers=AUTH).json()
        if not chunk["text"]:
            break
        chunks.append(chunk["text"])
        assert chunk["next_offset"] - offset == len(chunk["text"].encode())
        offset = chunk["next_offset"]
    assert len(chunks) == 2 and "".join(chunks) == text and offset == size


class FlakyBackend(FakeBackend):
    """A FakeBackend whose status and stop fail while ``down`` (Ray's API unreachable)."""

    down = False

    def status(self, job_id):
        if self.down:
            raise RuntimeError("Failed to connect to Ray dashboard")
        return super().status(job_id)

    def stop(self, job_id):
        if self.down:
            raise RuntimeError("Failed to connect to Ray dashboard")
        super().stop(job_id)


def test_a_backend_outage_neither_hides_a_new_job_nor_loses_a_cancel(make_service):
    from _serve_helpers import TOKEN
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, backend = make_service(FlakyBackend())
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    running = client.post("/v1/jobs", json={"learner": "grpo"}, headers=AUTH).json()["job_id"]
    backend.down = True
    response = client.post("/v1/jobs", json={"learner": "grpo"}, headers=AUTH)
    assert response.status_code == 201 and response.json()["status"] == "queued"
    assert len(service.jobs()) == 2
    response = client.post(f"/v1/jobs/{running}/cancel", headers=AUTH)
    assert response.status_code == 503 and "cancel of" in response.json()["detail"]
    assert service.job(running)["cancel_requested"] and backend.stops == []
    backend.down = False
    service.tick()  # the scheduler sends the stop the outage swallowed
    assert backend.stops == [running]
    backend.states[running] = "STOPPED"
    service.tick()
    assert service.job(running)["status"] == "cancelled"


def test_two_services_on_one_state_dir_submit_a_queued_job_once(make_service, episodes, tmp_path):
    """A redeploy runs the old and the new replica side by side on one state dir
    (and one Ray cluster). The other service's scheduler pass is started right
    when this one claims a queued job, between its read of the queue and its
    write of "running": it must wait for the claim, then see the job running,
    not submit it a second time (which Ray refuses, and which failed the job
    while it ran)."""
    backend = FakeBackend()
    a, _ = make_service(backend, max_concurrent_jobs=1)
    b, _ = make_service(backend, max_concurrent_jobs=1)
    archive = tmp_path / "episodes.tar.gz"
    archive.write_bytes(tar_dir(episodes))
    manifest, _ = a.add_dataset(archive, "ab" * 32, archive.stat().st_size)
    request = {"learner": "sft", "dataset_ids": [manifest["dataset_id"]]}
    first, _ = a.create_job(request)
    second, _ = a.create_job(request)  # waits: one job runs at a time
    assert [first["status"], second["status"]] == ["running", "queued"]
    (a.store.job_dir(first["job_id"]) / "result.json").write_text(
        json.dumps({"version": 1, "status": "succeeded", "error": None})
    )
    backend.states[first["job_id"]] = "SUCCEEDED"

    claim = a._mark_started
    other = threading.Thread(target=b.tick)

    def claim_while_the_other_passes(record):
        other.start()
        other.join(timeout=2)  # it runs now if nothing holds it back
        return claim(record)

    a._mark_started = claim_while_the_other_passes
    a.tick()
    other.join(timeout=30)
    assert not other.is_alive()
    assert [s[0] for s in backend.submissions] == [first["job_id"], second["job_id"]]
    record = a.store.job(second["job_id"])
    assert (record["status"], record["attempts"], record["error"]) == ("running", 1, None)
    assert b.job(second["job_id"])["status"] == "running"


class _SlowSubmit(FakeBackend):
    """A submission that takes a while (an HTTP call to Ray's Jobs API)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_submit, self.go = threading.Event(), threading.Event()

    def submit(self, job_id, entrypoint, **options):
        self.in_submit.set()
        assert self.go.wait(30)
        super().submit(job_id, entrypoint, **options)


@pytest.mark.parametrize("resume_lost", [False, True])
def test_the_other_replica_does_not_take_a_job_being_submitted_for_lost(
    make_service, episodes, tmp_path, resume_lost
):
    """Claimed (running) but not yet known to the backend while its submission
    runs: the other replica's pass must leave it alone (it had failed it as lost,
    or queued it again and failed it as "already exists" while it ran)."""
    backend = _SlowSubmit()
    a, _ = make_service(backend, resume_lost=resume_lost)
    b, _ = make_service(backend, resume_lost=resume_lost)
    archive = tmp_path / "episodes.tar.gz"
    archive.write_bytes(tar_dir(episodes))
    manifest, _ = a.add_dataset(archive, "ab" * 32, archive.stat().st_size)
    submitting = threading.Thread(
        target=a.create_job, args=({"learner": "sft", "dataset_ids": [manifest["dataset_id"]]},)
    )
    submitting.start()
    try:
        assert backend.in_submit.wait(30)
        [job] = b.jobs()
        b.tick()  # the other replica's pass, while the submission is in flight
        assert (b.job(job["job_id"])["status"], b.job(job["job_id"])["error"]) == ("running", None)
        assert "submitting_until" not in b.job(job["job_id"])  # not part of the API
    finally:
        backend.go.set()
        submitting.join(30)
    b.tick()
    record = a.store.job(job["job_id"])
    assert (record["status"], record["attempts"], record["error"]) == ("running", 1, None)
    assert "submitting_until" not in record  # the backend's word counts from now on
    assert [s[0] for s in backend.submissions] == [job["job_id"]]


def test_a_claim_whose_replica_died_before_submitting_is_lost_after_its_deadline(
    make_service, episodes, tmp_path, monkeypatch
):
    service, backend = make_service(FakeBackend(), max_concurrent_jobs=1)
    archive = tmp_path / "episodes.tar.gz"
    archive.write_bytes(tar_dir(episodes))
    manifest, _ = service.add_dataset(archive, "ab" * 32, archive.stat().st_size)
    monkeypatch.setattr(service, "_submit", lambda record: None)  # died before submitting
    job, _ = service.create_job({"learner": "sft", "dataset_ids": [manifest["dataset_id"]]})
    service.tick()
    assert service.job(job["job_id"])["status"] == "running"  # its deadline has not passed
    claimed = service.store.job(job["job_id"])
    claimed["submitting_until"] -= service._submit_deadline_s() + 1  # its deadline passed
    service.store.save_job(claimed)
    service.tick()
    record = service.job(job["job_id"])
    assert record["status"] == "failed" and record["error"].startswith("lost")


@pytest.mark.parametrize("model", ["tiny-random", "tiny", "tiny-text"])
def test_a_preset_and_its_old_names_pass_the_default_model_allow_list(api, dataset_id, model):
    """``allowed_models`` defaults to the learners' own default, tiny-random;
    ``tiny`` and ``tiny-text``, its old names, are that preset too."""
    client, service, backend = api
    response = _job(client, dataset_id, overrides={"model": model})
    assert response.status_code == 201, response.text
    assert backend.submissions and service.jobs()[0]["overrides"]["model"] == model
