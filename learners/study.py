"""The learning study of issue 15, as one command (the SDFT paper's continual-learning setting).

::

    python -m learners.study model=smollm2-135m demos=[runs/expert] \\
        base_tasks=[click-button,click-link,focus-text] new_tasks=[click-tab,click-dialog-2]

From recorded expert episodes (``demos``; e.g. ``python -m benchmarks.run
agent=expert``), split by seed into train / validation / test:

1. **Stage A** (base skills): SFT on the base tasks' train demos, so the model
   speaks the action language. Measured before and after on the base tasks.
2. **Precondition**: on the new tasks, the stage-A model as the teacher (the
   expert's action in its prompt) against the same model as the student. SDFT
   distils the gap; with no gap it has nothing to distil, and the report says so.
3. **Stage B** (new tasks), from the stage-A adapter, with the same demos and
   the same optimiser-step budget: ``sft``, ``sdft``, ``sft+sdft`` (half the
   steps each) and ``grpo`` (binary success reward on the live env's train
   seeds; needs Chromium).
4. **Selection and test**: every checkpoint of a stage-B run is scored on the
   validation seeds; the best is scored once on the test seeds, which no
   choice touched. Reported with the number of decisions and Wilson 95% CIs.
5. **Forgetting**: the base tasks' test accuracy after stage B against after
   stage A, and the perplexity of a fixed text before and after.
6. **Cost**: seconds per optimiser step and peak resident memory (CUDA: peak
   allocated) of each algorithm.

The score is first-action accuracy: greedy decoding on the first step of each
held-out episode, counted right when the action equals the expert's
(:func:`learners.samples.action_matches`). It needs no browser, so the study is
cheap to repeat; the env-level success of an adapter is what
``benchmarks.run`` measures.

Writes ``results.json``, ``results.md`` (the table) and ``curves.png`` (the
training loss of each algorithm and the validation accuracy of its
checkpoints) into ``output_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from browser_env.cli_help import help_field as _f
from learners.study_metrics import PeakMemory, first_action_accuracy, perplexity, wilson
from learners.study_report import save_results, write_report

__all__ = ["StudyConfig", "first_action_accuracy", "main", "perplexity", "run", "wilson"]

ALGORITHMS = ("sft", "sdft", "sft+sdft", "grpo")


@dataclasses.dataclass
class StudyConfig:
    """Every knob of the study; the defaults are the budget measured on a 2-core
    CPU (``docs/learners.md``, *The learning study*: about an hour)."""

    model: str = _f("smollm2-135m", "Base model: preset (agents.models), local dir or hub id.")
    demos: list[str] = _f(
        [], "Dirs of recorded expert episodes (e.g. python -m benchmarks.run agent=expert)."
    )
    base_tasks: list[str] = _f(
        ["click-button", "click-link", "focus-text"], "Stage A's tasks: the base skills."
    )
    new_tasks: list[str] = _f(
        ["click-dialog-2", "click-tab", "focus-text-2"], "Stage B's tasks: the new skills."
    )
    # Seed splits, each a half-open range [start, stop) of the demos' episode seeds.
    train_seeds: list[int] = _f([0, 1000], "Training seeds: [start, stop) of the demos' seeds.")
    val_seeds: list[int] = _f(
        [1000, 1005], "Validation seeds [start, stop): they pick each run's best checkpoint."
    )
    test_seeds: list[int] = _f(
        [2000, 2012], "Test seeds [start, stop): scored once, on the selected checkpoints."
    )
    algorithms: list[str] = _f(list(ALGORITHMS), "Stage B's arms: sft | sdft | sft+sdft | grpo.")
    stage_a_steps: int = _f(30, "Optimiser steps of stage A (SFT on the base tasks).")
    stage_b_steps: int = _f(12, "Optimiser steps of each stage-B arm (sft+sdft: half each).")
    save_steps: int = _f(4, "Stage-B checkpoint interval; each is scored on the validation seeds.")
    batch_size: int = _f(4, "Batch size of every learner.")
    lora_r: int = _f(8, "LoRA rank.")
    sft_learning_rate: float = _f(3e-4, "SFT learning rate (stage A and the sft arms).")
    sdft_learning_rate: float = _f(1e-4, "SDFT learning rate.")
    grpo_learning_rate: float = _f(1e-5, "GRPO learning rate.")
    max_new_tokens: int = _f(40, "Tokens generated per scored decision at most.")
    prompt: dict[str, Any] = _f(
        {"budget_tokens": 700, "max_history": 2, "max_text_chars": 400},
        "Prompt settings of training and scoring (agents.agent.PromptConfig's keys).",
    )
    device: str = _f("cpu", "auto | cpu | cuda | cuda:N.")
    seed: int = _f(0, "Seed of every learner.")
    output_dir: str | None = _f(
        None, "Where results.json, results.md, curves.png and the runs go; null: outputs/study."
    )
    progress: bool = _f(True, "Progress bars.")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.algorithms) - set(ALGORITHMS))
        if unknown:
            raise ValueError(f"unknown algorithms {unknown}; known: {list(ALGORITHMS)}")
        if not self.demos:
            raise ValueError("no demos: set demos=[DIR, ...] (recorded expert episodes)")
        for name in ("train", "val", "test"):
            bounds = getattr(self, f"{name}_seeds")
            if len(bounds) != 2 or bounds[0] >= bounds[1]:
                raise ValueError(
                    f"{name}_seeds must be [start, stop) with start < stop, got {bounds}"
                )
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            (a0, a1), (b0, b1) = getattr(self, f"{a}_seeds"), getattr(self, f"{b}_seeds")
            if a0 < b1 and b0 < a1:
                raise ValueError(f"{a}_seeds {[a0, a1]} and {b}_seeds {[b0, b1]} overlap")
        for name in ("stage_a_steps", "stage_b_steps", "save_steps", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if "sft+sdft" in self.algorithms and self.stage_b_steps < 2:
            raise ValueError(
                f"stage_b_steps must be >= 2 with the sft+sdft arm (half SFT, half SDFT), "
                f"got {self.stage_b_steps}"
            )

    def seeds(self, split: str) -> range:
        start, stop = getattr(self, f"{split}_seeds")
        return range(start, stop)


def _samples(cfg: StudyConfig, tasks: list[str], split: str, backend: Any) -> list[Any]:
    from learners.samples import iter_samples

    wanted = cfg.seeds(split)
    return list(
        iter_samples(
            cfg.demos,
            success_only=True,
            tasks=tasks,
            where=lambda e: e.meta.seed in wanted,
            prompt=cfg.prompt,
            backend=backend,
        )
    )


def _first_steps(samples: list[Any]) -> list[Any]:
    return [
        s for s in samples if s.step == min(t.step for t in samples if t.episode_id == s.episode_id)
    ]


def _stage_b_dir(out: Path, algorithm: str) -> Path:
    return out / "stage_b" / algorithm.replace("+", "_then_")


def _learner_dirs(cfg: StudyConfig, out: Path) -> list[Path]:
    """The output dir of every learner run of the study, in ``out``."""
    dirs = [out / "stage_a"]
    for algorithm in cfg.algorithms:
        folder = _stage_b_dir(out, algorithm)
        dirs += [folder / "sft", folder / "sdft"] if algorithm == "sft+sdft" else [folder]
    return dirs


def _learner_config(cfg: StudyConfig, out: Path, **values: Any) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "device": cfg.device,
        "seed": cfg.seed,
        "lora_r": cfg.lora_r,
        "lora_alpha": 2 * cfg.lora_r,
        "batch_size": cfg.batch_size,
        "prompt": dict(cfg.prompt),
        "episodes": list(cfg.demos),
        "wandb": False,
        "progress": cfg.progress,
        "output_dir": str(out),
        "save_total_limit": 100,
        **values,
    }


def run(cfg: StudyConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Run the study; returns (and writes) ``results.json``'s content.

    What it will not run with (no demos, demos with no episode for a split, a
    model that cannot load, a learner's dir it may not write) is
    :class:`browser_env.refusal.Refused` (a ``ValueError``), before any model
    loads; ``output_dir`` is held (:func:`browser_env.dirlock.hold_dir`)
    while the study writes there."""
    from agents.models import check_model
    from browser_env.dirlock import hold_dir
    from browser_env.refusal import refusing
    from learners.checkpoint import check_output_dir

    with contextlib.ExitStack() as held:
        with refusing():  # what would fail later, before any model loads
            if not isinstance(cfg, StudyConfig):
                cfg = StudyConfig(**{k: v for k, v in cfg.items() if not str(k).startswith("_")})
            check_model(cfg.model, "model", None)
            out = Path(cfg.output_dir or "outputs/study")
            for learner_dir in _learner_dirs(cfg, out):  # what a learner would refuse
                check_output_dir(learner_dir, "output_dir", under=out)
            _check_demos(cfg)
            held.enter_context(hold_dir(out, "output_dir"))  # one study at a time writes there
        return _study(cfg, out)


#: the splits every study needs samples of: (name, StudyConfig field of its tasks, seed split)
_NEEDED = (
    ("base train", "base_tasks", "train"),
    ("new train", "new_tasks", "train"),
    ("new validation", "new_tasks", "val"),
    ("new test", "new_tasks", "test"),
)


def _check_demos(cfg: StudyConfig) -> None:
    """Raise ``ValueError`` naming ``demos`` unless they are directories with a
    successful complete episode for every split the study needs: from the
    episode files alone, before a model loads. (Whether such an episode has a
    step to imitate needs the model's tokenizer: :func:`_study` checks that.)"""
    from browser_env.episodes import iter_episodes

    demos = [str(d) for d in cfg.demos]
    missing = [d for d in demos if not Path(d).expanduser().exists()]
    if missing:
        raise ValueError(f"demos: no such episode or run directory: {missing}")
    files = [d for d in demos if not Path(d).expanduser().is_dir()]
    if files:
        raise ValueError(f"demos takes directories (an episode's, or a run's), not files: {files}")
    episodes = [e for e in iter_episodes(demos, check_files=False) if e.success]
    if not episodes:
        raise ValueError(
            f"demos={demos} holds no complete successful episode (an episode is a directory "
            "with episode.json): record expert demos, e.g. python -m benchmarks.run agent=expert"
        )
    for name, field, split in _NEEDED:
        tasks, seeds = getattr(cfg, field), cfg.seeds(split)
        if not any(e.meta.task in tasks and e.meta.seed in seeds for e in episodes):
            raise ValueError(
                f"no {name} samples in demos={demos}: no successful episode of {field}="
                f"{list(tasks)} with a seed in {split}_seeds=[{seeds.start}, {seeds.stop}): "
                "record demos for those tasks and seeds"
            )


def _study(cfg: StudyConfig, out: Path) -> dict[str, Any]:
    """The study of a checked ``cfg`` into ``out`` (held by :func:`run`)."""
    from agents.backends.transformers import TransformersBackend
    from browser_env.refusal import refusing
    from learners import grpo, sdft, sft

    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "stages": {}}

    held: dict[str, Any] = {}  # one evaluation model, adapters swapped in and out

    def evaluate(adapter: str | None, split: dict[str, list[Any]], teacher: bool = False) -> dict:
        if "backend" not in held:
            held["backend"] = TransformersBackend(cfg.model, device=cfg.device, dtype="float32")
            held["backend"].model.eval()
        backend = held["backend"]
        name = f"eval{len(held)}"
        held[name] = adapter
        if adapter is not None:
            backend.add_adapter(adapter, name)
        try:
            with backend.using_adapter(name if adapter is not None else None):
                scores: dict[str, Any] = {
                    key: first_action_accuracy(
                        backend, samples, teacher=teacher, max_new_tokens=cfg.max_new_tokens
                    )
                    for key, samples in split.items()
                }
                scores["perplexity"] = perplexity(backend)
            return scores
        finally:
            if adapter is not None:
                backend.delete_adapter(name)

    def release() -> None:  # before training: the peak memory is the learner's own
        if "backend" in held:
            held.pop("backend").close()

    probe = TransformersBackend(cfg.model, device=cfg.device, dtype="float32")
    base_train = [s for s in _samples(cfg, cfg.base_tasks, "train", probe)]
    new_train = [s for s in _samples(cfg, cfg.new_tasks, "train", probe)]
    base_test = _first_steps(_samples(cfg, cfg.base_tasks, "test", probe))
    new_val = _first_steps(_samples(cfg, cfg.new_tasks, "val", probe))
    new_test = _first_steps(_samples(cfg, cfg.new_tasks, "test", probe))
    probe.close()
    with refusing():  # episodes _check_demos let through, but with no step to imitate
        for name, samples in (
            ("base train", base_train),
            ("new train", new_train),
            ("new validation", new_val),
            ("new test", new_test),
        ):
            if not samples:
                raise ValueError(
                    f"no {name} samples in {cfg.demos}: record demos for those tasks and seeds"
                )
    results["data"] = {
        "base_train_samples": len(base_train),
        "new_train_samples": len(new_train),
        "base_test_decisions": len(base_test),
        "new_val_decisions": len(new_val),
        "new_test_decisions": len(new_test),
    }

    def train(name: str, fn: Callable[[dict], dict], values: dict[str, Any]) -> dict[str, Any]:
        start, cpu_start = time.perf_counter(), time.process_time()
        with PeakMemory() as memory:
            result = fn(values)
        seconds = time.perf_counter() - start
        steps = max(int(values["max_steps"]), 1)
        return {
            "adapter": result["output_dir"],
            "history": result["history"],
            "seconds_per_step": seconds / steps,
            # CPU seconds of this process (all threads): what a shared machine's
            # load distorts least, unlike the wall-clock figure above
            "cpu_seconds_per_step": (time.process_time() - cpu_start) / steps,
            "peak_memory_mib": memory.peak,
        }

    # Stage A: base skills
    base_only = {"tasks": cfg.base_tasks}
    before = evaluate(None, {"base_test": base_test, "new_test": new_test})
    release()
    stage_a = train(
        "stage-a",
        sft.run,
        _learner_config(
            cfg,
            out / "stage_a",
            max_steps=cfg.stage_a_steps,
            learning_rate=cfg.sft_learning_rate,
            save_steps=0,
            lora_dropout=0.0,
            **base_only,
        ),
    )
    after_a = evaluate(stage_a["adapter"], {"base_test": base_test, "new_test": new_test})
    results["stages"]["base_model"] = before
    results["stages"]["stage_a"] = {
        **after_a,
        **{k: stage_a[k] for k in ("seconds_per_step", "cpu_seconds_per_step", "peak_memory_mib")},
    }
    # The precondition of SDFT: is the teacher better than the student on new tasks?
    teacher = evaluate(stage_a["adapter"], {"new_val": new_val, "new_test": new_test}, teacher=True)
    results["precondition"] = {
        "student_new_test": after_a["new_test"],
        "teacher_new_test": teacher["new_test"],
        "teacher_better": teacher["new_test"]["accuracy"] > after_a["new_test"]["accuracy"],
    }

    save_results(out, results)
    release()
    # Stage B: new tasks from the stage-A adapter, same demos, same budget
    new_only = {"tasks": cfg.new_tasks, "init_adapter": stage_a["adapter"]}
    runs: dict[str, Any] = {}
    for algorithm in cfg.algorithms:
        folder = _stage_b_dir(out, algorithm)
        common = dict(save_steps=cfg.save_steps, lora_dropout=0.0, **new_only)
        if algorithm == "sft":
            runs[algorithm] = train(
                algorithm,
                sft.run,
                _learner_config(
                    cfg,
                    folder,
                    max_steps=cfg.stage_b_steps,
                    learning_rate=cfg.sft_learning_rate,
                    **common,
                ),
            )
        elif algorithm == "sdft":
            runs[algorithm] = train(
                algorithm,
                sdft.run,
                _learner_config(
                    cfg,
                    folder,
                    max_steps=cfg.stage_b_steps,
                    learning_rate=cfg.sdft_learning_rate,
                    max_new_tokens=cfg.max_new_tokens,
                    **common,
                ),
            )
        elif algorithm == "sft+sdft":
            half = max(cfg.stage_b_steps // 2, 1)
            first = train(
                "sft",
                sft.run,
                _learner_config(
                    cfg,
                    folder / "sft",
                    max_steps=half,
                    learning_rate=cfg.sft_learning_rate,
                    **common,
                ),
            )
            second = train(
                "sdft",
                sdft.run,
                _learner_config(
                    cfg,
                    folder / "sdft",  # beside sft/: a learner's dir holds no other's
                    max_steps=cfg.stage_b_steps - half,
                    learning_rate=cfg.sdft_learning_rate,
                    max_new_tokens=cfg.max_new_tokens,
                    **{**common, "init_adapter": first["adapter"]},
                ),
            )
            runs[algorithm] = {
                **second,
                "history": first["history"] + second["history"],
                **{
                    key: (first[key] * half + second[key] * (cfg.stage_b_steps - half))
                    / cfg.stage_b_steps
                    for key in ("seconds_per_step", "cpu_seconds_per_step")
                },
                "peak_memory_mib": max(first["peak_memory_mib"], second["peak_memory_mib"]),
                "checkpoint_roots": [first["adapter"], second["adapter"]],
            }
        else:  # grpo on the live env: binary success reward, the new tasks' train seeds
            envs = [f"browser_env/miniwob.{t}-v0" for t in cfg.new_tasks]
            values = _learner_config(
                cfg,
                folder,
                max_steps=cfg.stage_b_steps,
                learning_rate=cfg.grpo_learning_rate,
                env_ids=envs,
                train_seeds=list(cfg.seeds("train"))[:64],
                reward="success",
                batch_size=1,
                num_generations=4,
                max_new_tokens=cfg.max_new_tokens,
                max_episode_steps=4,
                **common,
            )
            values.pop("episodes")
            values.pop("tasks")
            runs[algorithm] = train(algorithm, grpo.run, values)
        results["stage_b"] = runs
        save_results(out, results)  # a crash in a later arm keeps this one's figures

    # Selection on validation, one score on test
    for record in runs.values():
        candidates = _checkpoints(record.get("checkpoint_roots") or [record["adapter"]])
        val = {c: evaluate(c, {"new_val": new_val})["new_val"]["accuracy"] for c in candidates}
        best = max(val, key=lambda c: (val[c], c == record["adapter"]))
        test = evaluate(best, {"new_test": new_test, "base_test": base_test})
        record.update(
            validation={os.path.relpath(c, out): a for c, a in val.items()},
            selected=os.path.relpath(best, out),
            new_test=test["new_test"],
            base_test=test["base_test"],
            perplexity=test["perplexity"],
            forgetting_base=after_a["base_test"]["accuracy"] - test["base_test"]["accuracy"],
            perplexity_change=test["perplexity"] - after_a["perplexity"],
        )
        save_results(out, results)
    release()
    results["stage_b"] = runs
    write_report(out, results)
    return results


def _checkpoints(roots: list[str]) -> list[str]:
    """The final adapters and their ``checkpoints/step-*`` dirs (``best`` excluded)."""
    found = []
    for root in roots:
        found.append(root)
        found += sorted(
            str(p)
            for p in Path(root, "checkpoints").glob("step-*")
            if (p / "adapter_config.json").is_file()
        )
    return found


def hydra_entry(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("hydra", None)
    if values.get("output_dir") is None:
        from learners.loop import default_output_dir

        values["output_dir"] = str(Path(default_output_dir("study")).parent)
    from browser_env.refusal import exit_on_interrupt, exit_on_refusal

    # a refusal: one line on stderr, exit status 2; Ctrl-C: one line, status 130
    with exit_on_refusal(), exit_on_interrupt("study: stopped by Ctrl-C"):
        results = run(values)
    print((Path(values["output_dir"]) / "results.md").read_text())
    return results


def register_config() -> None:
    """Store :class:`StudyConfig` in Hydra's ConfigStore as ``study_schema``
    (``conf/study.yaml`` holds only overrides); safe to repeat."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="study_schema", node=StudyConfig)
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)


def main() -> None:
    import hydra

    register_config()
    hydra.main(version_base="1.3", config_path="../conf", config_name="study")(hydra_entry)()


if __name__ == "__main__":
    main()
