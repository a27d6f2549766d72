"""wandb logging of benchmark runs, and a reader for offline wandb runs.

:func:`log_benchmark` logs one ``benchmarks.run`` result (the ``results.json``
content): the run's config, one history row per episode (``episode/success``,
``episode/steps``, ``episode/return``, ``episode/tokens``,
``episode/agent_ms_per_step``, keyed by the episode's index), a ``tasks``
table and the summary (``success_rate``, ``mean_steps``, ``mean_tokens`` and
``task/<name>/success_rate``). Like the learners (:mod:`learners.tracking`) it
is offline unless ``WANDB_API_KEY`` is set; ``WANDB_MODE`` wins; the run goes
under ``<run dir>/wandb/``, where ``wandb sync`` uploads it later.

:func:`read_offline_run` reads such a run back without a server. wandb (from
0.2x, when its Go core took over) no longer ships a Python reader for its
``.wandb`` files, so this is a short one: the file is a LevelDB log (7-byte
file header ``:W&B`` + magic + version, then 32 KiB blocks of records with a
7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST) whose payloads are
``wandb.proto.wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from learners.tracking import finish_run, init_run, wandb_mode

__all__ = ["log_benchmark", "read_offline_run", "wandb_mode"]

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def log_benchmark(
    data: Mapping[str, Any], out: str | os.PathLike[str], *, project: str, name: str | None = None
) -> Path | None:
    """Log a ``benchmarks.run`` result to wandb; returns the run's local directory
    (``None`` when ``WANDB_MODE=disabled``)."""
    if wandb_mode() == "disabled":
        return None
    import wandb

    out = Path(out)
    run = init_run(
        project=project,
        name=name or f"{data['agent']}-{data['suite']}-{out.name}",
        dir=str(out),
        config={
            **dict(data.get("config") or {}),
            "agent_name": data["agent"],
            "suite_name": data["suite"],
        },
        job_type="benchmark",
    )
    try:
        for index, episode in enumerate(data["episodes"]):
            steps = max(1, int(episode["steps"]))
            run.log(
                {
                    "episode/success": float(episode["success"]),
                    "episode/steps": int(episode["steps"]),
                    "episode/return": float(episode["episode_return"]),
                    "episode/tokens": int(episode.get("prompt_tokens", 0))
                    + int(episode.get("completion_tokens", 0)),
                    "episode/agent_ms_per_step": sum(episode["agent_ms"]) / steps,
                },
                step=index,
            )
        columns = ["task", "episodes", "success_rate", "mean_steps", "mean_reward"]
        run.log(
            {
                "tasks": wandb.Table(
                    columns=columns, data=[[t[c] for c in columns] for t in data["tasks"]]
                )
            }
        )
        overall = data["overall"]
        run.summary.update(
            {
                "success_rate": overall["success_rate"],
                "mean_steps": overall["mean_steps"],
                "mean_tokens": overall.get("mean_tokens", 0.0),
                "episodes": overall["episodes"],
                **{f"task/{t['task']}/success_rate": t["success_rate"] for t in data["tasks"]},
            }
        )
    finally:
        directory = finish_run(run)
    return directory


def _finished_records(path: Path, timeout_s: float) -> list[bytes]:
    """The records of ``path`` once its last one is the exit record."""
    import time

    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout_s
    while True:
        records = _records(path)
        if records:
            last = wandb_internal_pb2.Record()
            try:
                last.ParseFromString(records[-1])
            except Exception:  # noqa: BLE001 - a fragment of a record being written
                pass
            else:
                if last.WhichOneof("record_type") == "exit":
                    return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout_s:g} s (run not finished?)")
        time.sleep(0.1)


def _records(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    if raw[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb run file (no :W&B header)")
    records, pending, offset = [], b"", 7
    while offset + 7 <= len(raw):
        room = _BLOCK - offset % _BLOCK
        if room < 7:  # a block trailer: zero padding too short for a header
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", raw[offset : offset + 7])
        if offset + 7 + length > len(raw):  # a record still being written
            break
        payload = raw[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:  # zero padding up to the end of a block
            offset += _BLOCK - offset % _BLOCK if offset % _BLOCK else 0
            continue
        if kind == _FULL:
            records.append(payload)
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            records.append(pending + payload)
            pending = b""
    return records


def read_offline_run(directory: str | os.PathLike[str], timeout_s: float = 30.0) -> dict[str, Any]:
    """``{"config", "history", "summary"}`` of a finished offline run: ``directory``
    is the run's ``offline-run-*`` dir or any dir above exactly one of them.
    History is a list of ``{key: value}`` rows (with ``_step``); values are
    decoded JSON. Waits up to ``timeout_s`` for wandb to finish writing the
    file (its exit record); ``TimeoutError`` if it does not."""
    from wandb.proto import wandb_internal_pb2

    root = Path(directory)
    files = sorted(root.rglob("*.wandb"))
    if len(files) != 1:
        raise ValueError(f"expected one .wandb file under {root}, found {len(files)}")
    # wandb's own process may still be writing the file after run.finish()
    # returned (seen once in ~25 offline runs: the run record was missing):
    # a finished run's file ends with an exit record
    records = _finished_records(files[0], timeout_s)
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}

    def key(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    for payload in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):  # the run record carries the config of wandb.init
            update = record.run.config.update if kind == "run" else record.config.update
            config.update({key(i): json.loads(i.value_json) for i in update})
        elif kind == "history":
            history.append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({key(i): json.loads(i.value_json) for i in record.summary.update})
    return {"config": config, "history": history, "summary": summary}
