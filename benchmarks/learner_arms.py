"""The arms of :mod:`benchmarks.learner_speed`: our learners and TRL's trainers on one batch recipe.

Every arm trains ``warmup_steps + steps`` optimiser steps of a fresh LoRA on
the same model, in float32, from the same data, and returns what it can say
about itself (tokens per step, the norm of the trained ``lora_B`` weights);
:mod:`benchmarks.learner_speed` times the steps from outside, through torch's
optimiser hook, so no arm times itself.

The data is a set of recorded episodes (``setup.episodes``; by default
:func:`write_episodes` writes synthetic one-step click episodes with the
real episode writer). Our learners read them as they always do
(:func:`learners.samples.load_samples`); the TRL arms get the very same token
ids, tokenised once by our backend's ``encode_chat`` (the inference path),
as pre-tokenised datasets:

* ``sft``: each sample is prompt -> expert action JSON + end-of-turn; the loss
  is the cross-entropy of the completion tokens, averaged over the batch's
  completion tokens. TRL: ``SFTTrainer`` on ``input_ids`` + ``completion_mask``
  (completion-only loss, no packing, no padding-free).
* ``grpo``: the update step only, on a fixed batch: ``batch_size`` sequences,
  in groups of ``num_generations`` completions of one prompt (the expert action, rewarded
  1, and the same action on other elements, rewarded 0). Ours gets them
  through ``learners.grpo.run(play_fn=...)``, TRL's ``GRPOTrainer`` through a
  ``rollout_func``; neither generates, both compute the clipped surrogate
  averaged over the batch's completion tokens (TRL ``loss_type="dapo"``),
  ``beta=0``, group-scaled advantages.
* ``sdft``: ours only (on-policy generation, student and teacher forward
  passes, the EMA teacher). TRL's ``SDFTTrainer`` is experimental and builds
  its teacher prompt by appending text to the prompt, which is not our
  teacher prompt, so the tokens would differ.

TRL's defaults that would make the comparison unequal are switched off:
gradient checkpointing (TRL default on), bf16 (TRL default on), logging,
saving and evaluation; the learning rate is constant, AdamW as ours.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ARMS", "Setup", "prepare", "write_episodes"]

# words for the synthetic pages' labels and text
_WORDS = (  # noqa: SIM905 - one string reads better than 31 quoted words
    "account billing calendar delivery email filter garden history invoice journal kitchen "
    "ledger market notice office payment question receipt schedule ticket update voucher "
    "window yellow zone archive budget contact draft export folder"
).split()


@dataclasses.dataclass
class Setup:
    """One measurement's recipe, the same for every arm (plain values: it crosses processes)."""

    model: str
    episodes: str
    device: str = "cpu"
    batch_size: int = 4  # sequences per optimiser step (GRPO: batch_size / G groups)
    num_generations: int = 2
    warmup_steps: int = 2
    steps: int = 5
    learning_rate: float = 1e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str | list[str] = "all-linear"
    max_new_tokens: int = 24
    seed: int = 0
    prompt: dict[str, Any] = dataclasses.field(default_factory=dict)
    threads: int | None = None
    tokens: str = ""  # the tokenised data (prepare), next to the episodes by default

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.steps

    @property
    def groups(self) -> int:
        """GRPO groups per step: ``batch_size`` sequences in groups of ``num_generations``."""
        return self.batch_size // self.num_generations


def write_episodes(root: str | Path, n: int, *, elements: int = 12, text_words: int = 200) -> Path:
    """``n`` solved one-step episodes "click the button labelled X" under ``root``.

    Each page lists ``elements`` buttons and ``text_words`` words of page text
    (the knobs for the prompt length); episode ``i`` clicks button ``i % elements``.
    """
    import numpy as np

    from browser_env.episodes import AgentInfo, EpisodeMeta, EpisodeWriter
    from browser_env.observation import make_element

    if elements < 2:
        raise ValueError("elements must be >= 2 (GRPO's group needs other elements to click)")
    root = Path(root)
    labels = [f"{_WORDS[i % len(_WORDS)].title()} {i + 1}" for i in range(elements)]
    text = " ".join(_WORDS[(7 * i) % len(_WORDS)] for i in range(text_words))
    for i in range(n):
        target = i % elements
        goal = f'Click on the "{labels[target]}" button.'
        obs = {
            "goal": goal,
            "url": "http://localhost/click-button.html",
            "elements": tuple(
                make_element(f"e{j + 1}", "button", "button", label, bbox=(0, 20 * j, 80, 18))
                for j, label in enumerate(labels)
            ),
            "text": text,
            "last_action_error": "",
            "screenshot": np.zeros((8, 8, 3), dtype=np.uint8),
        }
        writer = EpisodeWriter(
            root,
            EpisodeMeta(
                env_id="browser_env/miniwob.click-button-v0",
                task="click-button",
                seed=i,
                source="scripted",
                goal=goal,
                agent=AgentInfo(name="expert"),
            ),
        )
        action = {"action": "CLICK", "element_id": f"e{target + 1}"}
        writer.write_step(obs, action, 1.0, True, False, {"success": True})
        writer.close()
    return root


# -- shared pieces ---------------------------------------------------------------------------


def _learner_values(s: Setup, out: str) -> dict[str, Any]:
    """The fields every one of our learner configs gets from the setup."""
    return {
        "model": s.model,
        "device": s.device,
        "seed": s.seed,
        "lora_r": s.lora_r,
        "lora_alpha": s.lora_alpha,
        "lora_dropout": s.lora_dropout,
        "lora_target_modules": s.lora_target_modules,
        "learning_rate": s.learning_rate,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "max_steps": s.total_steps,
        "batch_size": s.batch_size,
        "episodes": [s.episodes],
        "prompt": s.prompt,
        "save_steps": 0,
        "eval_steps": 0,
        "wandb": False,
        "progress": False,
        "output_dir": out,
    }


def _saved_lora_b_norm(adapter_dir: str) -> float:
    """Norm of all ``lora_B`` weights of a saved adapter (a fresh LoRA starts at B = 0)."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    return sum(float(t.float().norm()) ** 2 for k, t in tensors.items() if "lora_B" in k) ** 0.5


def _live_lora_b_norm(model: Any) -> float:
    return (
        sum(
            float(p.detach().float().norm()) ** 2
            for n, p in model.named_parameters()
            if "lora_B" in n
        )
        ** 0.5
    )


def prepare(s: Setup) -> dict[str, Any]:
    """Tokenise the data once, with the backend our learners build (``encode_chat``,
    the inference path), into ``s.tokens``; returns a summary of its lengths.

    Per sample: its prompt messages, prompt ids, the target's ids (action JSON +
    end-of-turn) and, for GRPO, the group of ``num_generations`` completions (the
    expert action, reward 1, and the same action on other elements, reward 0).
    """
    from agents.backends.transformers import TransformersBackend
    from learners.config import SFTConfig
    from learners.samples import load_samples
    from learners.trainable import end_of_turn_id, resolve_model

    backend = TransformersBackend(resolve_model(s.model), device="cpu", dtype="float32")
    samples = load_samples(SFTConfig(episodes=[s.episodes], prompt=s.prompt), backend)
    tok = backend.tokenizer
    eos = end_of_turn_id(backend)  # the token SFT's targets end with

    def completion(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False) + [eos]

    items = []
    for sample in samples:
        _, inputs = backend.encode_chat(sample.messages, None)
        action = json.loads(sample.target)
        others = [f"e{j}" for j in range(1, 10_000) if f"e{j}" != action.get("element_id")]
        group = [sample.target] + [
            json.dumps({**action, "element_id": e}, ensure_ascii=False)
            for e in others[: s.num_generations - 1]
        ]
        items.append(
            {
                "messages": sample.messages,
                "prompt_ids": [int(t) for t in inputs["input_ids"][0]],
                "completion_ids": completion(sample.target),
                "group_ids": [completion(t) for t in group],
                "group_rewards": [1.0] + [0.0] * (s.num_generations - 1),
            }
        )
    from benchmarks.report import write_json_atomic

    write_json_atomic(s.tokens, items)
    n = len(items)
    return {
        "samples": n,
        "prompt_tokens": sum(len(i["prompt_ids"]) for i in items) / n,
        "completion_tokens": sum(len(i["completion_ids"]) for i in items) / n,
    }


def _items(s: Setup) -> list[dict[str, Any]]:
    return json.loads(Path(s.tokens).read_text())


def _model(s: Setup) -> tuple[Any, Any]:
    """(model, tokenizer) loaded exactly as our learners load them (float32)."""
    from agents.backends.transformers import TransformersBackend
    from learners.trainable import resolve_model

    backend = TransformersBackend(resolve_model(s.model), device=s.device, dtype="float32")
    return backend.model, backend.tokenizer


def _lora_config(s: Setup) -> Any:
    import peft

    targets = s.lora_target_modules
    return peft.LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


def _trl_args(s: Setup, out: str) -> dict[str, Any]:
    """TrainingArguments shared by the TRL arms: the same optimiser, nothing else in the steps."""
    return {
        "output_dir": out,
        "max_steps": s.total_steps,
        "gradient_accumulation_steps": 1,
        "learning_rate": s.learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "optim": "adamw_torch",
        "gradient_checkpointing": False,
        "bf16": False,
        "fp16": False,
        "use_cpu": s.device == "cpu",
        "logging_strategy": "no",
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": s.seed,
    }


# -- SFT -----------------------------------------------------------------------------------


def ours_sft(s: Setup) -> dict[str, Any]:
    from learners.sft import run

    with tempfile.TemporaryDirectory(prefix="speed-sft-") as out:
        result = run(_learner_values(s, out))
        history = result["history"]
        return {
            "lora_b_norm": _saved_lora_b_norm(out),
            "completion_tokens_per_step": _mean_tail(history, "completion_length", s)
            * s.batch_size,
        }


def trl_sft(s: Setup) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = [
        {
            "input_ids": i["prompt_ids"] + i["completion_ids"],
            "completion_mask": [0] * len(i["prompt_ids"]) + [1] * len(i["completion_ids"]),
        }
        for i in _items(s)
    ]
    model, tokenizer = _model(s)
    with tempfile.TemporaryDirectory(prefix="speed-trl-sft-") as out:
        args = SFTConfig(
            **_trl_args(s, out),
            per_device_train_batch_size=s.batch_size,
            max_length=None,
            packing=False,
            padding_free=False,
            completion_only_loss=True,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=_lora_config(s),
        )
        trainer.train()
        per_row = sum(sum(r["completion_mask"]) for r in rows) / len(rows)
        return {
            "lora_b_norm": _live_lora_b_norm(trainer.model),
            "completion_tokens_per_step": per_row * s.batch_size,
        }


# -- GRPO (the update step on fixed completions) ----------------------------------------------


def ours_grpo(s: Setup) -> dict[str, Any]:
    from learners.grpo import run
    from learners.rollout import StepSample, Trajectory

    # play_fn stands in for the env, so the ids name no registered env; they are
    # written as full ids, which the config keeps as they are (resolve_env_id)
    groups = {f"browser_env/speed-item-{n}-v0": item for n, item in enumerate(_items(s))}
    calls = itertools.count()

    def play_fn(key: str, seed: int, sample_seed: int) -> Trajectory:
        k = next(calls) % s.num_generations  # run() plays a group's G members in a row
        item = groups[key]
        step = StepSample(item["messages"], [], item["group_ids"][k], parsed=True)
        reward = item["group_rewards"][k]
        return Trajectory(key, seed, [step], reward, reward == 1.0)

    with tempfile.TemporaryDirectory(prefix="speed-grpo-") as out:
        values = _learner_values(s, out)
        values.pop("episodes")
        values.update(
            batch_size=s.groups,
            env_ids=sorted(groups),
            train_seeds=[0],
            num_generations=s.num_generations,
            beta=0.0,
            reward="success",
        )
        history = run(values, play_fn=play_fn)["history"]
        return {
            "lora_b_norm": _saved_lora_b_norm(out),
            "completion_tokens_per_step": _mean_tail(history, "completion_length", s)
            * _mean_tail(history, "num_samples", s),
        }


def trl_grpo(s: Setup) -> dict[str, Any]:
    import os

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func's notice
    groups = {f"item-{n}": item for n, item in enumerate(_items(s))}
    tokens: list[int] = []

    def rollout(prompts: list[str], trainer: Any) -> dict[str, list[Any]]:
        seen: Counter[str] = Counter()
        out: dict[str, list[Any]] = {
            "prompt_ids": [],
            "completion_ids": [],
            "logprobs": [],
            "fixed_reward": [],
        }
        for key in prompts:  # the sampler repeats each prompt G times
            k = seen[key] % s.num_generations
            seen[key] += 1
            item = groups[key]
            out["prompt_ids"].append(item["prompt_ids"])
            out["completion_ids"].append(item["group_ids"][k])
            out["logprobs"].append([0.0] * len(item["group_ids"][k]))  # unused without vLLM
            out["fixed_reward"].append(item["group_rewards"][k])
        tokens.append(sum(len(c) for c in out["completion_ids"]))
        return out

    def reward(prompts: Any, completions: Any, fixed_reward: list[float], **_: Any) -> list[float]:
        return list(fixed_reward)

    model, tokenizer = _model(s)
    with tempfile.TemporaryDirectory(prefix="speed-trl-grpo-") as out:
        args = GRPOConfig(
            **_trl_args(s, out),
            per_device_train_batch_size=s.groups * s.num_generations,
            num_generations=s.num_generations,
            steps_per_generation=1,
            beta=0.0,
            epsilon=0.2,
            loss_type="dapo",
            scale_rewards="group",
            max_completion_length=max(len(c) for i in groups.values() for c in i["group_ids"]),
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=Dataset.from_list([{"prompt": key} for key in sorted(groups)]),
            processing_class=tokenizer,
            peft_config=_lora_config(s),
            rollout_func=rollout,
        )
        trainer.train()
        timed = tokens[s.warmup_steps :] or tokens
        return {
            "lora_b_norm": _live_lora_b_norm(trainer.model),
            "completion_tokens_per_step": sum(timed) / len(timed),
        }


# -- SDFT (ours only) ------------------------------------------------------------------------


def ours_sdft(s: Setup) -> dict[str, Any]:
    from learners.sdft import run

    with tempfile.TemporaryDirectory(prefix="speed-sdft-") as out:
        values = _learner_values(s, out)
        values.update(max_new_tokens=s.max_new_tokens, temperature=1.0)
        result = run(values)
        history = result["history"]
        return {
            "lora_b_norm": _saved_lora_b_norm(out),
            "completion_tokens_per_step": _mean_tail(history, "completion_length", s)
            * s.batch_size,
        }


def _mean_tail(history: list[dict[str, Any]], key: str, s: Setup) -> float:
    """Mean of ``key`` over the timed steps (the history's last ``s.steps`` rows)."""
    values = [float(row[key]) for row in history if key in row][-s.steps :]
    return sum(values) / max(len(values), 1)


#: (algorithm, implementation) -> (arm, what is compared)
ARMS: dict[tuple[str, str], tuple[Callable[[Setup], dict[str, Any]], str]] = {
    ("sft", "ours"): (ours_sft, "learners.sft: CE on the completion tokens"),
    ("sft", "trl"): (trl_sft, "trl.SFTTrainer, completion-only loss, same token ids"),
    ("sdft", "ours"): (ours_sdft, "learners.sdft: sampling + student/teacher KL + EMA"),
    ("grpo", "ours"): (ours_grpo, "learners.grpo update on fixed completions and rewards"),
    ("grpo", "trl"): (trl_grpo, "trl.GRPOTrainer update, same completions via rollout_func"),
}
