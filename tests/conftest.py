"""Shared fixtures. Tests run offline: no model hub, no wandb server, no Ray telemetry."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # `make test` runs two xdist workers on 2 cores: one torch thread each (and in
    # the servers and notebooks they start), or two workers' OpenMP teams spin
    # against each other and a torch-heavy test takes twice as long
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_collection_modifyitems(config, items):
    """Test files with a ``slow`` test run first, then the rest, most tests first.

    ``make test`` hands whole files to two xdist workers (``--dist loadfile
    --no-loadscope-reorder``) in this order, so the long files (the Ray
    service, the notebook, the Ray runner) start early and the many short
    ones fill in at the end, instead of a long file starting last while the
    other worker has nothing left to do (xdist's own order, most tests first,
    left up to ~2 minutes of one worker idle at the end)."""
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)

    def weight(tests: list) -> tuple[bool, int]:
        has_slow = any(test.get_closest_marker("slow") for test in tests)
        return (not has_slow, 0 if has_slow else -len(tests))

    items[:] = [test for tests in sorted(files.values(), key=weight) for test in tests]


@pytest.fixture(scope="session")
def site_url() -> str:
    """Base URL (ending in /) of tests/fixtures/site served on 127.0.0.1."""
    from browser_env.tasks.server import serve_directory

    return serve_directory(FIXTURES / "site")


@pytest.fixture(scope="module")
def open_env():
    """One text+elements open-v0 env per test module (the browser is reused across resets)."""
    from browser_env.env import BrowserEnv

    env = BrowserEnv("open", modalities=("elements", "text"), viewport=(800, 600))
    yield env
    env.close()


@pytest.fixture(scope="session", autouse=True)
def entry_point_schemas() -> None:
    """The Hydra apps whose entry points register their structured config before
    Hydra composes it (``conf/run.yaml``, ``benchmark``, ``compare``,
    ``learner_speed``, ``openai_server``, ``record``: each builds on its
    ``<name>_schema``); tests compose them directly, so they are registered here."""
    from agents.run_config import register_config as register_run
    from benchmarks.compare import register_config as register_compare
    from benchmarks.config import register_config as register_benchmark
    from benchmarks.learner_speed import register_config as register_learner_speed
    from browser_env.record import register_config as register_record
    from serve.openai_server.cli import register_config as register_openai_server

    register_openai_server()
    register_record()
    register_run()
    register_benchmark()
    register_compare()
    register_learner_speed()


@pytest.fixture(scope="session", autouse=True)
def virtual_display():
    """A headed browser (render_mode="human", check_env's render check, the demo
    recorder) needs an X display: start Xvfb when there is none."""
    import shutil
    import subprocess

    if os.environ.get("DISPLAY") or not shutil.which("Xvfb"):
        yield os.environ.get("DISPLAY")
        return
    # Xvfb picks a free display and writes its number to the pipe (xdist
    # workers each start their own)
    read, write = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(write,),
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        raise RuntimeError(f"Xvfb did not start (exit code {proc.wait(timeout=10)})")
    display = f":{number}"
    os.environ["DISPLAY"] = display
    yield display
    proc.terminate()
    proc.wait(timeout=10)
    os.environ.pop("DISPLAY", None)


ROOT = Path(__file__).resolve().parent.parent
_RUN_DIRS = ("outputs", "multirun", "wandb")  # where entry points write by default


def _run_dirs(depth: int = 3) -> set[Path]:
    """The directories (not files) under the checkout's default run dirs, to ``depth``."""
    found: set[Path] = set()
    level = [ROOT / name for name in _RUN_DIRS if (ROOT / name).is_dir()]
    for _ in range(depth):
        found.update(level)
        level = [p for d in level for p in d.iterdir() if p.is_dir()]
    found.update(level)
    return found


@pytest.fixture(autouse=True)
def _leaves_the_checkout_alone():
    """A test writes under its ``tmp_path``, never a run dir into the checkout
    (``outputs/``, ``multirun/``, ``wandb/``, where an entry point's default
    Hydra or wandb dir would put it): pass ``hydra.run.dir=`` or ``output_dir=``."""
    before = _run_dirs()
    yield
    new = sorted(str(p.relative_to(ROOT)) for p in _run_dirs() - before)
    assert not new, f"the test wrote into the checkout: {new}"


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt in the main thread during this test, as
    Ctrl+C does in a terminal, however the test command was started: a shell
    without job control starts a background job (CI's, or ``make test &``)
    with SIGINT ignored, which Python then leaves ignored, and a library may
    have put in a handler of its own. Python's handler is installed and
    SIGINT unblocked for the test, and both put back after."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def open_http_clients():
    """A call returning the ids of the ``httpx.Client`` objects alive and not
    closed (after a collection): compare before and after to catch one that a
    failed call left open."""
    import gc

    import httpx

    def ids() -> set[int]:
        gc.collect()
        return {id(o) for o in gc.get_objects() if isinstance(o, httpx.Client) and not o.is_closed}

    return ids
