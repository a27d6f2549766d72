"""``python -m serve.openai_server``: build the configured backend and serve it.

::

    python -m serve.openai_server model=path/to/model port=8000 [api_key_env=MY_TOKEN]
    python -m serve.openai_server backend=mlx model=... write_api_key_env=WRITE_TOKEN

The config is ``conf/openai_server.yaml`` over :class:`OpenAIServerConfig`
(registered as the structured config ``openai_server_schema``: every key's
default and help live there); :func:`run` is the plain function behind the
``@hydra.main`` wrapper. Tokens are read with
:func:`serve.auth.load_token`: a variable that is named but unset is an error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.backends.common import require
from agents.models import refuse_adapter_dir
from agents.schema import check_kinds, help_field
from browser_env.policy import is_loopback
from browser_env.refusal import exit_on_refusal, refusing
from serve.auth import MIN_TOKEN_LENGTH, load_token
from serve.ports import check_port_free  # re-exported: serve.openai_server.cli's before

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = [
    "OpenAIServerConfig",
    "check_options",
    "check_port_free",
    "main",
    "register_config",
    "run",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class OpenAIServerConfig:
    """``python -m serve.openai_server``: one backend behind OpenAI's chat API."""

    backend: Any = help_field(
        None, "The backend served, from the backend group: transformers | mlx | tensorrt."
    )
    model: str | None = help_field(None, "Sets backend.model (a directory, hub id or preset).")
    adapter: str | None = help_field(None, "Sets backend.adapter (a PEFT LoRA dir).")
    served_model_name: str | None = help_field(
        None, "The model id clients ask for; null: the model directory's name."
    )
    host: str = help_field("127.0.0.1", "Loopback only unless you change it.")
    port: int = help_field(8000, "The port to listen on.")
    api_key_env: str | None = help_field(
        None,
        "Name of an environment variable; clients must send 'Authorization: Bearer <its value>'.",
    )
    write_api_key_env: str | None = help_field(
        None,
        "Name of an environment variable: its token turns on /v1/load_lora_adapter and "
        "/v1/unload_lora_adapter.",
    )
    adapter_root: str | None = help_field(
        None, "With write_api_key_env: adapters load only from directories under this one."
    )
    max_request_bytes: int = help_field(20 * 1024 * 1024, "The largest request body.")
    max_tokens_limit: int = help_field(4096, "The most tokens a request may ask for.")
    max_batch_size: int = help_field(
        8, "Concurrent requests decoded as one batch (1: one at a time)."
    )
    batch_wait_ms: int = help_field(
        2, "How long a request that finds the backend idle waits for others to join it."
    )
    log_level: str = help_field("info", "uvicorn's log level.")


def register_config() -> None:
    """Store :class:`OpenAIServerConfig` in Hydra's ConfigStore as
    ``openai_server_schema`` (``conf/openai_server.yaml``'s base), and the
    ``--help`` resolver (:mod:`browser_env.cli_help`). Safe to repeat."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="openai_server_schema", node=OpenAIServerConfig)
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)


def run(cfg: DictConfig) -> None:
    """Build the configured backend and serve it until interrupted (the entry point's body)."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from serve.openai_server.app import create_app

    with refusing():  # before the model loads
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
        cfg = check_options(cfg)
        check_port_free(cfg.host, cfg.port)
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


def check_options(cfg: DictConfig) -> DictConfig:
    """``cfg`` as the server will run it (:func:`agents.schema.check_kinds` over
    :class:`OpenAIServerConfig`), once nothing in it stops the server.

    Raises:
        ValueError: naming a setting the server cannot run with, before the
            model loads: a value of the wrong kind or an unknown key (when
            ``cfg`` did not come through Hydra), no ``model=``, a local model or
            adapter path that does not exist, a LoRA adapter directory given
            as the model, a port or limit out of range.
    """
    from omegaconf import OmegaConf

    cfg = check_kinds(cfg, OpenAIServerConfig)
    backend = cfg.get("backend")
    if backend is None or "model" not in backend or OmegaConf.is_missing(backend, "model"):
        raise ValueError("give model=PATH (a model directory, hub id or preset) to serve")
    for key in ("model", "adapter"):
        value = backend.get(key)
        local = isinstance(value, str) and value.startswith(("/", "./", "../", "~"))
        if local and not Path(value).expanduser().exists():
            raise ValueError(f"{key}={value}: no such file or directory")
    if isinstance(backend.get("model"), str):  # a LoRA adapter dir: say how to serve it
        refuse_adapter_dir(backend.model, "model", "adapter", verb="serve")
    for name, least in _LEAST.items():
        if name not in cfg:
            continue
        value = cfg[name]
        if value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {name}={value!r}")
    if cfg.get("port") is not None and cfg.port > 65535:
        raise ValueError(f"port must be in 1..65535, got port={cfg.port}")
    return cfg


def main() -> None:
    hydra = require("hydra", purpose="the server's command line")
    # An absolute path: run from ``python -m serve.openai_server``, the task
    # function lives in this module, and Hydra would read a relative path as a
    # package path (``pkg://``), which ``conf/`` is not.
    conf = Path(__file__).resolve().parents[2] / "conf"
    register_config()
    # version_base 1.3, as the other entry points: the job keeps the caller's
    # working directory, where a relative model=./dir is (tested)
    hydra.main(version_base="1.3", config_path=str(conf), config_name="openai_server")(_task)()


def _task(cfg: DictConfig) -> None:
    """The ``@hydra.main`` task function: a refused config is one line on stderr, exit 2."""
    with exit_on_refusal():
        run(cfg)


if __name__ == "__main__":
    main()
