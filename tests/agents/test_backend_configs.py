"""conf/backend/*.yaml compose with Hydra and instantiate the backends that can run here."""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_contract import REPO_ROOT, tiny_path
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from agents.backends.base import Backend
from agents.backends.common import is_available

CONF = REPO_ROOT / "conf"
BACKENDS = sorted(p.stem for p in (CONF / "backend").glob("*.yaml"))


def _compose(backend: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="openai_server", overrides=[f"backend={backend}", *overrides])


def test_every_backend_has_a_config():
    assert BACKENDS == ["mlx", "openai", "tensorrt", "transformers"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_configs_compose_with_a_target(backend):
    cfg = _compose(backend, "backend.model=some/model")
    assert cfg.backend._target_.startswith("agents.backends.")
    assert cfg.backend.model == "some/model"
    assert cfg.host == "127.0.0.1"


@pytest.mark.parametrize(
    "backend, modules, extra",
    [
        ("transformers", ("torch", "transformers"), "train"),
        ("mlx", ("mlx", "mlx_lm"), "mlx"),
        ("openai", ("httpx",), "api"),
    ],
)
def test_configs_instantiate(backend, modules, extra):
    if not all(is_available(m) for m in modules):
        pytest.skip(f'needs pip install "browser-rl[{extra}]"')
    model = "tiny" if backend == "openai" else str(tiny_path("text"))
    overrides = [f"backend.model={model}"]
    if backend == "transformers":
        overrides.append("backend.device=cpu")
    if backend == "openai":
        overrides.append("backend.base_url=http://127.0.0.1:9/v1")
    instance = instantiate(_compose(backend, *overrides).backend)
    try:
        assert isinstance(instance, Backend)
        assert instance.name == backend
    finally:
        instance.close()


def test_tensorrt_config_names_the_missing_package():
    if is_available("tensorrt_llm"):
        pytest.skip("tensorrt_llm is installed; instantiating it needs a GPU engine build")
    from hydra.errors import InstantiationException

    cfg = _compose("tensorrt", "backend.model=some/model")
    with pytest.raises(InstantiationException, match="tensorrt_llm"):
        instantiate(cfg.backend)


def test_server_config_binds_loopback():
    cfg = _compose("transformers", "model=x")
    assert cfg.host == "127.0.0.1" and cfg.api_key_env is None
    assert Path(CONF / "openai_server.yaml").is_file()
