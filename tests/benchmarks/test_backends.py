"""benchmarks.backends and benchmarks.notebooks: the parts that need no browser.
(The notebooks that use them run end to end in tests/notebooks.)"""

from __future__ import annotations

import asyncio
import threading

import nbformat
import pytest

from benchmarks.backends import agent_settings, agreement, off_loop, unavailable_reason
from benchmarks.notebooks import _value, declared_parameters, inject_parameters


def test_agreement_against_the_reference():
    a, b = {"action": "CLICK", "element_id": "e1"}, {"action": "CLICK", "element_id": "e2"}
    shares = agreement({"transformers": [a, a, b, b], "mlx": [a, a, b, b], "openai": [a, b, b, a]})
    assert shares == {"transformers": 1.0, "mlx": 1.0, "openai": 0.5}
    with pytest.raises(ValueError, match="reference"):
        agreement({"mlx": [a]})
    with pytest.raises(ValueError, match="1 actions"):
        agreement({"transformers": [a, b], "mlx": [a]})


def test_probes_use_the_tiny_agents_composed_settings():
    settings = agent_settings()
    assert settings["sampling"]["temperature"] == 0.0  # greedy, so backends can agree exactly
    assert settings["prompt"]["use_screenshot"] is False and "budget_tokens" in settings["prompt"]
    assert set(settings["guards"]) >= {"unknown_element", "max_repeats"}


def test_unavailable_reason_names_what_is_missing():
    assert unavailable_reason("transformers") is None
    reason = unavailable_reason("tensorrt")
    try:
        import tensorrt_llm  # noqa: F401
    except ImportError:
        assert reason is not None and "tensorrt_llm" in reason
    with pytest.raises(ValueError, match="unknown backend"):
        unavailable_reason("vllm")


def test_off_loop_leaves_the_loop_thread_only_when_a_loop_runs():
    main = threading.get_ident()
    assert off_loop(threading.get_ident) == main

    async def inside() -> int:
        return off_loop(threading.get_ident)

    assert asyncio.run(inside()) != main


def test_parameters_are_injected_after_the_tagged_cell():
    book = nbformat.v4.new_notebook()
    tagged = nbformat.v4.new_code_cell("N = 1\nTASKS = []")
    tagged.metadata["tags"] = ["parameters"]
    book.cells = [
        nbformat.v4.new_markdown_cell("# t"),
        tagged,
        nbformat.v4.new_code_cell("print(N)"),
    ]
    inject_parameters(book, {"N": 3, "TASKS": ["a"]})
    inject_parameters(book, {"N": 4})  # a second injection replaces the first
    assert [c.source for c in book.cells][1:3] == ["N = 1\nTASKS = []", "# Parameters\nN = 4\n"]
    assert book.cells[2].metadata["tags"] == ["injected-parameters"] and len(book.cells) == 4
    with pytest.raises(ValueError, match="parameters"):
        inject_parameters(nbformat.v4.new_notebook(), {"N": 1})
    assert _value("[1, 2]") == [1, 2] and _value("click-tab") == "click-tab"


def test_a_parameter_the_notebook_does_not_set_is_refused():
    """``-p EPISODS 2`` would inject a variable nothing reads and run with the
    defaults: only the names the ``parameters`` cell assigns are taken."""
    book = nbformat.v4.new_notebook()
    tagged = nbformat.v4.new_code_cell("N = 1  # episodes\nTASKS: list = ['a']\nif N:\n    M = 2")
    tagged.metadata["tags"] = ["parameters"]
    book.cells = [tagged, nbformat.v4.new_code_cell("print(N)")]
    assert declared_parameters(book) == ["N", "TASKS"]  # M is set only on the way
    with pytest.raises(ValueError, match=r"^no parameter NN, M: the notebook's parameters cell "
                       r"sets N, TASKS$"):  # fmt: skip
        inject_parameters(book, {"N": 2, "NN": 2, "M": 3})
    assert len(book.cells) == 2  # nothing injected
    tagged.source = "%matplotlib inline\nN = 1\nTASKS: list = ['a']"
    assert declared_parameters(book) == ["N", "TASKS"]
