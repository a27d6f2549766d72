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

__all__ = ["main", "run"]

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


def main() -> None:
    hydra = require("hydra", purpose="the server's command line")
    # An absolute path: run from ``python -m serve.openai_server``, the task
    # function lives in this module, and Hydra would read a relative path as a
    # package path (``pkg://``), which ``conf/`` is not.
    conf = Path(__file__).resolve().parents[2] / "conf"
    hydra.main(version_base=None, config_path=str(conf), config_name="openai_server")(run)()


if __name__ == "__main__":
    main()
