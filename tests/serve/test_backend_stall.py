"""The service over a Ray Jobs API that accepts requests and never answers,
and over a GCS that never lists its nodes.

The real :class:`~serve.backend.RayJobBackend` talks to a stand-in dashboard
on loopback that answers only the client's version check: every job call
stalls until its deadline. Requests that only read or write records must
answer meanwhile; the backend's own calls must give up. ``ray.nodes()`` (the
capacity check) is replaced by one that blocks until the test releases it.
"""

from __future__ import annotations

import threading
import time

import pytest
from _serve_helpers import AUTH, TOKEN, JobsAPIHandler, serving

pytest.importorskip("ray.job_submission")

TIMEOUT_S = 8.0  # each Jobs API request's deadline; the other requests need far less


@pytest.fixture
def stalled_dashboard():
    """``(url, seen)``: a Jobs API that stalls; ``seen`` is set once a job call came in."""
    seen = threading.Event()
    release = threading.Event()

    class Handler(JobsAPIHandler):
        def job_call(self):
            seen.set()
            release.wait(60)
            self.close_connection = True

    with serving(Handler) as url:
        try:
            yield url, seen
        finally:
            release.set()  # before the server shuts down: its stalled requests end


@pytest.mark.exhaustive  # ~24 s (its stalls wait out their timeouts); a hung GCS: the test below
def test_a_hung_jobs_api_holds_neither_requests_nor_the_scheduler(make_service, stalled_dashboard):
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.backend import BackendTimeout, RayJobBackend

    url, seen = stalled_dashboard
    service, _ = make_service(RayJobBackend(url, timeout=TIMEOUT_S), max_concurrent_jobs=1)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    first: dict = {}

    def submit_first():
        first["response"] = client.post("/v1/jobs", json={"learner": "grpo"}, headers=AUTH)

    submitting = threading.Thread(target=submit_first, daemon=True)
    submitting.start()
    assert seen.wait(30), "the submission never reached the Jobs API"
    # While the first job's submission stalls, everything else answers.
    assert client.get("/healthz").status_code == 200
    [listed] = client.get("/v1/jobs", headers=AUTH).json()
    assert listed["status"] == "running"  # recorded before the submission
    second = client.post("/v1/jobs", json={"learner": "grpo"}, headers=AUTH)
    assert second.status_code == 201 and second.json()["status"] == "queued"
    cancelled = client.post(f"/v1/jobs/{second.json()['job_id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert submitting.is_alive(), "the other requests waited for the stalled submission"

    # The submission gives up at its deadline; its job stays running for the
    # next pass to ask about (Ray may have taken it).
    submitting.join(TIMEOUT_S + 30)
    assert not submitting.is_alive()
    response = first["response"]
    assert response.status_code == 201 and response.json()["status"] == "running"
    start = time.monotonic()
    with pytest.raises(BackendTimeout):
        service.tick()  # the status request stalls too
    assert time.monotonic() - start < TIMEOUT_S + 30


def test_a_jobs_api_that_never_accepts_the_connection_is_a_backend_timeout():
    """A dashboard whose accept queue is full never completes the handshake:
    the client's version check times out connecting, which Ray reports as a
    plain ConnectionError; the backend says BackendTimeout, as for any call."""
    import socket

    from serve.backend import BackendTimeout, RayJobBackend

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = []
    try:
        for _ in range(3):  # fill the accept queue: later SYNs are dropped
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            queued.append(client)
        time.sleep(0.2)
        with pytest.raises(BackendTimeout, match="did not answer within 1 s"):
            RayJobBackend(f"http://127.0.0.1:{port}", timeout=1.0)
    finally:
        for client in queued:
            client.close()
        server.close()


def test_a_hung_gcs_leaves_a_job_request_unchecked_not_held(
    make_service, stalled_dashboard, monkeypatch
):
    """``ray.nodes()`` (the capacity check of a job request) takes no deadline
    of its own: with the GCS hung, the request is answered once the backend's
    deadline passed, its resources unchecked as while the cluster is down,
    and a later one waits on the same unanswered query, for what is left of
    its deadline, instead of starting another."""
    import ray
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.backend import BackendTimeout, RayJobBackend

    timeout_s = 2.0
    url, _ = stalled_dashboard
    gcs = threading.Event()  # the hung GCS answers once set
    queries = []

    def hung_nodes():
        queries.append(time.monotonic())
        gcs.wait(120)
        return []

    monkeypatch.setattr(ray, "nodes", hung_nodes)
    backend = RayJobBackend(url, timeout=timeout_s)
    service, _ = make_service(backend, max_concurrent_jobs=1)
    client = TestClient(create_app(service, TOKEN, max_upload_bytes=1 << 30))
    answers: list = []

    def create():  # 64 CPUs: more than any node here, were the capacity known
        answers.append(
            client.post(
                "/v1/jobs", json={"learner": "grpo", "resources": {"num_cpus": 64}}, headers=AUTH
            )
        )

    try:
        creating = threading.Thread(target=create, daemon=True)
        creating.start()
        # the capacity check's deadline, then the submission's (the stand-in
        # Jobs API stalls it too), with room for a loaded machine
        creating.join(2 * timeout_s + 20)
        assert not creating.is_alive(), "the job request waited for the hung GCS"
        [response] = answers
        assert response.status_code == 201, response.text
        assert response.json()["resources"]["num_cpus"] == 64.0  # unchecked, not refused
        start = time.monotonic()
        with pytest.raises(BackendTimeout, match="did not list its nodes within 2 s"):
            backend.capacity(pinned=True)
        # the unanswered query's deadline has passed: a later call does not wait again
        assert time.monotonic() - start < timeout_s / 2
        assert len(queries) == 1  # the GCS still owes the first answer: no second query
    finally:
        gcs.set()
