"""``RayVectorEnv``: a Gymnasium vector env whose sub-envs live in Ray actors.

::

    from browser_env.ray_local import init_ray
    from browser_env.ray_vector import RayVectorEnv

    init_ray()                                   # embedded, 127.0.0.1; RAY_ADDRESS joins a cluster
    envs = RayVectorEnv("browser_env/miniwob.click-button-v0", num_envs=4)
    obs, infos = envs.reset(seed=0)
    obs, rewards, terminated, truncated, infos = envs.step(actions)
    envs.close()                                 # each actor closes its browser, then is killed

Each sub-env is ``gymnasium.make(env_id, **env_kwargs)`` inside an actor of
its own (its own browser, on whichever node Ray places it). The vector
semantics are :class:`~gymnasium.vector.SyncVectorEnv`'s, reused rather than
rewritten: this class *is* a ``SyncVectorEnv`` whose sub-envs are thin
proxies, and before the inherited ``reset``/``step`` runs, every sub-env's
call for this step is sent to its actor at once, so the actors work in
parallel while the inherited loop collects their results in order. With the
``SameStep`` autoreset mode the actor resets right after a finished step, in
the same round trip. Results therefore match a ``SyncVectorEnv`` of the same
envs on the same seeds and actions, autoreset included. ``call``,
``get_attr``, ``set_attr`` and ``render`` go to all actors at once.

Ray is imported where it is used (``pip install "browser-rl[ray]"``); it is
started by :func:`browser_env.ray_local.init_ray`, re-exported here.
"""

from __future__ import annotations

import math
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import iterate

from browser_env.ray_local import _ray, check_placeable, close_actors, init_ray, shutdown_ray
from browser_env.vector import per_env_seeds

__all__ = ["RayVectorEnv", "init_ray"]

CLOSE_TIMEOUT_S = 120.0  # how long the actors have to close their browsers, all together


class EnvActor:
    """What each actor holds: one env made by ``gymnasium.make``."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        import browser_env  # noqa: F401 - registers the ids in the actor's process

        self.env = gym.make(env_id, **env_kwargs)

    def describe(self) -> dict[str, Any]:
        env = self.env
        return {
            "observation_space": env.observation_space,
            "action_space": env.action_space,
            "metadata": env.metadata,
            "render_mode": env.render_mode,
        }

    def pid(self) -> int:
        return os.getpid()

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> Any:
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> Any:
        return self.env.step(action)

    def step_then_reset(self, action: Any) -> tuple[Any, Any]:
        """``SameStep`` autoreset: the step, and the reset that follows when it ended the episode."""
        result = self.env.step(action)
        return result, self.env.reset() if result[2] or result[3] else None

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        attr = self.env.get_wrapper_attr(name)
        return attr(*args, **kwargs) if callable(attr) else attr

    def set_attr(self, name: str, value: Any) -> None:
        self.env.set_wrapper_attr(name, value)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class _RemoteEnv(gym.Env):
    """A sub-env proxy: calls its actor, or collects the call queued before the loop ran."""

    def __init__(self, actor: Any, description: dict[str, Any], spec: Any) -> None:
        self.actor = actor
        self.observation_space = description["observation_space"]
        self.action_space = description["action_space"]
        self.metadata = description["metadata"]
        self.render_mode = description["render_mode"]
        self.spec = spec
        self.queued: Any = None  # an object ref of this step's reset or step
        self.after_step: Any = None  # SameStep: the reset that followed the last step

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        ray = _ray()
        if self.after_step is not None:
            result, self.after_step = self.after_step, None
            return result
        ref, self.queued = self.queued, None
        return ray.get(ref if ref is not None else self.actor.reset.remote(seed, options))

    def step(self, action: Any) -> Any:
        ray = _ray()
        ref, self.queued = self.queued, None
        result = ray.get(ref if ref is not None else self.actor.step.remote(action))
        if isinstance(result, tuple) and len(result) == 2:  # step_then_reset
            result, self.after_step = result
        return result

    def render(self) -> Any:
        return _ray().get(self.actor.render.remote())

    def close(self) -> None:
        """Nothing: :meth:`RayVectorEnv.close` closes every actor at once."""


class RayVectorEnv(SyncVectorEnv):
    """``num_envs`` copies of ``env_id``, one per Ray actor (``num_cpus`` each).

    Ray must be initialised (see :func:`init_ray`) unless ``start_ray`` is
    True, in which case this env starts the embedded instance when none runs
    and shuts it down on ``close``.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        *,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        num_cpus: float = 1.0,
        start_ray: bool = True,
        **env_kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if num_cpus < 0:
            raise ValueError(f"num_cpus must be >= 0, got {num_cpus}")
        spec = gym.spec(env_id)  # an unknown id fails here, before Ray starts
        ray = _ray()
        # the embedded Ray declares room for every actor (logical CPUs: more
        # actors than cores share them), so none waits for ever to be placed
        self._own_ray = start_ray and init_ray(
            num_cpus=max(os.cpu_count() or 1, math.ceil(num_envs * num_cpus))
        )
        actor_cls = ray.remote(num_cpus=num_cpus, max_restarts=0)(EnvActor)
        actors: list[Any] = []
        try:
            names = ("num_envs", "num_cpus", "num_gpus")
            check_placeable(num_envs, num_cpus, names=names, stacklevel=2)
            actors.extend(actor_cls.remote(env_id, env_kwargs) for _ in range(num_envs))
            descriptions = ray.get([actor.describe.remote() for actor in actors])
        except BaseException:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            if self._own_ray:
                shutdown_ray()
            raise
        proxies = [_RemoteEnv(a, d, spec) for a, d in zip(actors, descriptions, strict=True)]
        self.actors = actors
        try:
            super().__init__(
                [lambda proxy=proxy: proxy for proxy in proxies],
                copy=copy,
                autoreset_mode=autoreset_mode,
            )
        except BaseException:  # e.g. an unknown autoreset_mode: nobody gets an env to close
            self.close()
            raise

    def _check_open(self) -> None:
        if self.closed:  # Ray would start a plain, unconfigured instance of its own
            raise RuntimeError("this RayVectorEnv is closed")

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        self._check_open()
        seeds = per_env_seeds(seed, self.num_envs)
        has_mask = options is not None and "reset_mask" in options
        mask = options.get("reset_mask") if options else None
        sub_options = {k: v for k, v in options.items() if k != "reset_mask"} if options else None
        # only a call the inherited reset accepts reaches the actors: it raises
        # its own error for a bad seed list or mask, and no env was reset
        valid_mask = (
            isinstance(mask, np.ndarray)
            and mask.shape == (self.num_envs,)
            and mask.dtype == np.bool_
            and bool(mask.any())
        )
        if len(seeds) == self.num_envs and (not has_mask or valid_mask):
            for i, env in enumerate(self.envs):
                if not has_mask or mask[i]:
                    env.queued = env.actor.reset.remote(seeds[i], sub_options)
        return super().reset(seed=seed, options=options)

    def step(self, actions: Any) -> Any:
        self._check_open()
        for i, (env, action) in enumerate(
            zip(self.envs, iterate(self.action_space, actions), strict=True)
        ):
            if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset_envs[i]:
                # the inherited step steps the envs before this one, then its
                # assertion refuses: the envs after it must not have stepped
                break
            if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._autoreset_envs[i]:
                env.queued = env.actor.reset.remote(None, None)
            elif self.autoreset_mode == AutoresetMode.SAME_STEP:
                env.queued = env.actor.step_then_reset.remote(action)
            else:
                env.queued = env.actor.step.remote(action)
            env.after_step = None
        return super().step(actions)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        self._check_open()
        ray = _ray()
        return tuple(ray.get([a.call.remote(name, args, kwargs) for a in self.actors]))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        self._check_open()
        ray = _ray()
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"values must have length num_envs={self.num_envs}, got {len(values)}")
        ray.get([a.set_attr.remote(name, v) for a, v in zip(self.actors, values, strict=True)])

    def render(self) -> tuple[Any, ...]:
        self._check_open()
        return tuple(_ray().get([a.render.remote() for a in self.actors]))

    def close_extras(self, **kwargs: Any) -> None:
        """Every actor closes its env (and browser), all at once and for at most
        ``CLOSE_TIMEOUT_S`` in all, then is killed; then Ray stops if ours."""
        try:
            close_actors(self.actors, CLOSE_TIMEOUT_S)
        finally:
            if self._own_ray:
                shutdown_ray()
