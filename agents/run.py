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
starts (:func:`agents.agent_config.check_agent`, :mod:`browser_env.refusal`): the command line prints
``error: <why>`` and exits with status 2; ``run(cfg)`` raises it as a
``ValueError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from agents.agent import Agent
from agents.agent_config import (
    agent_name,
    backend_node,
    check_agent,
    check_online_agent,
    with_model_overrides,
)
from agents.backend_group import backend_name
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
    "check_options",
    "main",
    "make_env",
    "env_id_of",
    "recording_info",
    "run",
    "run_episodes",
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


def build_agent(cfg: DictConfig) -> Agent:
    """Instantiate ``cfg.agent`` with the top-level ``model``/``adapter`` applied
    (:func:`agents.agent_config.with_model_overrides`)."""
    from hydra.utils import instantiate

    return instantiate(with_model_overrides(cfg).agent)


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
    backend = backend_node(built) if llm else None

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
            check_online_agent(cfg)
        trainer = instantiate(cfg.online) if cfg.get("online") else None
        # Ray actors build their own agents: the driver needs one only to learn online
        agent = build_agent(cfg) if runner != "ray" or trainer is not None else None
    try:
        return _play_episodes(cfg, n, options, ray_options, trainer, agent, verbose)
    finally:
        if agent is not None and hasattr(agent, "close"):
            agent.close()


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
