"""The tables and target lines that ``python -m benchmarks.rollout_speed`` prints
from its rows (:mod:`benchmarks.rollout_speed` measures them)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["report"]


def report(
    rows: Sequence[dict[str, Any]],
    runners: Sequence[dict[str, Any]] = (),
    policy: Sequence[dict[str, Any]] = (),
) -> str:
    """The browser-row table with the issue's ratios, then the runner and policy
    tables (each with its target line) when there are such rows."""
    parts = [_table(rows)]
    summary = _ratios(rows)
    if summary:
        parts.append(summary)
    if runners:
        parts += ["", _runner_table(runners)]
    if policy:
        parts += ["", _policy_table(policy)]
    return "\n".join(parts)


def _table(rows: Sequence[dict[str, Any]]) -> str:
    one = {(r["mode"]): r for r in rows if r["n"] == 1}
    lines = [
        "| runner | N | steps/s | episodes/s | CPU-ms/step | PSS MiB | PSS/extra env MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = one.get(r["mode"])
        extra = (
            f"{(r['pss_mib'] - base['pss_mib']) / (r['n'] - 1):.0f}"
            if base is not None and r["n"] > 1
            else "-"
        )
        lines.append(
            f"| {r['mode']} | {r['n']} | {r['steps_per_s']:.1f} | {r['episodes_per_s']:.2f} | "
            f"{r['cpu_ms_per_step']:.1f} | {r['pss_mib']:.0f} | {extra} |"
        )
    return "\n".join(lines)


def _ratios(rows: Sequence[dict[str, Any]]) -> str:
    """The issue's ratios: shared N=max against one env, and memory per extra env."""
    by = {(r["mode"], r["n"]): r for r in rows}
    one = by.get(("shared", 1))
    n = max((r["n"] for r in rows if r["mode"] == "shared"), default=1)
    shared = by.get(("shared", n))
    if one is None or shared is None or n == 1:
        return ""
    rounds = _round_ratios(shared, one, "cpu_ms_per_step")
    spread = f", rounds x{rounds[0]:.2f}-{rounds[-1]:.2f}" if len(rounds) > 1 else ""
    line = (
        f"\nshared N={n} vs one env: CPU-ms/step x{shared['cpu_ms_per_step'] / one['cpu_ms_per_step']:.2f} "
        f"(target <= 0.8{spread}), steps/s x{shared['steps_per_s'] / one['steps_per_s']:.2f} "
        "(target >= 1.0)"
    )
    seq = by.get(("shared-seq", n))
    if seq is not None:
        line += (
            f"; stepped one after another: CPU-ms/step x{seq['cpu_ms_per_step'] / one['cpu_ms_per_step']:.2f}, "
            f"steps/s x{seq['steps_per_s'] / one['steps_per_s']:.2f}"
        )
    separate, separate_one = by.get(("separate", n)), by.get(("separate", 1))
    if separate is not None and separate_one is not None:
        per_env = (shared["pss_mib"] - one["pss_mib"]) / (n - 1)
        per_sep = (separate["pss_mib"] - separate_one["pss_mib"]) / (n - 1)
        line += (
            f"\nPSS per extra env: shared {per_env:.0f} MiB, separate {per_sep:.0f} MiB "
            f"(x{per_env / per_sep:.2f}, target <= 0.33); separate N={n} steps/s "
            f"x{separate['steps_per_s'] / separate_one['steps_per_s']:.2f} of one env"
        )
    return line


def _runner_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| engine (random clicks) | workers x envs | ms/episode | episodes/s | steps/s "
        "| CPU-ms/step | PSS MiB | start-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| runner={r['runner']} | {r['workers']} x {r['envs_per_worker']} | "
            f"{r['ms_per_episode']:.0f} | {r['episodes_per_s']:.2f} | {r['steps_per_s']:.1f} | "
            f"{r['cpu_ms_per_step']:.1f} | {r['pss_mib']:.0f} | {r['startup_s']:.1f} |"
        )
    local = next((r for r in rows if r["runner"] == "local"), None)
    ray = next((r for r in rows if r["runner"] == "ray" and r["workers"] == 1), None)
    if local is not None and ray is not None:
        overhead = ray["ms_per_episode"] / local["ms_per_episode"] - 1
        lines.append("")
        lines.append(
            f"runner=ray overhead per episode at workers=1: {100 * overhead:+.1f}% "
            f"({ray['ms_per_episode']:.0f} vs {local['ms_per_episode']:.0f} ms; target <= +15%); "
            f"CPU per step {100 * (ray['cpu_ms_per_step'] / local['cpu_ms_per_step'] - 1):+.1f}% "
            "(Ray's own processes included)"
        )
    return "\n".join(lines)


def _policy_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| tiny policy, runner=vector | N | episodes/s | steps/s | model ms/step | start-up s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = "batched" if r["batched"] else "unbatched"
        lines.append(
            f"| {label} | {r['n']} | {r['episodes_per_s']:.2f} | {r['steps_per_s']:.1f} | "
            f"{r['model_ms_per_step']:.0f} | {r['startup_s']:.1f} |"
        )
    batched = {r["n"]: r for r in rows if r["batched"]}
    if len(batched) > 1:
        low, high = min(batched), max(batched)
        # per round (the rows took turns): a drifting machine weighs on both alike
        ratios = _round_ratios(batched[high], batched[low], "episodes_per_s")
        spread = f", rounds {ratios[0]:.2f}-{ratios[-1]:.2f}" if len(ratios) > 1 else ""
        lines.append(
            f"tiny policy, batched N={high} vs N={low}: episodes/s x{statistics.median(ratios):.2f} "
            f"(median of the rounds' ratios{spread}; target >= 2.5)"
        )
    return "\n".join(lines)


def _round_ratios(high: dict[str, Any], low: dict[str, Any], key: str) -> list[float]:
    """``high``'s figure over ``low``'s, round by round (``key + "_runs"``, the
    rows having taken turns), sorted; the rows' own figures without rounds."""
    pairs = zip(
        high.get(f"{key}_runs", [high[key]]), low.get(f"{key}_runs", [low[key]]), strict=False
    )
    return sorted(h / lo for h, lo in pairs)
