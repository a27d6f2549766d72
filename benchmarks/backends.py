"""Comparing inference backends on one model: what ``notebooks/compare_backends.ipynb`` calls.

::

    obs = probe_observations(["browser_env/miniwob.click-tab-v0"], seeds=[0, 1])
    with OpenAIServer(model) as server:
        for kind in ("transformers", "mlx", "openai"):
            backend, load_s = load_backend(kind, model, base_url=server.base_url)
            probes[kind] = probe(kind, backend, obs, load_s=load_s)
    agreement({k: p.actions for k, p in probes.items()})

A probe acts once, greedily, on each of a fixed list of first observations
(the same prompts for every backend) and keeps load time, latency per action,
generated tokens per second and the actions; :func:`agreement` is the share of
observations on which a backend chose exactly the reference backend's action.
:func:`suite_success` rolls a backend over a suite with ``benchmarks.run``.
The agent is the one ``conf/agent/tiny.yaml`` builds (its prompt and
sampling settings) with the backend swapped, so every backend gets the same
prompts.

:data:`SERVER_COMMAND` is the one place that knows how the project's
OpenAI-compatible server is started.

Jupyter runs an asyncio loop in the kernel's main thread, and Playwright's
sync API refuses to start there; :func:`off_loop` runs browser work in a
worker thread when a loop is running (the env is created, used and closed in
that one thread, as Playwright requires).
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agents.rollout import token_usage

__all__ = [
    "BACKENDS",
    "SERVER_COMMAND",
    "OpenAIServer",
    "Probe",
    "agent_settings",
    "agreement",
    "load_backend",
    "off_loop",
    "probe",
    "probe_observations",
    "run_benchmark",
    "suite_success",
    "unavailable_reason",
]

T = TypeVar("T")
CONF = Path(__file__).resolve().parents[1] / "conf"
BACKENDS = ("transformers", "mlx", "openai", "tensorrt")
#: How the OpenAI-compatible server is started (``python -m <module> key=value ...``).
SERVER_COMMAND = (sys.executable, "-m", "serve.openai_server")


def off_loop(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, in a worker thread when this thread runs an
    asyncio loop (a notebook kernel), else directly."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args, **kwargs)
    with ThreadPoolExecutor(1, thread_name_prefix="browser") as pool:
        return pool.submit(fn, *args, **kwargs).result()


def unavailable_reason(kind: str) -> str | None:
    """Why ``kind`` cannot run on this machine, or None when it can."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; expected one of {', '.join(BACKENDS)}")
    if kind == "mlx" and importlib.util.find_spec("mlx_lm") is None:
        return 'mlx-lm is not installed (pip install "browser-rl[mlx]")'
    if kind == "tensorrt":
        if importlib.util.find_spec("tensorrt_llm") is None:
            return "tensorrt_llm is not installed (it needs Linux with a CUDA GPU; PyPI holds only a placeholder)"
        import torch

        if not torch.cuda.is_available():
            return "TensorRT-LLM needs a CUDA GPU and none is visible"
    if kind == "openai" and importlib.util.find_spec("uvicorn") is None:
        return 'the server needs uvicorn and fastapi (pip install "browser-rl[api]")'
    return None


def _backend_config(kind: str, model: str, **overrides: Any) -> Any:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / "backend" / f"{kind}.yaml")
    cfg.model = model
    if kind == "transformers":  # what the embedded policy and the server use on CPU
        cfg.device, cfg.dtype = "cpu", "float32"
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def load_backend(kind: str, model: str, **overrides: Any) -> tuple[Any, float]:
    """Build backend ``kind`` for ``model`` from ``conf/backend/<kind>.yaml``;
    returns it and its load time in seconds. For ``openai`` pass ``base_url``
    (``model`` is then the served name; no API key is sent)."""
    from hydra.utils import instantiate

    reason = unavailable_reason(kind)
    if reason:
        raise RuntimeError(f"backend {kind} is unavailable: {reason}")
    if kind == "openai":
        if "base_url" not in overrides:
            raise ValueError("the openai backend needs base_url=")
        overrides = {"api_key_env": "", "return_token_ids": True, **overrides}
        model = os.path.basename(os.path.normpath(model))  # the server's default served name
    start = time.perf_counter()
    backend = instantiate(_backend_config(kind, model, **overrides))
    return backend, time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpenAIServer:
    """The project's OpenAI-compatible server over transformers, as a subprocess
    on 127.0.0.1 (the way a user runs it). ``load_s`` is the time from start to
    the first healthy answer."""

    def __init__(self, model: str, *, timeout: float = 180.0) -> None:
        self.model = os.path.abspath(model)
        self.timeout = timeout
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.load_s = 0.0
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._run_dir = tempfile.TemporaryDirectory(prefix="openai-server-")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        command = [
            *SERVER_COMMAND,
            f"model={self.model}",
            f"port={self.port}",
            "backend.device=cpu",
            "backend.dtype=float32",
            "log_level=warning",
            f"hydra.run.dir={self._run_dir.name}",
        ]
        start = time.perf_counter()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        atexit.register(self.stop)  # a notebook kernel that dies mid-way leaves no server behind
        while time.perf_counter() - start < self.timeout:
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(
                    f"the server exited: {self._log.read()[-2000:].decode(errors='replace')}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    self.load_s = time.perf_counter() - start
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the server did not answer within {self.timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        atexit.unregister(self.stop)
        self._log.close()
        self._run_dir.cleanup()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def probe_observations(
    env_ids: Sequence[str], seeds: Sequence[int], **env_kwargs: Any
) -> list[dict[str, Any]]:
    """The first observation of each (env id, seed), text and elements only."""
    return off_loop(_first_observations, env_ids, seeds, env_kwargs)


def _first_observations(
    env_ids: Sequence[str], seeds: Sequence[int], env_kwargs: Mapping[str, Any]
) -> list[dict[str, Any]]:
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the ids

    observations = []
    for env_id in env_ids:
        with gym.make(env_id, modalities=("elements", "text"), **env_kwargs).unwrapped as env:
            for seed in seeds:
                obs, _ = env.reset(seed=seed)
                observations.append(obs)
    return observations


def agent_settings() -> dict[str, Any]:
    """The composed ``agent=tiny`` config (prompt, guards, sampling, parse
    failures) without its backend: the settings every probed backend gets."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from benchmarks.config import register_config

    register_config()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=["agent=tiny"])
    settings = OmegaConf.to_container(cfg.agent, resolve=True)
    return {k: settings[k] for k in ("prompt", "guards", "sampling", "max_parse_failures")}


def tiny_agent() -> Any:
    """The agent ``agent=tiny`` builds, with its own backend (``conf/agent/tiny.yaml``)."""
    from hydra import compose, initialize_config_dir

    from agents.run import build_agent
    from benchmarks.config import register_config

    register_config()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return build_agent(compose(config_name="benchmark", overrides=["agent=tiny"]))


def _agent(backend: Any) -> Any:
    """The agent of ``agent=tiny`` (prompt, guards, sampling) over ``backend``."""
    from agents.agent import LLMAgent

    return LLMAgent(backend, **agent_settings())


@dataclasses.dataclass
class Probe:
    """One backend's greedy actions on the probe observations, and their cost."""

    backend: str
    load_s: float
    latency_ms: list[float]
    completion_tokens: int
    generate_s: float
    actions: list[dict[str, Any]]

    @property
    def median_latency_ms(self) -> float:
        return statistics.median(self.latency_ms) if self.latency_ms else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.generate_s if self.generate_s > 0 else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "load s": round(self.load_s, 2),
            "latency ms/action (median)": round(self.median_latency_ms, 1),
            "tokens/s": round(self.tokens_per_s, 1),
            "actions": len(self.actions),
        }


def probe(
    name: str, backend: Any, observations: Sequence[Mapping[str, Any]], *, load_s: float = 0.0
) -> Probe:
    """Act once, greedily, on each observation (a fresh episode each time, so
    every backend sees exactly the same prompt)."""
    agent = _agent(backend)
    latency, actions = [], []
    tokens, generate_s = 0, 0.0
    for obs in observations:
        agent.reset(str(obs["goal"]), seed=0)
        start = time.perf_counter()
        action, info = agent.act(obs)
        latency.append((time.perf_counter() - start) * 1e3)
        actions.append(action.to_dict())
        tokens += token_usage(info)[1]
        generate_s += float(info.get("latency_s") or 0.0)
    return Probe(name, load_s, latency, tokens, generate_s, actions)


def agreement(
    actions: Mapping[str, Sequence[Mapping[str, Any]]], reference: str = "transformers"
) -> dict[str, float]:
    """Share of probes on which each backend chose exactly ``reference``'s action."""
    if reference not in actions:
        raise ValueError(f"no actions of the reference backend {reference!r}")
    ref = actions[reference]
    out = {}
    for name, acts in actions.items():
        if len(acts) != len(ref):
            raise ValueError(f"{name} has {len(acts)} actions, {reference} {len(ref)}")
        out[name] = sum(a == b for a, b in zip(acts, ref, strict=True)) / len(ref) if ref else 0.0
    return out


def suite_success(
    kind: str,
    model: str,
    *,
    suite: str,
    tasks: Sequence[str] | None = None,
    episodes: int = 1,
    output_dir: str | os.PathLike[str],
    base_url: str | None = None,
) -> dict[str, Any]:
    """Roll the agent over ``suite`` with backend ``kind`` (``benchmarks.run``,
    text and elements only, nothing recorded); returns ``results.json``'s content."""
    overrides = [
        "agent=llm",
        f"backend={kind}",
        f"suite={suite}",
        f"episodes={episodes}",
        "record=false",
        "wandb=false",
        "progress=false",
        "modalities=[elements,text]",
        f"output_dir={os.fspath(output_dir)}",
        "agent.prompt.use_screenshot=false",
        "agent.sampling.max_new_tokens=40",
    ]
    if tasks:
        overrides.append(f"suite.tasks=[{','.join(tasks)}]")
    if kind == "openai":
        if base_url is None:
            raise ValueError("the openai backend needs base_url=")
        model = os.path.basename(os.path.normpath(model))
        overrides += [f"backend.base_url={base_url}", "backend.api_key_env=''"]
    elif kind == "transformers":
        overrides += ["backend.device=cpu", "backend.dtype=float32"]
    overrides.append(f"model={model}")
    return run_benchmark(overrides)


def run_benchmark(overrides: Sequence[str]) -> dict[str, Any]:
    """``python -m benchmarks.run <overrides>`` in this process; returns
    ``results.json``'s content (set ``output_dir=`` to choose where it goes)."""
    from hydra import compose, initialize_config_dir

    from benchmarks.run import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=list(overrides))
    return off_loop(run, cfg)
