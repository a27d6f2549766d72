"""Batched against one-at-a-time generation on recorded rollout prompts, on any device.

::

    python -m benchmarks.policy_batching record --out prompts.json   # needs Chromium
    python -m benchmarks.policy_batching replay prompts.json --device cuda --out result.json

``record`` plays the tiny policy (``agent=tiny``) with ``runner=vector`` on one
MiniWoB++ task and keeps the prompts of every batched policy call (one call a
step, 2 to N prompts of N episodes), with the sampling they were decoded with.
A step with one episode left running calls ``generate`` alone and is not
kept: these figures are those of the steps batching can serve.

``replay`` needs no browser, so it runs where the model should: it loads the
transformers backend on ``--device`` and plays the recorded calls, in order,
three ways, each from an empty prefix cache after one untimed pass:

* ``batched``: ``generate_batch`` with the prefix cache of ``conf/agent/tiny.yaml``,
  which prefills each row alone on any device
  (:mod:`agents.backends.row_prefill`);
* ``batched-padded``: ``generate_batch`` with ``prefill="padded"`` and no prefix
  cache (one left-padded forward pass: what ``prefill="auto"`` does on an
  accelerator when the prefix cache is off);
* ``one-by-one``: ``generate`` per prompt with the prefix cache (``runner=vector``
  with N = 1, or an unbatched policy).

It prints decisions per second and milliseconds per call for each, how each
prefilled (``info["prefill"]`` of its generations; ``alone`` for ``generate``),
and how many decisions each way agrees on with ``one-by-one`` (greedy decoding:
all of them in float32; a lower-precision dtype can flip a near tie). The env's own
time is not in these figures: ``benchmarks.rollout_speed`` (``policy`` rows)
measures whole rollouts on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.arguments import refuse_unwritable, unknown_tasks
from benchmarks.report import write_json_atomic

__all__ = ["MODES", "main", "record", "replay"]

MODES = ("batched", "batched-padded", "one-by-one")


def record(task: str, n: int, episodes: int, out: str | os.PathLike[str]) -> dict[str, Any]:
    """Play ``episodes`` episodes per env of the tiny policy on ``task`` with
    ``runner=vector, workers=n`` and write every batched call's prompts to ``out``."""
    import dataclasses

    from agents.backends.common import row_samplings
    from agents.runners import Job, RolloutEngine, RolloutSpec
    from benchmarks.backends import tiny_agent

    agent = tiny_agent()
    calls: list[list[Any]] = []
    sampling: dict[str, Any] = {}
    backend = agent.backend
    inner = backend.generate_batch

    def recording(batch, images=None, sampling_params=None):
        calls.append([list(messages) for messages in batch])
        rows = row_samplings(sampling_params, len(batch))  # one per row: each episode's seed
        sampling.update(dataclasses.asdict(rows[0]), seed=None)
        return inner(batch, images, sampling_params)

    backend.generate_batch = recording
    env_id = f"browser_env/miniwob.{task}-v0"
    spec = RolloutSpec(env_kwargs={"modalities": ("elements", "text")})
    try:
        with RolloutEngine(spec, agent=agent, runner="vector", workers=n) as engine:
            results = engine.run([Job(env_id, 1000 + i) for i in range(n * episodes)])
    finally:
        backend.generate_batch = inner
        agent.close()
    data = {
        "task": task,
        "n": n,
        "episodes": len(results),
        "steps": sum(r.steps for r in results),
        "sampling": sampling,
        "calls": calls,
    }
    write_json_atomic(out, data)
    return data


def replay(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    prefix_cache: int = 16,
) -> dict[str, Any]:
    """Time the recorded calls three ways (:data:`MODES`) on ``device``; see the module
    docstring. ``model``: default the tiny policy's (``agents.pretrained``)."""
    from agents.backends.base import SamplingParams
    from agents.backends.transformers import TransformersBackend
    from agents.pretrained import path as pretrained_path

    data = json.loads(Path(path).read_text())
    calls = data["calls"]
    if not calls:
        raise ValueError(f"{path} holds no recorded calls")
    sampling = SamplingParams(**{**data["sampling"], "stop": tuple(data["sampling"]["stop"])})
    model = model or pretrained_path("tiny-miniwob")
    settings = {
        "batched": {"prefill": "auto", "prefix_cache": prefix_cache},
        "batched-padded": {"prefill": "padded", "prefix_cache": 0},
        "one-by-one": {"prefill": "auto", "prefix_cache": prefix_cache},
    }
    rows, outputs = [], {}
    for mode in MODES:
        backend = TransformersBackend(model, device=device, dtype=dtype, **settings[mode])
        try:
            _play(backend, calls, sampling, mode)  # untimed: kernels, allocator, caches warm up
            if backend.prefix_cache is not None:
                backend.prefix_cache.clear()
            start = time.perf_counter()
            outputs[mode], prefills = _play(backend, calls, sampling, mode)
            wall = time.perf_counter() - start
        finally:
            backend.close()
        decisions = sum(len(call) for call in calls)
        rows.append(
            {
                "mode": mode,
                "prefill": sorted(prefills),
                "decisions_per_s": decisions / wall,
                "ms_per_call": wall * 1e3 / len(calls),
                "wall_s": wall,
            }
        )
    reference = outputs["one-by-one"]
    for row in rows:
        same = sum(a == b for a, b in zip(outputs[row["mode"]], reference, strict=True))
        row["agrees_with_one_by_one"] = same
    return {
        "model": model,
        "device": device,
        "dtype": dtype,
        "device_name": _device_name(device),
        "calls": len(calls),
        "decisions": sum(len(call) for call in calls),
        "largest_batch": max(len(call) for call in calls),
        "rows": rows,
    }


def _play(
    backend: Any, calls: Sequence[Any], sampling: Any, mode: str
) -> tuple[list[list[int]], set[str]]:
    """Every decision's generated token ids, ``calls`` played ``mode``'s way, and
    how the generations prefilled."""
    out: list[list[int]] = []
    prefills: set[str] = set()
    for batch in calls:
        if mode == "one-by-one":
            generations = [backend.generate(messages, sampling=sampling) for messages in batch]
        else:
            generations = backend.generate_batch(batch, sampling=sampling)
        out.extend(g.token_ids for g in generations)
        prefills.update(str(g.info.get("prefill", "alone")) for g in generations)
    return out, prefills


def _device_name(device: str) -> str:
    import platform

    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def report(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`replay`'s result."""
    lines = [
        f"{result['decisions']} decisions in {result['calls']} calls (up to "
        f"{result['largest_batch']} a call), {result['device']} ({result['device_name']}), "
        f"{result['dtype']}",
        "",
        "| mode | prefill | decisions/s | ms per call | same tokens as one-by-one |",
        "|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['mode']} | {', '.join(row.get('prefill', []))} | "
            f"{row['decisions_per_s']:.1f} | {row['ms_per_call']:.1f} | "
            f"{row['agrees_with_one_by_one']}/{result['decisions']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.policy_batching")
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="record the tiny policy's batched calls")
    rec.add_argument("--out", required=True, help="JSON file to write")
    rec.add_argument("--task", default="click-checkboxes")
    rec.add_argument("--n", type=int, default=8, help="envs (largest batch)")
    rec.add_argument("--episodes", type=int, default=2, help="episodes per env")
    rep = commands.add_parser("replay", help="time the recorded calls three ways")
    rep.add_argument("prompts", help="a file written by record")
    rep.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    rep.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto")
    )
    rep.add_argument("--model", default=None, help="model directory (default: the tiny policy)")
    rep.add_argument("--out", default=None, help="also write the result here as JSON")
    args = parser.parse_args(argv)
    if args.command == "record":
        if args.n < 2 or args.episodes < 1:
            parser.error("--n must be >= 2 and --episodes >= 1")
        if unknown_tasks([args.task]):
            parser.error(f"--task: no such MiniWoB++ task: {args.task}")
        refuse_unwritable(parser, args.out, "--out")
        data = record(args.task, args.n, args.episodes, args.out)
        print(f"{len(data['calls'])} calls, {data['steps']} steps -> {args.out}")
        return data
    if not Path(args.prompts).is_file():
        parser.error(f"no such prompts file: {args.prompts}")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        parser.error(f"--device takes cpu, cuda or cuda:N, got {args.device!r}")
    if args.model is not None:
        from agents.models import check_model

        try:
            check_model(args.model, "--model", adapter_option=None)
        except ValueError as error:
            parser.error(str(error))
    refuse_unwritable(parser, args.out, "--out")
    result = replay(args.prompts, model=args.model, device=args.device, dtype=args.dtype)
    print(report(result))
    if args.out:
        write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
