"""The service for real: ``python -m serve`` on an embedded Ray, driven by the client.

One service process (and so one local Ray cluster) serves the whole module;
near the end one test (exhaustive tier) kills it mid-job and starts it again on
the same state dir, and the last stops it with SIGTERM.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from _serve_helpers import TOKEN, wait_for, write_click_episode

# Generous: starting Ray can take minutes on an overloaded shared machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
pytest.importorskip("ray.serve")

REPO = Path(__file__).resolve().parents[2]
FAST_SFT = {
    "max_steps": 2,
    "batch_size": 2,
    "save_steps": 0,
    "wandb": False,
    "learning_rate": 1e-2,
}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from serve.launch import LocalService

    root = tmp_path_factory.mktemp("service")
    settings = [
        "ray_num_cpus=2",
        "max_concurrent_jobs=1",
        "poll_interval_s=0.5",
        "default_num_cpus=0.5",
        "ray_start_attempts=6",  # the shared 2-core machine is often overloaded
    ]
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "WANDB_MODE": "disabled",
    }
    service = LocalService(root, TOKEN, settings, home=root / "home", env=env)
    try:
        service.start(timeout=1200)
        yield service
    finally:
        service.close()


@pytest.fixture(scope="module")
def client(service):
    from serve.client import TrainingClient

    with TrainingClient(service.url, TOKEN, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def dataset_id(client, tmp_path_factory):
    root = tmp_path_factory.mktemp("expert-episodes")
    for seed, target in enumerate(["ONE", "TWO", "THREE", "TWO"]):
        write_click_episode(root, seed, target)
    manifest = client.upload(root)
    assert manifest["episodes"] == 4
    return manifest["dataset_id"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sft_job_trains_an_adapter_that_drives_an_agent(client, dataset_id, tmp_path):
    job = client.train("sft", [dataset_id], FAST_SFT, {"num_cpus": 0.5})
    done = client.follow(job["job_id"], progress=False, poll=0.5)
    assert done["status"] == "succeeded", client.logs(job["job_id"])["text"][-3000:]
    assert done["metrics"]["loss"] > 0 and done["progress"]["step"] == 2
    adapter = client.download(job["job_id"], tmp_path / "adapter")
    assert (adapter / "adapter_config.json").is_file()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agents.tiny import tiny_model_path

    base = str(tiny_model_path("text"))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    assert any("lora_" in name for name, _ in model.named_parameters())

    from hydra import compose, initialize_config_dir

    from agents.run import build_agent

    overrides = ["agent=llm", "backend=transformers", f"model={base}", f"adapter={adapter}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
    agent = build_agent(cfg)
    from _serve_helpers import click_observation

    from browser_env.actions import Action

    agent.reset('Click on the "TWO" button.')
    action, info = agent.act(click_observation("TWO"))
    assert isinstance(action, Action) and info
    agent.close() if hasattr(agent, "close") else agent.backend.close()


def test_resources_beyond_the_node_are_refused_not_left_pending(client, dataset_id):
    """The embedded Ray offers 2 CPUs and no GPU on the service's one node, where
    the replica holds 0.1 CPU for good: a job asking for all 2 would never start."""
    from serve.client import ClientError

    cases = (({"num_cpus": 3}, "num_cpus=3"), ({"num_cpus": 2}, "num_cpus=2 "))
    for resources, words in (*cases, ({"num_gpus": 1}, "num_gpus=1")):
        with pytest.raises(ClientError, match=words) as refused:
            client.train("sft", [dataset_id], FAST_SFT, resources)
        assert refused.value.status == 422 and "more than one job can be given here" in str(
            refused.value
        )
    assert all(j["resources"]["num_cpus"] <= 2 for j in client.jobs())


def test_cancel_stops_a_running_job_within_15_s(client, service, dataset_id):
    job_id = client.train("sft", [dataset_id], {**FAST_SFT, "max_steps": 100_000})["job_id"]
    pid_file = service.state / "jobs" / job_id / "pid"
    wait_for(
        lambda: client.job(job_id)["status"] == "running" and pid_file.exists(),
        120,
        "the job's process",
    )
    pid = int(pid_file.read_text())
    assert _alive(pid)
    # The job inherits the environment Ray was started with, but not the
    # service's bearer token.
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"BROWSER_RL_SERVE_TOKEN" not in {e.partition(b"=")[0] for e in environ}
    start = time.monotonic()
    client.cancel(job_id)
    wait_for(lambda: client.job(job_id)["status"] == "cancelled", 15, "cancelled")
    assert time.monotonic() - start < 15
    wait_for(lambda: not _alive(pid), 5, "the job's process to exit")


def test_listens_on_loopback_only_and_writes_nothing_under_home(service):
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, _, state = line.split()[1:4]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) == service.port:
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, and no IPv6 or wildcard socket
    assert not (service.home / ".ray").exists()


def _service_processes(service) -> list:
    """The service's processes: its session's, and Ray's (named for its temp dir)."""
    import psutil

    session = os.getsid(service.proc.pid)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(proc.pid) == session or str(service.ray_tmp) in " ".join(
                proc.info["cmdline"] or ()
            ):
                found.append(proc)
        except (OSError, psutil.Error):
            pass
    return found


def test_no_ray_process_has_the_services_token_in_its_environment(service):
    """``python -m serve`` hands the token to its replica as an argument: the
    raylet, the workers (the replica, the proxy, every job's actors and their
    browsers) and the jobs inherit an environment without it."""
    ray_processes = [p for p in _service_processes(service) if p.pid != service.proc.pid]
    assert len(ray_processes) > 3  # gcs_server, raylet, the Serve actors, ...
    holding = []
    for proc in ray_processes:
        try:
            if TOKEN.encode() in Path(f"/proc/{proc.pid}/environ").read_bytes():
                holding.append(" ".join(proc.cmdline())[:80])
        except OSError:  # gone meanwhile
            pass
    assert holding == []


def test_only_the_replicas_grpc_server_listens_beyond_loopback_and_it_wants_rays_token(
    service,
):
    """Every Ray component binds 127.0.0.1 but the Serve replica's
    inter-deployment gRPC server, which Ray 2.60 binds to [::]:0 with no
    setting to change it: Ray's token auth refuses an anonymous call."""
    import grpc
    import psutil

    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    beyond = []
    for proc in _service_processes(service):
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.ip not in loopback:
                    beyond.append((" ".join(proc.cmdline())[:40], conn.laddr.port))
        except psutil.Error:
            pass
    [(name, port)] = beyond
    assert name.startswith("ray::ServeReplica"), beyond
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.exhaustive  # ~40 s (a second Ray start); test_jobs.py reconciles without Ray
def test_a_killed_service_reconciles_its_job_after_restart(client, service, dataset_id):
    job_id = client.train("sft", [dataset_id], {**FAST_SFT, "max_steps": 100_000})["job_id"]
    pid_file = service.state / "jobs" / job_id / "pid"
    wait_for(lambda: pid_file.exists(), 120, "the job's process")
    pid = int(pid_file.read_text())
    service.kill()  # no cleanup of any kind
    # Its embedded Ray goes with it (whatever fate sharing missed); the job's
    # process, in a session of its own, may be left running: an orphan.
    from serve.launch import kill_processes_using

    kill_processes_using(str(service.ray_tmp))

    def port_closed() -> bool:  # Ray's workers (the Serve proxy) go a moment later
        try:
            client.health()
        except Exception:
            return True
        return False

    wait_for(port_closed, 120, "the old proxy to go")
    service.start(timeout=1200)
    job = client.job(job_id)
    assert job["status"] == "failed" and job["error"].startswith("lost"), job
    assert job_id in [j["job_id"] for j in client.jobs()]
    wait_for(lambda: not _alive(pid), 10, "the orphaned job process to be stopped")


def test_a_sigterm_stops_the_service_and_all_of_its_ray(service):
    """Last in the module (it stops the module's service): ``python -m serve``
    told to stop once it runs exits 0 and takes every Ray process with it.
    A SIGTERM while it starts (Ray, then Serve's deploy): test_serve_signals.py,
    exhaustive tier."""
    import signal

    processes = _service_processes(service)
    assert len(processes) > 3  # the service, gcs_server, raylet, the Serve actors, ...
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=120) == 0
    wait_for(lambda: not any(map(_running, processes)), 60, "the service's Ray processes to exit")


def _running(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone
        return False
