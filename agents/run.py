"""Run one agent on one task and print each step.

::

    python -m agents.run env=miniwob.click-test agent=random
    python -m agents.run url=https://example.com goal="Find the heading" agent=llm backend=openai model=...
    python -m agents.run agent=llm backend=transformers model=/path/to/model adapter=/path/to/lora
    python -m agents.run agent=tiny env=miniwob.click-button online=sdft episodes=10

The config is ``conf/run.yaml`` over :class:`agents.run_config.RunConfig`
(every key's default and help). :func:`run` is the plain function behind the
``@hydra.main`` wrapper; tests call it with a composed config. Top-level
``model`` and ``adapter``, when set, override ``backend.model`` /
``backend.adapter`` of whichever backend is selected.

Episodes are written with :class:`browser_env.wrappers.RecordEpisode` (the
episode format is ``browser_env.episodes``'s): ``record=true`` writes into
``episodes_dir`` (default: ``episodes/`` in Hydra's run directory). Callers can
pass their own ``episode_writer``: any ``env -> env`` wrapper factory.

``episodes=N`` plays seeds ``seed .. seed+N-1`` (:func:`run_episodes`)
through the rollout engine (:mod:`agents.runners`): one after another, or
with ``runner=vector|ray workers=K`` K shared-browser envs with a batched
policy, or K Ray actors.
``online=sdft`` adapts online: after each successful episode the object built
from ``cfg.online`` (``_target_: learners.online.OnlineSDFT``) gets
``update(agent, episode_dir)``, which trains the adapter within its budget,
checkpoints it and loads it into the agent (with ``runner=vector|ray``, after
each round of as many episodes as the engine plays at once; Ray actors load
the checkpoint too). The learner is instantiated by Hydra at run time:
``agents`` never imports ``learners``.

A config that cannot run (``episodes=0``, an unknown ``env=``, ``agent=llm``
with no ``model=``, a model path that does not exist, ``agent=expert`` on a
task it has no policy for) is refused before a model loads or a browser
starts (:func:`check_agent`, :mod:`browser_env.refusal`): the command line prints
``error: <why>`` and exits with status 2; ``run(cfg)`` raises it as a
``ValueError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from agents.agent import Agent
from agents.backend_group import DEFAULT_BACKEND, backend_name, changed_settings
from agents.prompt import PROMPT_VERSION
from agents.run_config import check_options, register_config
from browser_env.refusal import exit_on_interrupt, exit_on_refusal, refusing
from browser_env.registration import env_id, resolve_env_id
from browser_env.rundir import run_dir

if TYPE_CHECKING:
    import gymnasium as gym

    from browser_env.actions import Action
    from browser_env.episodes import AgentInfo
    from browser_env.observation import Observation

__all__ = [
    "build_agent",
    "check_agent",
    "check_options",
    "main",
    "make_env",
    "env_id_of",
    "recording_info",
    "run",
    "run_episodes",
    "with_model_overrides",
]

EpisodeWriterFactory = Callable[[Any], Any]


def env_id_of(cfg: Mapping[str, Any]) -> str:
    """The Gymnasium id for ``cfg``: ``browser_env/open-v0`` when ``url`` is set,
    else ``env`` in any spelling :func:`browser_env.registration.resolve_env_id`
    accepts (``miniwob.click-test``, ``browser_env/miniwob.click-test-v0``)."""
    if cfg.get("url"):
        return env_id("open", family=None)
    if not cfg.get("env"):
        raise ValueError("give env=<id> (e.g. env=miniwob.click-test) or url=... goal=...")
    return resolve_env_id(str(cfg["env"]))


def make_env(cfg: Mapping[str, Any]) -> Any:
    """A Gymnasium env from ``cfg`` (``env``/``url``, ``headless``, ``max_steps``, ``env_kwargs``)."""
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the browser_env/* ids

    kwargs = {"headless": bool(cfg.get("headless", True)), **dict(cfg.get("env_kwargs") or {})}
    return gym.make(env_id_of(cfg), max_episode_steps=int(cfg["max_steps"]), **kwargs)


def _reset_options(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    if not cfg.get("url"):
        return None
    options = {"url": str(cfg["url"]), "goal": str(cfg.get("goal") or "")}
    if cfg.get("answer") is not None:
        options["answer"] = str(cfg["answer"])
    return options


def with_model_overrides(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with the top-level ``model`` and ``adapter`` (when set)
    in the backend node its agent is built with (:func:`_backend_node`): the
    config that runs, which :func:`build_agent` builds and a benchmark's
    ``results.json`` records. ``cfg`` itself is left as it is.

    Raises:
        ValueError: ``adapter`` set for a backend that takes none.
    """
    import copy

    built = copy.deepcopy(cfg)
    backend = _backend_node(built)
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


def build_agent(cfg: DictConfig) -> Agent:
    """Instantiate ``cfg.agent`` with the top-level ``model``/``adapter`` applied
    (:func:`with_model_overrides`)."""
    from hydra.utils import instantiate

    return instantiate(with_model_overrides(cfg).agent)


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
    backend = _backend_node(cfg) if "backend" in agent else None  # the group's is llm's only
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


def _backend_node(cfg: DictConfig) -> Any:
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


def recording_info(cfg: DictConfig, agent: Agent | None = None) -> tuple[AgentInfo, str]:
    """What an episode recorded from ``agent`` (default: the one ``cfg``
    builds, not built) says about it: an
    :class:`~browser_env.episodes.AgentInfo` (name, backend, model, adapter,
    prompt version, agent config) and the episode source (``scripted`` for
    the experts, else ``agent``)."""
    from browser_env.episodes import AgentInfo

    name = agent_name(cfg) if agent is None else getattr(agent, "name", type(agent).__name__)
    llm = name == "llm"
    built = with_model_overrides(cfg)  # the model the backend runs, given or the agent's own
    backend = _backend_node(built) if llm else None

    def setting(key: str) -> str | None:
        value = None if backend is None else backend.get(key)
        if isinstance(value, DictConfig):  # e.g. agents.pretrained.path(name): the name
            value = value.get("name") or OmegaConf.to_container(value, resolve=True)
        return None if value is None else str(value)

    info = AgentInfo(
        name=name,
        backend=None if backend is None else backend_name(backend),
        model=setting("model"),
        adapter=setting("adapter"),
        prompt_version=PROMPT_VERSION if llm else None,
        config=OmegaConf.to_container(built.agent, resolve=False) if "agent" in built else {},
    )
    return info, "scripted" if name == "expert" else "agent"


def _episodes_root(cfg: DictConfig) -> Path:
    root = cfg.get("episodes_dir")
    return Path(root) if root is not None else run_dir() / "episodes"


def _default_writer(cfg: DictConfig, agent: Agent) -> EpisodeWriterFactory | None:
    if not cfg.get("record", False):
        return None
    from browser_env.wrappers import RecordEpisode

    root = _episodes_root(cfg)
    info, source = recording_info(cfg, agent)

    def wrap(env: Any) -> Any:
        return RecordEpisode(env, root, agent=info, source=source)

    return wrap


def run(
    cfg: DictConfig,
    *,
    env: gym.Env | None = None,
    agent: Agent | None = None,
    episode_writer: EpisodeWriterFactory | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Play one episode of ``cfg.max_steps`` steps at most and return a summary:
    ``env_id``, ``goal``, ``seed``, ``steps``, ``return``, ``success``,
    ``terminated``, ``truncated``, ``actions`` and ``episode_dir`` (or None).

    ``env``/``agent`` default to the ones ``cfg`` describes; objects passed in
    are not closed here. ``episode_writer`` wraps the env to record it
    (default: :class:`RecordEpisode` when ``cfg.record``).
    """
    from agents.rollout import Episode, play

    own_env, own_agent = env is None, agent is None
    if agent is None:
        with refusing():
            check_agent(cfg, [env_id_of(cfg)] if env is None else [])
            agent = build_agent(cfg)
    recorder = None
    try:  # what was built here is closed if what follows it fails
        if env is None:
            with refusing():  # gym.make refuses the env's kwargs
                env = make_env(cfg)
        writer = episode_writer or _default_writer(cfg, agent)
        recorder = writer(env) if writer is not None else None
    except BaseException:
        if own_env and env is not None:
            env.close()
        if own_agent:
            agent.close()
        raise
    seed = cfg.get("seed")

    def show(
        t: int, action: Action, reward: float, obs: Observation, info: Mapping[str, Any], _: Any
    ) -> None:
        if t == 1:
            print(f"goal: {obs.get('goal') or cfg.get('goal') or ''}")
        print(_step_line(t, action, reward, obs, info))

    try:
        with refusing():  # a URL that does not open (open-v0 says why) or is refused
            episode = Episode(
                recorder if recorder is not None else env,
                agent,
                seed,
                options=_reset_options(cfg),
                max_steps=int(cfg.max_steps),
                on_step=show if verbose else None,
            )
        result = play(episode, agent)
    finally:
        if recorder is not None:
            recorder.close() if own_env else recorder.end_episode("abandoned")
        elif own_env:
            env.close()
        if own_agent:
            agent.close()
    summary: dict[str, Any] = {
        "env_id": _env_id(env, cfg),
        "seed": seed,
        "goal": result.goal,
        "steps": result.steps,
        "return": result.episode_return,
        "success": result.success,
        "terminated": result.terminated,
        "truncated": result.truncated,
        "actions": result.actions,
        "episode_dir": result.episode_dir,
    }
    if verbose:
        print(
            f"done: steps={result.steps} return={result.episode_return:.2f} success={result.success}"
            + (f" episode={result.episode_dir}" if result.episode_dir else "")
        )
    return summary


def run_episodes(cfg: DictConfig, *, verbose: bool = True) -> dict[str, Any]:
    """Play ``cfg.episodes`` episodes (seeds ``seed, seed+1, ...``) through the
    rollout engine (:mod:`agents.runners`; ``runner``, ``workers``), updating
    the agent after each success when ``cfg.online`` is set.

    With ``train``, episodes are played in rounds of the engine's ``slots``
    (one at a time with ``runner=local``, ``workers`` with ``vector``,
    ``workers * envs_per_worker`` with ``ray``); after a round, each of its successes (by
    seed) gets ``train.update(agent, episode_dir)``, and with ``runner=ray``
    every actor then loads the update's checkpoint, so the next round acts
    with the updated adapter everywhere.

    Returns ``{"episodes": [summary, ...], "success_rate", "updates"}``, the
    summaries sorted by seed; each is :func:`run`'s, plus ``status`` and
    ``update`` (what the trainer logged, or None).
    """
    from hydra.utils import instantiate

    from agents.runners import ray_spec_options, runner_options

    with refusing():
        n = int(cfg.get("episodes") or 1)
        options = runner_options(cfg)
        runner = options["runner"]
        ray_options = ray_spec_options(cfg, runner)
        check_agent(cfg, [env_id_of(cfg)])  # also for Ray actors, which build their own
        if cfg.get("online"):
            if not cfg.get("record", False):
                raise ValueError("online=... learns from the recorded episodes: keep record=true")
            _check_online_agent(cfg)
        trainer = instantiate(cfg.online) if cfg.get("online") else None
        # Ray actors build their own agents: the driver needs one only to learn online
        agent = build_agent(cfg) if runner != "ray" or trainer is not None else None
    try:
        return _play_episodes(cfg, n, options, ray_options, trainer, agent, verbose)
    finally:
        if agent is not None and hasattr(agent, "close"):
            agent.close()


def _check_online_agent(cfg: DictConfig) -> None:
    """``online=`` trains the acting model's adapter with torch: refuse an agent
    with no model, or one on another backend, before an episode is played."""
    backend = _backend_node(cfg) if "backend" in cfg.agent else None
    name = None if backend is None else backend_name(backend)
    if name != "transformers":
        has = "no model" if backend is None else f"the {name} backend"
        raise ValueError(
            f"online=... trains the acting model's LoRA adapter on the transformers backend; "
            f"{_agent_label(cfg)} has {has}: use agent=tiny, or agent=llm backend=transformers "
            "model=..."
        )


def _play_episodes(
    cfg: DictConfig,
    n: int,
    options: dict[str, Any],
    ray_options: dict[str, Any],
    trainer: Any,
    agent: Agent | None,
    verbose: bool,
) -> dict[str, Any]:
    """The body of :func:`run_episodes` once its agent is built (which that closes)."""
    import functools
    import random

    from agents.runners import Job, RolloutEngine, RolloutSpec, check_env_ids

    runner = options["runner"]
    info, source = recording_info(cfg, agent)
    record_dir = _episodes_root(cfg) if cfg.get("record", False) else None
    with refusing():
        spec = RolloutSpec(
            env_kwargs={
                "headless": bool(cfg.get("headless", True)),
                "max_episode_steps": int(cfg["max_steps"]),
                **dict(cfg.get("env_kwargs") or {}),
            },
            record_dir=None if record_dir is None else str(record_dir),
            agent_info=info,
            source=source,
            max_steps=int(cfg.max_steps),
            episode_timeout_s=cfg.get("episode_timeout_s"),
            **ray_options,
        )
        first = cfg.get("seed")
        if first is None:  # unseeded: seeds drawn at random, each printed and recorded
            first = random.SystemRandom().randrange(2**31 - n)
            if verbose:
                print(f"seed=null: seeds {first}..{first + n - 1}, drawn at random")
        jobs = [Job(env_id_of(cfg), first + i, _reset_options(cfg)) for i in range(n)]
        check_env_ids(jobs)  # before a browser or Ray starts
    summaries: list[dict[str, Any]] = []
    with RolloutEngine(
        spec,
        agent=None if runner == "ray" else agent,
        make_agent=functools.partial(build_agent, cfg),
        **options,
        keep_envs=True,
    ) as engine:
        earlier = getattr(trainer, "goes_on_from", None)  # an earlier online run's adapter
        if earlier is not None:
            engine.call_agents(functools.partial(_load_adapter, earlier), key="adapter")
        size = n if trainer is None else engine.slots
        for start in range(0, n, size):
            for r in engine.run(jobs[start : start + size]):
                summary = _summary(r)
                if trainer is not None and r.success:
                    summary["update"] = trainer.update(agent, r.episode_dir)
                    if summary["update"] is not None and runner == "ray":
                        checkpoint = summary["update"]["checkpoint"]
                        engine.call_agents(
                            functools.partial(_load_adapter, checkpoint), key="adapter"
                        )
                summaries.append(summary)
                if verbose:
                    _print_episode(summary)
    result = {
        "episodes": summaries,
        "success_rate": sum(bool(s["success"]) for s in summaries) / len(summaries),
        "updates": sum(s["update"] is not None for s in summaries),
    }
    if verbose:
        print(
            f"episodes={n} success_rate={result['success_rate']:.2f} updates={result['updates']} "
            f"runner={runner}"
        )
    return result


def _load_adapter(path: str, agent: Any) -> None:
    """Load an online update's adapter into a (Ray actor's) agent."""
    agent.backend.load_adapter(path)


def _summary(r: Any) -> dict[str, Any]:
    return {
        "env_id": r.env_id,
        "seed": r.seed,
        "goal": r.goal,
        "steps": r.steps,
        "return": r.episode_return,
        "success": r.success,
        "terminated": r.terminated,
        "truncated": r.truncated,
        "actions": r.actions,
        "episode_dir": r.episode_dir,
        "status": r.status,
        "error": r.error,
        "update": None,
    }


def _print_episode(s: Mapping[str, Any]) -> None:
    line = f"seed={s['seed']} steps={s['steps']} success={s['success']} {s['status']}"
    if s.get("error"):
        line += f": {s['error'].splitlines()[0]}"
    if s["update"] is not None:
        u = s["update"]
        line += f" update {u['update']}: {u['seconds']:.1f}s -> {u['checkpoint']}"
    print(line)


def _entry(cfg: DictConfig) -> dict[str, Any]:
    """One episode step by step (``run``) unless more, online learning, a
    runner other than ``local`` or ``episode_timeout_s`` is asked for: then the
    rollout engine plays them."""
    import gymnasium as gym

    import browser_env  # noqa: F401 - registers the browser_env/* ids
    from agents.runners import ray_spec_options, runner_options

    with refusing():
        cfg = check_options(cfg)
        runner = runner_options(cfg)["runner"]  # bad runner options fail here, early
        ray_spec_options(cfg, runner)
        gym.spec(env_id_of(cfg))  # an unknown env= too, before a model loads
    if (
        cfg.get("online")
        or int(cfg.get("episodes") or 1) > 1
        or runner != "local"
        or cfg.get("episode_timeout_s") is not None  # the engine keeps the clock
    ):
        return run_episodes(cfg)
    return run(cfg)


def _step_line(
    t: int, action: Any, reward: float, obs: Mapping[str, Any], info: Mapping[str, Any]
) -> str:
    line = (
        f"[{t:02d}] {json.dumps(action.to_dict(), ensure_ascii=False)} reward={float(reward):.2f}"
    )
    if info.get("guards"):
        line += " guards=" + ",".join(g["guard"] for g in info["guards"])
    parse = info.get("parse")
    if isinstance(parse, Mapping) and not parse.get("ok", True):
        line += f" parse_error={parse.get('error')!r}"
    if obs.get("last_action_error"):
        line += f" error={obs['last_action_error']!r}"
    return line


def _env_id(env: Any, cfg: Mapping[str, Any]) -> str:
    spec = getattr(env, "spec", None)
    if spec is not None:
        return str(spec.id)
    try:
        return env_id_of(cfg)
    except ValueError:
        return type(env).__name__


def _hydra_main(cfg: DictConfig) -> dict[str, Any]:
    """The ``@hydra.main`` task function: :func:`_entry`, a refusal in one line,
    Ctrl-C one line and status 130 (the episodes that ended are recorded)."""
    with exit_on_refusal(), exit_on_interrupt("stopped by Ctrl-C"):
        return _entry(cfg)


def main() -> None:
    import hydra

    register_config()
    hydra.main(version_base="1.3", config_path="../conf", config_name="run")(_hydra_main)()


if __name__ == "__main__":
    main()
