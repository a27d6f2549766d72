"""Tiny models and tokenizer, built offline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from backend_contract import REPO_ROOT, tiny_cache_dir, tiny_path

from agents.backends.common import is_available

pytestmark = pytest.mark.skipif(
    not (is_available("torch") and is_available("transformers")),
    reason='needs the train extra: pip install "browser-rl[train]"',
)


def test_tokenizer_covers_the_action_language():
    from agents.tiny import train_tokenizer

    tokenizer = train_tokenizer()
    action = '{"action": "TYPE", "element_id": "e7", "value": "New York"}'
    ids = tokenizer.encode(action, add_special_tokens=False)
    assert tokenizer.decode(ids) == action
    assert len(ids) < len(action) / 2, "BPE should merge the action language"
    unseen = "Zürich ✓ 東京"
    assert tokenizer.decode(tokenizer.encode(unseen, add_special_tokens=False)) == unseen
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_text_model_loads_with_auto_classes():
    import transformers

    path = tiny_path("text")
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 < n_params < 2_000_000
    assert json.loads((path / "tiny.json").read_text())["parameters"] == n_params


def test_vlm_loads_with_auto_classes():
    import transformers

    path = tiny_path("vlm")
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    processor = transformers.AutoProcessor.from_pretrained(path)
    assert model.config.model_type == "idefics3"
    assert type(processor.image_processor).__name__ == "Idefics3ImageProcessorPil"
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")


def test_qwen2_vl_loads_with_auto_classes():
    import transformers

    from agents.backends.processors import load_processor

    path = tiny_path("vlm", arch="qwen2")
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    processor = load_processor(path)  # AutoProcessor, or without its video part
    assert model.config.model_type == "qwen2_vl"
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert type(processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    assert model.config.image_token_id == processor.image_token_id
    assert model.config.vision_config.hidden_size == model.config.text_config.hidden_size


def test_cache_is_keyed_by_config(tmp_path):
    from agents.tiny import TinyConfig, tiny_model_path

    first = tiny_model_path("text", cache_dir=tmp_path, num_hidden_layers=1)
    again = tiny_model_path("text", cache_dir=tmp_path, num_hidden_layers=1)
    other = tiny_model_path("text", cache_dir=tmp_path, num_hidden_layers=1, seed=1)
    assert first == again != other
    assert first.name.endswith(TinyConfig(num_hidden_layers=1).key())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])
    assert tiny_cache_dir().is_dir()


def test_builds_are_deterministic(tmp_path):
    from safetensors.numpy import load_file

    from agents.tiny import build_tiny_model

    a = build_tiny_model(tmp_path / "a", num_hidden_layers=1)
    b = build_tiny_model(tmp_path / "b", num_hidden_layers=1)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kind": "audio"}, "kind"),
        ({"kind": "vlm", "arch": "qwen2", "hidden_size": 24, "num_attention_heads": 4}, "M-RoPE"),
        ({"hidden_size": 100, "num_attention_heads": 3}, "divisible"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    from agents.tiny import TinyConfig

    with pytest.raises(ValueError, match=message):
        TinyConfig(**overrides)


def test_refuses_a_non_empty_directory(tmp_path):
    from agents.tiny import build_tiny_model

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        build_tiny_model(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    # ~10 s each; the builder's functions are tested above without the CLI
    [pytest.param(k, marks=pytest.mark.exhaustive) for k in ("text", "vlm")],
)
def test_command_line(tmp_path, kind):
    out = tmp_path / kind
    result = subprocess.run(
        [sys.executable, "-m", "agents.tiny", str(out), "--kind", kind],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"built tiny {kind} model" in result.stdout
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["out=/tmp/tiny"], "OUT_DIR is a plain path (e.g. /tmp/tiny), got 'out=/tmp/tiny'"),
        (["NONEMPTY"], "OUT_DIR must be empty or absent"),
        (["FILE"], "OUT_DIR must be empty or absent"),
        (["fresh", "--hidden-size", "7"], "--hidden-size must be a multiple of the 4 attention"),
        (["fresh", "--layers", "0"], "--hidden-size and --layers must be >= 1"),
    ],
)
def test_command_line_mistakes_are_one_error_line_before_anything_is_built(
    tmp_path, monkeypatch, capsys, args, message
):
    import agents.tiny.cli as cli

    monkeypatch.setattr(cli, "build_tiny_model", lambda *a, **k: pytest.fail("built"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "NONEMPTY").mkdir()
    (tmp_path / "NONEMPTY" / "x").write_text("")
    (tmp_path / "FILE").write_text("")
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err.strip().splitlines()[-1], err
    assert not (tmp_path / "out=").exists() and not (tmp_path / "fresh").exists()
