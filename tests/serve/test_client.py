"""The client and the job entrypoint against the fast-tier app (no Ray)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
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
        assert sorted(p.name for p in target.iterdir()) == [
            serve.client.MANIFEST,
            "adapter_config.json",
            "training.json",
        ]

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


@pytest.mark.parametrize("args", [["--help"], ["no-such-job"], []])
def test_job_entry_refuses_what_is_not_a_job_dir_in_one_line(tmp_path, args):
    done = subprocess.run(
        [sys.executable, "-m", "serve.job_entry", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "Traceback" not in done.stderr
    if args == ["--help"]:
        assert done.returncode == 0 and "usage: python -m serve.job_entry" in done.stdout
    else:
        assert done.returncode == 2 and "usage:" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no job.log written anywhere


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


def test_a_connection_dropped_mid_download_is_a_client_error(tmp_path):
    """A real cut: the server promised more bytes than it sent and closed the
    connection (httpx raises its own error there, not a short body)."""
    import os
    import socket
    import threading

    import httpx
    import pytest

    from serve.client import ClientError, TrainingClient

    whole = _adapter_archive(os.urandom(1 << 16))
    server = socket.create_server(("127.0.0.1", 0))

    def answer():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(whole)}\r\n\r\n".encode()
            conn.sendall(head + whole[: len(whole) // 2])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{server.getsockname()[1]}", trust_env=False)
    dest = tmp_path / "adapter"
    try:
        with pytest.raises(ClientError) as caught:
            TrainingClient(http=http, token="x").download("job-1", dest)
    finally:
        http.close()
        thread.join(timeout=10)
        server.close()
    assert caught.value.status == 502 and "job-1" in caught.value.detail
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_a_download_that_cannot_be_written_is_a_client_error(tmp_path):
    """A full disk under the temp archive (here: a file-size limit, with
    SIGXFSZ ignored so that the write fails with EFBIG) is ClientError(502),
    and ``dest`` is not made. The body comes in small pieces: with a buffered
    temp file, the bytes a failed write left in the buffer were written again
    when the file closed, and that OSError replaced the ClientError (seen
    once in a full run, when the network's chunks were small)."""
    import os
    import resource
    import signal
    import socket
    import threading
    import time

    import httpx
    import pytest

    from serve.client import ClientError, TrainingClient

    whole = _adapter_archive(os.urandom(1 << 21))  # a limit of 1 MiB: far above what else this
    # process writes meanwhile (pytest's captured output)
    server = socket.create_server(("127.0.0.1", 0))

    def answer():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(whole)}\r\n\r\n".encode())
            for start in range(0, len(whole), 3000):  # not a multiple of the 8 KiB buffer
                try:
                    conn.sendall(whole[start : start + 3000])
                except OSError:  # the client gave up
                    return
                time.sleep(0.0002)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{server.getsockname()[1]}", trust_env=False)
    dest = tmp_path / "adapter"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(whole) // 2, limits[1]))
        with pytest.raises(ClientError) as caught:
            TrainingClient(http=http, token="x").download("job-1", dest)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
        http.close()
        thread.join(timeout=10)
        server.close()
    assert caught.value.status == 502 and "could not write" in caught.value.detail
    assert not dest.exists()


def test_an_error_whose_json_body_is_not_an_object_is_a_client_error():
    """A proxy in front of the service may answer an error with any JSON: the
    client reports it as it came, with the status (it used to fail on
    ``.get``)."""
    import http.server
    import threading

    import httpx
    import pytest

    from serve.client import ClientError, TrainingClient

    class ListError(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = b'["overloaded"]'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ListError)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    http_client = httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", trust_env=False)
    try:
        with pytest.raises(ClientError) as caught:
            TrainingClient(http=http_client, token="x").health()
    finally:
        http_client.close()
        server.shutdown()
        server.server_close()
    assert caught.value.status == 503 and caught.value.detail == "['overloaded']"


def test_a_download_replaces_an_existing_adapter_only_when_complete(tmp_path):
    import os

    from serve.client import MANIFEST

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
        MANIFEST,
        "adapter.safetensors",
        "adapter_config.json",
        "notes.txt",
    ]
    fresh = tmp_path / "fresh" / "adapter"
    _serving(_adapter_archive(weights)).download("job-1", fresh)
    assert sorted(p.name for p in fresh.iterdir()) == [
        MANIFEST,
        "adapter.safetensors",
        "adapter_config.json",
    ]
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["adapter"]


def _succeed_with(client, service, backend, dataset_id, files):
    """A job of the real service that succeeded with an adapter of ``files``."""
    job_id = client.train("sft", [dataset_id], {"max_steps": 2})["job_id"]
    service.tick()  # submits it (the one before has finished)
    adapter = service.store.job_dir(job_id) / "adapter"
    adapter.mkdir()
    for name, data in files.items():
        (adapter / name).write_bytes(data)
    (service.store.job_dir(job_id) / "result.json").write_text('{"status": "succeeded"}')
    backend.states[job_id] = "SUCCEEDED"
    service.tick()
    assert client.job(job_id)["status"] == "succeeded"
    return job_id


def test_a_download_removes_the_files_of_the_adapter_it_replaces(api, episodes, tmp_path):
    """Two adapters of the real service downloaded into one dir: the second
    leaves no file of the first that it lacks (the old tokenizer.json), while
    files no download wrote (the user's notes, a dir, a symlink) stay."""
    from serve.client import MANIFEST, TrainingClient

    client_app, service, backend = api
    client = TrainingClient(http=client_app, token=TOKEN)
    dataset_id = client.upload(episodes)["dataset_id"]
    first = _succeed_with(
        client,
        service,
        backend,
        dataset_id,
        {
            "adapter_config.json": b'{"r": 4}',
            "adapter_model.safetensors": b"OLD",
            "tokenizer.json": b"{}",
        },
    )
    second = _succeed_with(
        client,
        service,
        backend,
        dataset_id,
        {"adapter_config.json": b'{"r": 8}', "adapter_model.safetensors": b"NEW"},
    )
    dest = tmp_path / "adapter"
    client.download(first, dest)
    (dest / "notes.txt").write_text("mine")
    first_listing = [
        MANIFEST,
        "adapter_config.json",
        "adapter_model.safetensors",
        "notes.txt",
        "tokenizer.json",
    ]
    assert sorted(p.name for p in dest.iterdir()) == first_listing
    assert json.loads((dest / MANIFEST).read_text())["files"] == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
    ]
    client.download(second, dest)
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.name != MANIFEST} == {
        "adapter_config.json": b'{"r": 8}',
        "adapter_model.safetensors": b"NEW",
        "notes.txt": b"mine",
    }
    assert json.loads((dest / MANIFEST).read_text())["files"] == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    # and back: the first adapter's files come back, nothing else changes
    client.download(first, dest)
    assert sorted(p.name for p in dest.iterdir()) == first_listing


def test_a_download_removes_only_plain_regular_files_the_manifest_lists(api, episodes, tmp_path):
    """A manifest listing a path outside dest, a symlink, a dir or the manifest
    itself removes none of them; a dir without a manifest keeps every file."""
    from serve.client import MANIFEST, TrainingClient

    client_app, service, backend = api
    client = TrainingClient(http=client_app, token=TOKEN)
    dataset_id = client.upload(episodes)["dataset_id"]
    job_id = _succeed_with(
        client, service, backend, dataset_id, {"adapter_config.json": b'{"r": 8}'}
    )
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    dest = tmp_path / "adapter"
    dest.mkdir()
    (dest / "old.bin").write_text("no manifest lists me")
    client.download(job_id, dest)
    assert (dest / "old.bin").exists()  # no manifest before: unknown files stay
    (dest / "link").symlink_to(outside)
    (dest / "sub").mkdir()
    (dest / "sub" / "x").write_text("keep")
    (dest / "stale.bin").write_text("listed")
    listed = ["../outside.txt", str(outside), "link", "sub", "sub/x", MANIFEST, "stale.bin"]
    (dest / MANIFEST).write_text(json.dumps({"version": 1, "files": listed}))
    client.download(job_id, dest)
    assert outside.read_text() == "keep" and (dest / "link").is_symlink()
    assert (dest / "sub" / "x").read_text() == "keep"
    assert sorted(p.name for p in dest.iterdir()) == [
        MANIFEST,
        "adapter_config.json",
        "link",
        "old.bin",
        "sub",
    ]
    # a manifest that is a symlink is not read (nor is what it points at removed)
    (dest / "stale.bin").write_text("x")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"version": 1, "files": ["stale.bin"]}))
    (dest / MANIFEST).unlink()
    (dest / MANIFEST).symlink_to(elsewhere)
    client.download(job_id, dest)
    assert (dest / "stale.bin").exists() and elsewhere.exists()
    assert not (dest / MANIFEST).is_symlink()


def test_the_command_line_says_when_the_service_cannot_be_reached(capsys):
    from serve.client import main

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["--url", f"http://127.0.0.1:{port}", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the training service at http://127.0.0.1:{port}")
    assert "Traceback" not in err


def test_the_command_line_refuses_an_upload_of_a_missing_dir(tmp_path, capsys):
    from serve.client import main

    with pytest.raises(SystemExit) as exited:
        main(["upload", str(tmp_path / "nope")])
    assert exited.value.code == 2
    assert "no such episode or run directory" in capsys.readouterr().err


NOT_SENT = [
    (["train", "--dataset", "ds-x", "--num-cpus", "nan"], "--num-cpus: 'nan' is not a finite"),
    (["train", "--dataset", "ds-x", "--num-cpus", "inf"], "--num-cpus: 'inf' is not a finite"),
    (["train", "--dataset", "ds-x", "--num-gpus=-inf"], "--num-gpus: '-inf' is not a finite"),
    (["train", "--set", "max_steps=.nan"], "--set max_steps: '.nan' holds NaN or Infinity"),
    (["train", "--set", "prompt={rules: [.inf]}"], "--set prompt: '{rules: [.inf]}' holds NaN"),
    (["train", "--set", "run_name=2024-01-01"], "--set run_name: '2024-01-01' is not a JSON"),
    (["train", "--set", "tasks=!!set {a}"], "--set tasks: '!!set {a}' is not a JSON value"),
    (["train", "--set", "tasks=["], "--set tasks: '[' is not a YAML value"),
    (["train", "--set", "max_steps"], "--set takes KEY=VALUE, got 'max_steps'"),
]


@pytest.mark.parametrize(("argv", "words"), NOT_SENT, ids=[a[-1] for a, _ in NOT_SENT])
def test_the_command_line_refuses_what_json_cannot_carry_in_one_line(argv, words, capsys):
    """Refused before any request (the URL's port listens to nothing: a request
    would end as "cannot reach", status 1), with no traceback."""
    from serve.client import main

    with pytest.raises(SystemExit) as exited:
        main(["--url", "http://127.0.0.1:9", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err.strip().splitlines()[-1] and words in err, err
    assert "Traceback" not in err and "cannot reach" not in err


@pytest.mark.parametrize(
    ("overrides", "resources", "words"),
    [
        ({"learning_rate": float("nan")}, None, "overrides['learning_rate']: nan holds NaN"),
        ({"prompt": {"rules": [float("inf")]}}, None, "overrides['prompt']: {'rules': [inf]}"),
        ({"tasks": {"a"}}, None, "overrides['tasks']: {'a'} is not a JSON value"),
        (None, {"num_cpus": float("inf")}, "resources['num_cpus']: inf holds NaN or Infinity"),
    ],
)
def test_train_from_python_refuses_what_json_cannot_carry_naming_it(overrides, resources, words):
    """Refused before any request: nothing listens on the URL's port, so a
    request would be an ``httpx.ConnectError`` (and httpx's own JSON error
    named no key)."""
    from serve.client import TrainingClient

    client = TrainingClient("http://127.0.0.1:9", "x")
    with client, pytest.raises(ValueError, match=re.escape(words)):
        client.train("sft", ["ds-x"], overrides, resources)


def test_the_command_line_refuses_an_upload_of_a_file(tmp_path, capsys):
    from serve.client import main

    (tmp_path / "afile").write_text("{}")
    with pytest.raises(SystemExit) as exited:
        main(["--url", "http://127.0.0.1:9", "upload", str(tmp_path), str(tmp_path / "afile")])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(
        f"error: upload: not a directory (give episode or run dirs): {tmp_path}/afile"
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--url", "127.0.0.1:8765"], "--url needs a scheme: http://127.0.0.1:8765"),
        (["--url", "ftp://127.0.0.1:8765"], "--url takes http:// or https://, not ftp://: "),
        (["--url", "http://:8765"], "--url needs a host: http://127.0.0.1:8765"),
        (["--url", "http://[::1"], "--url is no URL (Invalid IPv6 URL): e.g. http://127.0.0.1"),
        (["--url", "http://127.0.0.1:99999"], "--url is no URL (Port out of range 0-65535)"),
        ([], "$BROWSER_RL_SERVE_URL needs a scheme: http://localhost:8765"),
    ],
)
def test_the_command_line_refuses_a_url_without_a_scheme_or_a_host(argv, line, monkeypatch, capsys):
    """Such a URL is refused up front with the form that works, not taken to a
    service that does not answer ("start it with python -m serve")."""
    from serve.client import main

    monkeypatch.setenv("BROWSER_RL_SERVE_URL", "localhost:8765")
    with pytest.raises(SystemExit) as exited:
        main([*argv, "status"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {line}" in err.strip().splitlines()[-1], err
    assert "cannot reach" not in err


def test_status_piped_into_head_ends_quietly():
    """``python -m serve.client status | head``: the reader leaves early; the
    command stops with status 1 and no BrokenPipeError traceback."""
    import http.server
    import threading

    jobs = json.dumps([{"job_id": f"job-{i:05d}", "status": "succeeded"} for i in range(5000)])

    class Jobs(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = jobs.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serve.client", "--url", url, "status"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "BROWSER_RL_SERVE_TOKEN": "x"},
        )
        assert proc.stdout.read(10) == b"[\n  {\n    "  # as head reads, then leaves
        proc.stdout.close()
        _, err = proc.communicate(timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1 and b"Traceback" not in err, err.decode()
