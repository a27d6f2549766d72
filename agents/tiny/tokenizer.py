"""The tiny models' tokenizer: a byte-level BPE trained on an embedded corpus.

The corpus is the text a browser agent reads and writes: the JSON action
language, element renderings, HTML fragments and plain English. Byte-level
BPE means any text round-trips, including characters never seen in
training. The chat template is ChatML; :data:`QWEN2_VL_CHAT_TEMPLATE` is the
same with Qwen2-VL's image tokens.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from agents.backends.common import require

__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "EOS",
    "IM_START",
    "PAD",
    "QWEN2_VL_CHAT_TEMPLATE",
    "QWEN2_VL_TOKENS",
    "VLM_TOKENS",
    "corpus",
    "train_tokenizer",
]

BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<|pad|>"
IM_START = "<|im_start|>"
VLM_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]
QWEN2_VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _chatml(image: str) -> str:
    """ChatML; content is a string or a list of ``{"type": "text"|"image"}`` parts."""
    return (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}{{ '" + image + "' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


#: ChatML; an image part becomes ``<image>``, which an Idefics3 processor expands.
CHAT_TEMPLATE = _chatml("<image>")
#: ChatML; an image part becomes Qwen2-VL's ``<|vision_start|><|image_pad|><|vision_end|>``,
#: whose pad token the Qwen2-VL processor repeats once per merged patch.
QWEN2_VL_CHAT_TEMPLATE = _chatml("<|vision_start|><|image_pad|><|vision_end|>")

# -- corpus -------------------------------------------------------------------

_VERBS = ["CLICK", "TYPE", "PRESS_ENTER", "SCROLL", "WAIT", "NAVIGATE", "FINISH"]
_ROLES = ["button", "link", "textbox", "checkbox", "radio", "combobox", "option", "heading"]
_TAGS = ["button", "a", "input", "select", "option", "textarea", "div", "span", "label"]
_WORD_TEXT = (
    "submit search login user password name city flight book date next previous ok cancel "
    "yes no home about contact email phone address first last from to one two three tab "
    "menu item list select choose enter type click press scroll wait finish navigate page "
    "form field button link text value checkbox option dialog close open left right up down"
)
_ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Click the button labelled Submit to finish the task.",
    "Type your username and password, then press enter.",
    "Select the option that matches the goal and click OK.",
    "Scroll down until you can see the search results.",
    "Enter the city name in the text field and submit the form.",
    "Find the link to the contact page and open it.",
    "Respond with exactly one JSON object describing the next action.",
    "You are an agent that controls a web browser to complete a goal.",
    "If the task is done, answer with the FINISH action and the answer.",
    "Goal: Search for flights from New York to Boston on the given date.",
    "Last action error: element e12 is not visible on the page.",
    "History: CLICK e3 OK; TYPE e5 'alice' OK; PRESS_ENTER OK.",
]


def corpus(seed: int = 0, n_lines: int = 1500) -> list[str]:
    """The tokenizer's training text: deterministic for a given seed."""
    rng = random.Random(seed)
    words = _WORD_TEXT.split()
    lines: list[str] = list(_ENGLISH)

    def word() -> str:
        return rng.choice(words)

    for _ in range(n_lines):
        eid = f"e{rng.randint(0, 60)}"
        verb = rng.choice(_VERBS)
        action: dict[str, Any] = {"action": verb}
        if verb in ("CLICK", "TYPE"):
            action["element_id"] = eid
        if verb == "TYPE":
            action["value"] = " ".join(word() for _ in range(rng.randint(1, 3)))
        elif verb == "SCROLL":
            action["value"] = rng.choice(["up", "down"])
        elif verb == "WAIT":
            action["value"] = str(rng.choice([100, 250, 500, 1000]))
        elif verb == "NAVIGATE":
            action["value"] = f"http://127.0.0.1:8000/{word()}.html"
        elif verb == "FINISH":
            action["value"] = word()
        if rng.random() < 0.3:
            action["reasoning"] = rng.choice(_ENGLISH)
        lines.append(json.dumps(action))
        role, tag, label = rng.choice(_ROLES), rng.choice(_TAGS), word().capitalize()
        lines.append(f'[{eid}] {role} "{label}" value="{word()}" enabled visible')
        lines.append(f'<{tag} id="{word()}" class="{word()}">{label}</{tag}>')
        lines.append(" ".join(word() for _ in range(rng.randint(4, 12))).capitalize() + ".")
    return lines


# -- tokenizer ----------------------------------------------------------------


def train_tokenizer(
    vocab_size: int = 1024,
    seed: int = 0,
    *,
    vlm: bool = False,
    special_tokens: Sequence[str] = (),
) -> Any:
    """Train a byte-level BPE tokenizer on :func:`corpus`; return a transformers tokenizer.

    Byte-level means any text round-trips, including characters never seen in
    training. ``vlm=True`` adds the special tokens an Idefics3 processor needs;
    ``special_tokens`` adds others (e.g. :data:`QWEN2_VL_TOKENS`).
    """
    tokenizers = require("tokenizers", purpose="training a tiny tokenizer")
    transformers = require("transformers", purpose="training a tiny tokenizer")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, IM_START, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(seed), trainer)
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    hf.add_bos_token = False
    hf.chat_template = CHAT_TEMPLATE
    extra = [*(VLM_TOKENS if vlm else ()), *special_tokens]
    if extra:
        hf.add_special_tokens({"additional_special_tokens": extra})
    return hf
