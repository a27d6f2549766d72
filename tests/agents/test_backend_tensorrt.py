"""The TensorRT-LLM backend: the shared contract where ``tensorrt_llm`` is installed (CUDA machines)."""

from __future__ import annotations

import pytest
from backend_contract import BackendContract, tiny_path

from agents.backends.common import is_available

HAS_TRTLLM = is_available("tensorrt_llm")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRTLLM, reason="tensorrt_llm not installed")
class TestTensorRT(BackendContract):
    def make_backend(self):
        from agents.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(tiny_path("text"), llm_kwargs={"max_batch_size": 1})


@pytest.mark.skipif(
    HAS_TRTLLM, reason="tensorrt_llm is installed; this checks the error without it"
)
def test_missing_tensorrt_llm_names_how_to_install():
    from agents.backends.tensorrt import TensorRTBackend

    with pytest.raises(ImportError, match=r"tensorrt_llm.*browser-rl\[tensorrt\]"):
        TensorRTBackend("some/model")


def test_module_imports_without_tensorrt_llm():
    import importlib

    module = importlib.import_module("agents.backends.tensorrt")
    assert module.TensorRTBackend.name == "tensorrt"
    assert module._logprobs([-0.5, -1.0], [3, 4]) == [-0.5, -1.0]
    assert module._logprobs(None, [3]) is None
