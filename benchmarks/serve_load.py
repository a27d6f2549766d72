"""The training service under load, on loopback only.

::

    python -m benchmarks.serve_load                     # 200 reads, 20 uploads, 50 submissions
    python -m benchmarks.serve_load --reads 400 --json load.json

Starts ``python -m serve`` (embedded Ray, a temp state dir, a free port on
127.0.0.1), uploads a dataset and starts one short SFT job on the tiny
model, and while it runs sends ``--reads`` concurrent status/list requests
(job status, job list, dataset list in turn) and ``--uploads`` concurrent
uploads of distinct datasets. Then ``--submissions`` concurrent job
submissions with distinct idempotency keys, and the same keys again. It
checks: no request failed, exactly ``--submissions`` new jobs, the repeated
keys returned the same jobs, and no job was started twice (one attempt per
job, one start line in each job's log). Queued jobs are then cancelled so the
run stays bounded. Prints p50/p95 latencies in ms; exits non-zero on a
failed check.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.arguments import refuse_below, refuse_unwritable
from benchmarks.report import write_json_atomic

__all__ = ["main", "run"]


def _write_episodes(root: Path, seeds: Sequence[int]) -> None:
    """Solved one-step click episodes, written with the real EpisodeWriter."""
    from browser_env.episodes import AgentInfo, EpisodeMeta, EpisodeWriter

    labels = ["ONE", "TWO", "THREE"]
    for seed in seeds:
        target = labels[seed % 3]
        element = dict(
            tag="button",
            role="button",
            label="",
            placeholder="",
            value="",
            bbox=np.array([0, 0, 10, 10], dtype=np.float32),
            enabled=1,
            visible=1,
            focused=0,
            checked=0,
        )
        elements = tuple(
            {**element, "element_id": f"e{i + 1}", "text": t} for i, t in enumerate(labels)
        )
        goal = f'Click on the "{target}" button.'
        obs = {
            "goal": goal,
            "url": "http://localhost/click-button.html",
            "elements": elements,
            "text": " ".join(labels),
            "last_action_error": "",
            "screenshot": np.full((8, 8, 3), seed % 256, dtype=np.uint8),
        }
        meta = EpisodeMeta(
            env_id="browser_env/miniwob.click-button-v0",
            task="click-button",
            seed=seed,
            source="scripted",
            goal=goal,
            agent=AgentInfo(name="expert"),
        )
        writer = EpisodeWriter(root, meta)
        action = {"action": "CLICK", "element_id": f"e{labels.index(target) + 1}"}
        writer.write_step(obs, action, 1.0, True, False, {"success": True})
        writer.close()


def _summary(name: str, latencies: list[float]) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))] if ms else float("nan")
    return {
        "what": name,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1) if ms else float("nan"),
        "p95_ms": round(p95, 1),
        "max_ms": round(ms[-1], 1) if ms else float("nan"),
    }


async def _timed(client: Any, method: str, path: str, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    response = await client.request(method, path, **kwargs)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response.json()


async def _load(url: str, token: str, job_id: str, archives: list[bytes], reads: int) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=reads + len(archives))
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=300, limits=limits, trust_env=False
    ) as client:
        paths = [f"/v1/jobs/{job_id}", "/v1/jobs", "/v1/datasets"]
        read_tasks = [_timed(client, "GET", paths[i % 3]) for i in range(reads)]
        upload_tasks = [_timed(client, "PUT", "/v1/datasets", content=a) for a in archives]
        read_results, upload_results = await asyncio.gather(
            asyncio.gather(*read_tasks, return_exceptions=True),
            asyncio.gather(*upload_tasks, return_exceptions=True),
        )
    everything = [*read_results, *upload_results]
    return {
        "errors": [repr(r) for r in everything if isinstance(r, BaseException)],
        "reads": [r[0] for r in read_results if not isinstance(r, BaseException)],
        "uploads": [r[0] for r in upload_results if not isinstance(r, BaseException)],
        "dataset_ids": {
            r[1]["dataset_id"] for r in upload_results if not isinstance(r, BaseException)
        },
    }


async def _submit_all(url: str, token: str, body: dict, keys: list[str]) -> tuple[list, list]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=url,
        headers=headers,
        timeout=300,
        limits=httpx.Limits(max_connections=len(keys)),
        trust_env=False,
    ) as client:
        tasks = [
            _timed(client, "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": k})
            for k in keys
        ]
        results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    return errors, ok


def run(reads: int = 200, uploads: int = 20, submissions: int = 50, steps: int = 20) -> dict:
    """Run the load; returns ``{"rows": [...], "checks": {...}}``."""
    import io
    import tarfile

    from serve.client import TrainingClient
    from serve.launch import LocalService

    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        episodes = root / "episodes"
        _write_episodes(episodes, range(4))
        archives = []
        for i in range(uploads):
            one = root / f"upload-{i}"
            _write_episodes(one, [100 + i])
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                tar.add(one, arcname=one.name)
            archives.append(buffer.getvalue())
        settings = ["max_concurrent_jobs=1", "poll_interval_s=0.5", "default_num_cpus=0.5"]
        with LocalService(root / "service", token, settings) as service:
            client = TrainingClient(service.url, token, timeout=300)
            dataset = client.upload(episodes)["dataset_id"]
            sft = {"max_steps": steps, "batch_size": 2, "save_steps": 0, "wandb": False}
            job = client.train("sft", [dataset], sft)
            deadline = time.monotonic() + 180
            while client.job(job["job_id"])["status"] == "queued" and time.monotonic() < deadline:
                time.sleep(0.5)
            load = asyncio.run(_load(service.url, token, job["job_id"], archives, reads))
            job_status_during = client.job(job["job_id"])["status"]

            body = {"learner": "sft", "dataset_ids": [dataset], "overrides": {"max_steps": 1}}
            keys = [str(uuid.uuid4()) for _ in range(submissions)]
            before = len(client.jobs())
            errors1, first = asyncio.run(_submit_all(service.url, token, body, keys))
            errors2, second = asyncio.run(_submit_all(service.url, token, body, keys))
            jobs = client.jobs()
            new = [j for j in jobs if j["job_id"] != job["job_id"]]
            first_ids = sorted(b["job_id"] for _, b in first)
            second_ids = sorted(b["job_id"] for _, b in second)
            for j in new:  # bounded: nothing queued is left to run
                if j["status"] in ("queued", "running"):
                    client.cancel(j["job_id"])
            if client.job(job["job_id"])["status"] in ("queued", "running"):
                client.cancel(job["job_id"])
            time.sleep(2)
            jobs = client.jobs()
            starts = {
                j["job_id"]: client.logs(j["job_id"])["text"].count("[serve] job ") for j in jobs
            }
            client.close()
    checks = {
        "no_errors": not load["errors"] and not errors1 and not errors2,
        "job_ran_during_load": job_status_during in ("running", "succeeded"),
        "uploads_distinct": len(load["dataset_ids"]) == uploads,
        "exactly_n_new_jobs": len(jobs) - before == submissions,
        "same_keys_same_jobs": first_ids == second_ids and len(set(first_ids)) == submissions,
        "none_started_twice": all(j["attempts"] <= 1 for j in jobs)
        and all(n <= 1 for n in starts.values()),
    }
    rows = [
        _summary(f"{reads} concurrent status/list", load["reads"]),
        _summary(f"{uploads} concurrent uploads", load["uploads"]),
        _summary(f"{submissions} concurrent submissions", [t for t, _ in first]),
        _summary(f"{submissions} repeated keys", [t for t, _ in second]),
    ]
    return {"rows": rows, "checks": checks, "errors": load["errors"] + errors1 + errors2}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20, help="SFT steps of the job under load")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    refuse_below(parser, args, 0, "reads", "uploads", "submissions")
    refuse_unwritable(parser, args.json, "--json")
    result = run(args.reads, args.uploads, args.submissions, args.steps)
    print(f"{'what':<32} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for row in result["rows"]:
        print(
            f"{row['what']:<32} {row['n']:>4} {row['p50_ms']:>8} {row['p95_ms']:>8} "
            f"{row['max_ms']:>8}"
        )
    for name, passed in result["checks"].items():
        print(f"{'ok  ' if passed else 'FAIL'} {name}")
    for error in result["errors"][:5]:
        print("error:", error)
    if args.json:
        write_json_atomic(args.json, result)
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
