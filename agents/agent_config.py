"""The agent a composed run config builds, read without building it.

``agents.run`` and ``benchmarks.run`` build the agent from ``cfg.agent`` with
the top-level ``model`` and ``adapter`` applied (:func:`with_model_overrides`).
Before they build it, a model loads or a browser starts, :func:`check_agent`
refuses what would stop the agent only once it loads or plays, or what it
would silently not read, and :func:`check_online_agent` what ``online=``
cannot train. :func:`backend_node` and :func:`agent_name` say which backend
node it is built with and what it is called.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from agents.backend_group import DEFAULT_BACKEND, backend_name, changed_settings

__all__ = [
    "agent_name",
    "backend_node",
    "check_agent",
    "check_online_agent",
    "with_model_overrides",
]


def with_model_overrides(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with the top-level ``model`` and ``adapter`` (when set)
    in the backend node its agent is built with (:func:`backend_node`): the
    config that runs, which :func:`build_agent` builds and a benchmark's
    ``results.json`` records. ``cfg`` itself is left as it is.

    Raises:
        ValueError: ``adapter`` set for a backend that takes none.
    """
    import copy

    built = copy.deepcopy(cfg)
    backend = backend_node(built)
    if backend is not None:
        for key in ("model", "adapter"):
            if built.get(key) is None:
                continue
            if key == "adapter" and key not in backend:
                target = backend.get("_target_", "the selected backend")
                raise ValueError(
                    f"{target} takes no adapter; drop adapter=... or pick another backend"
                )
            with open_dict(backend):
                backend[key] = built[key]
    return built


def check_agent(cfg: DictConfig, env_ids: Iterable[str] = ()) -> None:
    """Refuse, without building it, what would stop ``cfg.agent`` only once it
    loads or plays: a backend ``model`` left unset (``???``), a model that
    cannot load (:func:`agents.models.check_model`; not checked: an
    OpenAI-compatible server's ``model``, a name only the server knows, nor a
    model that ``runner=ray`` actors on the cluster at ``RAY_ADDRESS`` load) and, for
    the scripted expert, tasks among ``env_ids`` it has no policy for.

    Raises:
        ValueError: naming the setting or the tasks (and ``adapter=`` set for a
            backend that takes none: :func:`with_model_overrides`).
        omegaconf.errors.MissingMandatoryValue: ``backend.model`` is unset
            (:func:`browser_env.refusal.refusing` says how to set it).
    """
    from agents.models import check_model

    agent = cfg.get("agent")
    if agent is None:
        return
    _check_unread_settings(cfg)
    with_model_overrides(cfg)  # adapter= for a backend that takes none: refused here
    backend = backend_node(cfg) if "backend" in agent else None  # the group's is llm's only
    if backend is not None and ("model" in backend or OmegaConf.is_missing(backend, "model")):
        top_level = cfg.get("model") is not None
        model = cfg.model if top_level else backend.model  # ??? raises
        # a Ray cluster's actors load the model: a path there need not exist here
        remote = cfg.get("runner") == "ray" and bool(os.environ.get("RAY_ADDRESS"))
        served = ".openai." in str(backend.get("_target_", ""))  # a name the server knows
        if isinstance(model, str) and not served and not remote:
            check_model(model, "model" if top_level else backend._get_full_key("model"))
    target = str(agent.get("_target_", ""))
    if target in _SCRIPTED_EXPERT and agent.get("task") is None:  # a pinned task is __init__'s
        _check_expert_tasks(list(env_ids))


def _check_unread_settings(cfg: DictConfig) -> None:
    """Refuse what the agent ``cfg`` builds would not read: ``model=``/``adapter=``
    for an agent with no model (random, expert), and the ``backend`` group's
    node (``backend=NAME``, ``backend.KEY=...``) for an agent with a backend of
    its own (``agent=tiny``: ``agent.backend.KEY`` is what it reads)."""
    agent = cfg.agent
    if "backend" not in agent:
        for key in ("model", "adapter"):
            if cfg.get(key) is not None:
                raise ValueError(f"{_agent_label(cfg)} has no model: {key}= is not read; drop it")
        return
    group = cfg.get("backend")
    if group is None or not _inline_backend(agent):
        return  # the agent reads the group's node (agent=llm)
    name = backend_name(group)
    changed = changed_settings(group) if name == DEFAULT_BACKEND else []
    if name == DEFAULT_BACKEND and not changed:
        return
    own = f"{_agent_label(cfg)} builds its own backend (agent.backend)"
    if name != DEFAULT_BACKEND:
        raise ValueError(
            f"{own}: backend={name} is not read; set agent.backend._target_ or use "
            f"agent=llm backend={name}"
        )
    key = changed[0]
    raise ValueError(f"{own}: backend.{key} is not read; set agent.backend.{key} instead")


def _agent_label(cfg: DictConfig) -> str:
    """``agent=tiny`` when Hydra says which option was picked, else the agent's name."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get("agent")
    except (ImportError, ValueError):  # no Hydra app running (e.g. compose in a test)
        choice = None
    return f"agent={choice}" if choice else f"agent {agent_name(cfg)!r}"


_SCRIPTED_EXPERT = ("agents.experts.ScriptedExpert", "agents.experts.expert.ScriptedExpert")


def _check_expert_tasks(env_ids: list[str]) -> None:
    from agents.experts import expert_task, unsupported_env_ids

    unsupported = [expert_task(e) for e in unsupported_env_ids(env_ids)]
    if not unsupported:
        return
    shown = ", ".join(unsupported[:5])
    if len(unsupported) > 5:
        shown += f" and {len(unsupported) - 5} more"
    total = len(set(env_ids))
    of = f" {len(unsupported)} of the {total} tasks:" if total > 1 else ""
    raise ValueError(
        f"agent=expert has no scripted policy for{of} {shown}; "
        "suite=miniwob_expert lists the MiniWoB++ tasks it solves (agents.experts.SUPPORTED_TASKS)"
    )


def backend_node(cfg: DictConfig) -> Any:
    """The backend node the agent is built with: its own inline ``backend`` (as
    in ``conf/agent/tiny.yaml``) or else the ``backend`` group's."""
    agent = cfg.get("agent")
    return agent.backend if agent is not None and _inline_backend(agent) else cfg.get("backend")


def _inline_backend(agent: DictConfig) -> bool:
    """``agent`` has a backend node of its own, not ``${backend}`` (the group's)."""
    return (
        "backend" in agent
        and not agent._get_node("backend")._is_interpolation()
        and isinstance(agent.backend, DictConfig)
    )


def agent_name(cfg: DictConfig) -> str:
    """The name of the agent ``cfg.agent`` builds (its class's ``name``), without
    building it: a driver whose Ray actors build their own agents needs no
    model of its own."""
    from hydra.utils import get_class

    cls = get_class(cfg.agent._target_)
    return str(getattr(cls, "name", cls.__name__))


def check_online_agent(cfg: DictConfig) -> None:
    """``online=`` trains the acting model's adapter with torch: refuse an agent
    with no model, or one on another backend, before an episode is played."""
    backend = backend_node(cfg) if "backend" in cfg.agent else None
    name = None if backend is None else backend_name(backend)
    if name != "transformers":
        has = "no model" if backend is None else f"the {name} backend"
        raise ValueError(
            f"online=... trains the acting model's LoRA adapter on the transformers backend; "
            f"{_agent_label(cfg)} has {has}: use agent=tiny, or agent=llm backend=transformers "
            "model=..."
        )
