"""``python -m serve.openai_server``: build the configured backend and serve it.

::

    python -m serve.openai_server model=path/to/model port=8000 [api_key_env=MY_TOKEN]
    python -m serve.openai_server backend=mlx model=... write_api_key_env=WRITE_TOKEN

The config is ``conf/openai_server.yaml``; :func:`run` is the plain function
behind the ``@hydra.main`` wrapper. Tokens are read with
:func:`serve.auth.load_token`: a variable that is named but unset is an error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from agents.backends.common import require
from browser_env.policy import is_loopback
from serve.auth import MIN_TOKEN_LENGTH, load_token

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["check_options", "main", "run"]

logger = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    """Build the configured backend and serve it until interrupted (the entry point's body)."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from serve.openai_server.app import create_app

    uvicorn = require("uvicorn", purpose="the OpenAI-compatible server")
    api_key = load_token(cfg.api_key_env, required=True) if cfg.get("api_key_env") else None
    if not is_loopback(cfg.host) and api_key is None:
        logger.warning(
            "serving on %s without a bearer token: anyone who can reach it can use it", cfg.host
        )
    write_api_key = None
    if cfg.get("write_api_key_env"):
        # it loads adapters from disk: held to the training service's token length
        write_api_key = load_token(
            cfg.write_api_key_env, required=True, min_length=MIN_TOKEN_LENGTH
        )
        logger.warning(
            "runtime LoRA loading is on: holders of the write token can load adapters from %s",
            cfg.get("adapter_root") or "any directory this process can read",
        )
    with open_dict(cfg.backend):
        for key in ("model", "adapter"):
            if cfg.get(key) is not None:
                cfg.backend[key] = cfg[key]
    check_options(cfg)
    backend = instantiate(cfg.backend)
    model = str(cfg.backend.model)
    name = cfg.get("served_model_name") or os.path.basename(os.path.normpath(model))
    app = create_app(
        backend,
        name,
        api_key=api_key,
        max_request_bytes=cfg.max_request_bytes,
        max_tokens_limit=cfg.max_tokens_limit,
        max_batch_size=cfg.max_batch_size,
        batch_wait_ms=cfg.batch_wait_ms,
        write_api_key=write_api_key,
        adapter_root=cfg.get("adapter_root"),
    )
    logger.info("serving %s (%s) at http://%s:%d/v1", name, backend.name, cfg.host, cfg.port)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    finally:
        backend.close()


#: integer settings -> their least value
_LEAST = {
    "port": 1,
    "max_request_bytes": 1,
    "max_tokens_limit": 1,
    "max_batch_size": 1,
    "batch_wait_ms": 0,
}


def check_options(cfg: DictConfig) -> None:
    """Raise ``ValueError`` naming a setting the server cannot run with, before
    the model loads: no ``model=``, a local model or adapter path that does
    not exist, a port or limit that is not a whole number in range."""
    from omegaconf import OmegaConf

    backend = cfg.get("backend")
    if backend is None or "model" not in backend or OmegaConf.is_missing(backend, "model"):
        raise ValueError("give model=PATH (a model directory, hub id or preset) to serve")
    for key in ("model", "adapter"):
        value = backend.get(key)
        local = isinstance(value, str) and value.startswith(("/", "./", "../", "~"))
        if local and not Path(value).expanduser().exists():
            raise ValueError(f"{key}={value}: no such file or directory")
    for name, least in _LEAST.items():
        if name not in cfg:
            continue
        value = cfg[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {name}={value!r}")
    if cfg.get("port") is not None and cfg.port > 65535:
        raise ValueError(f"port must be in 1..65535, got port={cfg.port}")


def main() -> None:
    hydra = require("hydra", purpose="the server's command line")
    # An absolute path: run from ``python -m serve.openai_server``, the task
    # function lives in this module, and Hydra would read a relative path as a
    # package path (``pkg://``), which ``conf/`` is not.
    conf = Path(__file__).resolve().parents[2] / "conf"
    hydra.main(version_base=None, config_path=str(conf), config_name="openai_server")(run)()


if __name__ == "__main__":
    main()
