"""learners.enrich against the project's own OpenAI-compatible server on
127.0.0.1 serving the tiny model: rationales, the disk cache, the fallback to
the raw action, and no secret in logs or files."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("torch")
pytest.importorskip("uvicorn")

from learners.enrich import Enricher, enrich_sample  # noqa: E402


@pytest.fixture(scope="module")
def server():
    from agents.backends.transformers import TransformersBackend
    from agents.tiny import tiny_model_path
    from serve.openai_server import ServerThread, create_app

    backend = TransformersBackend(str(tiny_model_path("text")), device="cpu", dtype="float32")
    with ServerThread(create_app(backend, "tiny")) as running:
        yield running
    backend.close()


@pytest.fixture
def sample(episodes_dir):
    from learners.samples import iter_samples

    return next(iter(iter_samples([episodes_dir])))


def test_rationale_goes_into_the_teacher_demo_and_is_cached(server, sample, tmp_path):
    enricher = Enricher("tiny", server.base_url, cache_dir=tmp_path, max_tokens=12, temperature=1.0)
    enriched = enrich_sample(sample, enricher)
    assert enricher.stats == {"cached": 0, "generated": 1, "failed": 0}
    demo = json.loads(enriched.demonstration)
    assert demo["reasoning"] and {k: v for k, v in demo.items() if k != "reasoning"} == json.loads(
        sample.target
    )
    assert enriched.teacher_messages[-1]["content"].endswith(
        f"{enriched.demonstration}\n=== END DEMONSTRATION ==="
    )
    assert enriched.messages == sample.messages and enriched.target == sample.target
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    again = Enricher("tiny", "http://127.0.0.1:9/v1", cache_dir=tmp_path)  # unreachable: cache only
    assert enrich_sample(sample, again).demonstration == enriched.demonstration
    assert again.stats["cached"] == 1 and again.stats["failed"] == 0
    other = Enricher("other-model", "http://127.0.0.1:9/v1", cache_dir=tmp_path, timeout=2)
    assert other.key("o", "a") != enricher.key("o", "a")
    enricher.close()


def test_failure_falls_back_to_the_raw_action_without_leaking_the_key(
    sample, tmp_path, monkeypatch, caplog
):
    secret = "sk-enrich-" + "9" * 20
    monkeypatch.setenv("MY_ENRICH_KEY", secret)
    enricher = Enricher(
        "tiny", "http://127.0.0.1:9/v1", api_key_env="MY_ENRICH_KEY", cache_dir=tmp_path, timeout=2
    )
    with caplog.at_level(logging.DEBUG):
        assert enrich_sample(sample, enricher) is sample
    assert enricher.stats["failed"] == 1
    assert "enrichment failed" in caplog.text and secret not in caplog.text
    assert not list(tmp_path.iterdir())
    enricher.close()


def test_sdft_records_enrichment_in_training_json(server, episodes_dir, tmp_path):
    from learners.sdft import run

    out = tmp_path / "adapter"
    run(
        {
            "model": "tiny",
            "episodes": [str(episodes_dir)],
            "output_dir": str(out),
            "max_steps": 1,
            "batch_size": 1,
            "max_new_tokens": 8,
            "wandb": False,
            "progress": False,
            "enrich": {
                "model": "tiny",
                "base_url": server.base_url,
                "cache_dir": str(tmp_path / "c"),
            },
        }
    )
    info = json.loads((out / "training.json").read_text())["data"]["enrich"]
    # a random tiny model may answer nothing: those samples keep the raw action
    assert info["model"] == "tiny" and info["generated"] + info["cached"] + info["failed"] == 4
