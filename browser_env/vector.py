"""Many envs in one Chromium: :class:`SharedBrowser` and :class:`SharedBrowserVectorEnv`.

::

    envs = gymnasium.make_vec("browser_env/miniwob.click-button-v0", num_envs=8)
    obs, infos = envs.reset(seed=0)              # seeds 0..7, one per sub-env
    obs, rewards, terminated, truncated, infos = envs.step(actions)   # a tuple of 8 actions

Every registered id has this class as its ``vector_entry_point``, so
``make_vec`` gives N sub-envs that are N browser *contexts* of one Chromium
(``vectorization_mode="sync"``/``"async"`` still give one browser per sub-env).
A context is Chromium's incognito profile: its own cookies, storage, cache and
renderer processes, so sub-envs cannot see each other's state and a renderer
crash in one leaves the others running (the crashed env opens a fresh page on
its next step). What is shared is the browser process, its GPU and network
service processes and the Playwright driver: the memory and CPU that a second
browser would cost.

The vector semantics are Gymnasium's own: this is a
:class:`~gymnasium.vector.SyncVectorEnv` (autoreset modes, ``call``,
``get_attr``, ``set_attr``, ``render``, batched observations and infos) whose
sub-envs are the same ``gymnasium.make(env_id)`` envs one would make by hand,
only handed a shared browser. Per sub-env results are therefore those of N
separate envs on the same seeds and actions.

Stepping: a :class:`~gymnasium.vector.SyncVectorEnv` steps its sub-envs one
after another. This one steps them concurrently on the caller's thread
(:func:`browser_env.concurrent.run_concurrently`: one greenlet per sub-env on
Playwright's own event loop, how its sync event handlers already run), so
while one context renders or runs its observation script, the others' calls
are in flight. Measured with ``python -m benchmarks.rollout_speed`` (README):
on 2 cores, N = 8 contexts stepped concurrently use less CPU per env step than
one env and step faster in aggregate, where stepping them one after another
used about as much CPU per step as one env and left a core idle.
``concurrent=False`` steps them one after another (for debugging; the
results are the same). Why greenlets and not Playwright's async API or
threads: every sub-env stays the ordinary sync
:class:`~browser_env.env.BrowserEnv` (one env implementation, not a second
async one to keep identical), and one Playwright driver serves them all (sync
Playwright needs a driver per thread). For parallelism beyond one browser use
several processes (``vectorization_mode="async"`` with
``vector_kwargs={"shared_memory": False}``: the text spaces have no shared-memory
layout) or Ray actors
(:class:`browser_env.ray_vector.RayVectorEnv`), each of which can hold a
shared-browser vector env of its own.

All sub-envs, and the :class:`SharedBrowser`, must be used from the thread that
created them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import iterate

from browser_env.browser import (
    BrowserConfig,
    driver_alive,
    kill_browser_processes,
    launch_on_driver,
    process_running,
    release_playwright,
    switches,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from browser_env.concurrent import Latch

__all__ = [
    "LAUNCH_KWARGS",
    "VECTOR_ENTRY_POINT",
    "SharedBrowser",
    "SharedBrowserVectorEnv",
    "launch_config",
    "per_env_seeds",
    "registered_id",
]

VECTOR_ENTRY_POINT = "browser_env.vector:SharedBrowserVectorEnv"

#: A BrowserEnv's keyword arguments that say how to launch its browser: with a
#: shared browser they are its owner's (:class:`SharedBrowser`), not the env's.
LAUNCH_KWARGS = ("headless", "executable_path", "slow_mo_ms", "extra_args")


def launch_config(env_kwargs: dict[str, Any]) -> tuple[BrowserConfig, dict[str, Any]]:
    """The browser that envs of ``env_kwargs`` would each launch, for a
    :class:`SharedBrowser` to launch once, and the kwargs left for the envs.
    As :class:`~browser_env.env.BrowserEnv` does, ``render_mode="human"``
    shows the window whatever ``headless`` says."""
    rest = dict(env_kwargs)
    launch = {key: rest.pop(key) for key in LAUNCH_KWARGS if key in rest}
    if rest.get("render_mode") == "human":
        launch["headless"] = False
    return BrowserConfig(**launch), rest


class SharedBrowser:
    """One Chromium that several :class:`~browser_env.env.BrowserEnv` open contexts in.

    Pass it as ``BrowserEnv(browser=shared)``: calling it returns the live
    browser, launching it on first use and again after it or its Playwright
    driver died (``relaunches`` counts those; a dead driver is replaced, what
    is left of a dead browser's processes killed). A call made while another
    is launching it (a greenlet of :func:`run_concurrently`) waits for that
    launch rather than launch a second. It holds a
    reference on this thread's Playwright driver until :meth:`close` (safe
    twice; closes the browser, so close the envs first). Use it on the thread
    that created it.
    """

    def __init__(self, config: BrowserConfig | None = None) -> None:
        self.config = config or BrowserConfig()
        self.relaunches = 0
        self._thread = threading.get_ident()
        self._playwright: Any = None
        self._browser: Browser | None = None
        self._closed = False
        self._launching: Latch | None = None  # a launch under way, which others wait for
        self._pid: int | None = None

    def __call__(self) -> Browser:
        if self._closed:
            raise RuntimeError("this SharedBrowser is closed")
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "a SharedBrowser is bound to the thread that created it (Playwright's sync API)"
            )
        if self._browser is not None and not self._alive():
            kill_browser_processes(self._pid)  # renderers a killed browser left, say
            self._browser = None
            self.relaunches += 1
        if self._browser is None:
            if self._launching is not None:  # a greenlet of run_concurrently launches it
                self._launching.wait()
                if self._browser is None:
                    raise RuntimeError("the shared browser's launch by a concurrent call failed")
                return self._browser
            from browser_env.concurrent import Latch

            # what calls made meanwhile wait on (e.g. the browser died during a round
            # of run_concurrently, and each sub-env's reset asks for a new one)
            self._launching = launched = Latch(self._playwright)
            try:
                held, self._playwright = self._playwright, None  # a failed launch releases it
                self._playwright, self._browser, self._pid = launch_on_driver(held, self.config)
            finally:
                self._launching = None
                launched.open()
        return self._browser

    def _alive(self) -> bool:
        """Whether the browser still runs: its driver too (a dead driver takes its
        browsers down), and its main process, which is checked because Playwright
        notes a disconnection only when its event loop next runs."""
        if not (driver_alive(self._playwright) and self._browser.is_connected()):
            return False
        return self._pid is None or process_running(self._pid)

    @property
    def playwright(self) -> Any:
        """The Playwright driver the browser runs on (``None`` before the first launch)."""
        return self._playwright

    @property
    def browser(self) -> Browser | None:
        """The browser if one is running, without launching one."""
        return self._browser

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        browser, self._browser = self._browser, None
        try:
            if browser is not None:
                browser.close()
        except Exception:  # noqa: BLE001 - a dead browser is closed already
            pass
        finally:
            kill_browser_processes(self._pid)  # what a failed close left, and its temp dir
            if self._playwright is not None:
                self._playwright = None
                release_playwright()

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedBrowser:
        # A handle on a running browser, not a value: Gymnasium deep-copies env
        # specs (whose kwargs hold it), and a copy would be a second, dead handle.
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a SharedBrowser cannot be pickled: it is bound to its thread's browser")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._browser else "not started"
        return f"SharedBrowser({state})"

    def __enter__(self) -> SharedBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def registered_id(task: str) -> str | None:
    """The registered ``browser_env`` id whose env plays ``task``, or None."""
    candidate = f"browser_env/{task}-v0"
    if candidate in gym.registry:
        return candidate
    for spec in gym.registry.values():
        if spec.vector_entry_point == VECTOR_ENTRY_POINT and spec.kwargs.get("task") == task:
            return spec.id
    return None


class SharedBrowserVectorEnv(SyncVectorEnv):
    """``num_envs`` sub-envs, each its own context of one shared Chromium.

    Args:
        num_envs: how many sub-envs.
        env_id: the registered id of every sub-env; default: the id registered
            for ``task`` (``make_vec`` passes the spec's kwargs, not its id).
        max_episode_steps: ``TimeLimit`` of each sub-env (default: the id's).
        autoreset_mode, copy: as for :class:`~gymnasium.vector.SyncVectorEnv`.
        concurrent: step and reset the sub-envs concurrently (module doc);
            ``False`` does it one after another, with the same results. They
            differ only in what a call that raises leaves behind (``step``).
        wrappers: applied to each sub-env in order (e.g. a ``RecordEpisode``
            factory); not through ``make_vec``, which forbids them for
            vector entry points.
        browser: a :class:`SharedBrowser` owned by the caller (e.g. shared by
            several vector envs, one per task); default: one of its own, closed
            with this env.
        headless, executable_path, slow_mo_ms, extra_args: how to launch its own
            browser (:class:`~browser_env.browser.BrowserConfig`).
        **env_kwargs: passed to each sub-env (``task``, ``modalities``, ...).
    """

    def __init__(
        self,
        num_envs: int = 1,
        *,
        env_id: str | None = None,
        max_episode_steps: int | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        concurrent: bool = True,
        wrappers: Sequence[Callable[[gym.Env], gym.Env]] = (),
        browser: SharedBrowser | None = None,
        headless: bool = True,
        executable_path: str | None = None,
        slow_mo_ms: float = 0.0,
        extra_args: Sequence[str] = (),
        **env_kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if env_id is None and "task" in env_kwargs:
            env_id = registered_id(str(env_kwargs["task"]))
        launch = {
            "headless": headless,
            "executable_path": executable_path,
            "slow_mo_ms": slow_mo_ms,
            "extra_args": switches(extra_args),
        }
        if browser is not None:
            default = BrowserConfig()
            given = [k for k, v in launch.items() if v != getattr(default, k)]
            if given:  # else silently not the browser the caller asked for
                raise ValueError(
                    f"{', '.join(given)}: how to launch a browser, but browser= is given: "
                    "its owner launches it (SharedBrowser(BrowserConfig(...)))"
                )
        config, env_kwargs = launch_config({**env_kwargs, **launch})
        self.concurrent = bool(concurrent)
        self._own_browser = browser is None
        self.browser = SharedBrowser(config) if browser is None else browser
        self.env_id = env_id

        def make_one() -> gym.Env:
            kwargs = {**env_kwargs, "browser": self.browser}
            if max_episode_steps is not None:
                kwargs["max_episode_steps"] = max_episode_steps
            if env_id is not None:
                env = gym.make(env_id, **kwargs)
            else:
                from gymnasium.wrappers import TimeLimit

                from browser_env.env import BrowserEnv

                limit = kwargs.pop("max_episode_steps", None)
                env = BrowserEnv(**kwargs)
                env = TimeLimit(env, limit) if limit else env
            for wrapper in wrappers:
                env = wrapper(env)
            return env

        try:
            super().__init__(
                [make_one for _ in range(num_envs)], copy=copy, autoreset_mode=autoreset_mode
            )
        except BaseException:
            if self._own_browser:
                self.browser.close()
            raise

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Gymnasium's :meth:`SyncVectorEnv.step`, with the sub-envs' calls run
        concurrently first and handed to it in its order.

        When a sub-env's call raises (a wrapper's write that failed, say), the
        first such exception in sub-env order is raised and the step returns
        nothing. Concurrently, every other sub-env's call has still run to its
        end (they were in flight together): all the others have stepped (or
        reset, as the autoreset mode has them), not only those before it as in
        :class:`~gymnasium.vector.SyncVectorEnv` (what ``concurrent=False``
        does). Either way the results of the calls that ran are lost and the
        vector env's own state (which sub-envs to autoreset) is not updated:
        ``reset`` it before stepping on. The same holds for :meth:`reset`.

        ``actions`` holds one action per sub-env (a sequence of ``num_envs``);
        another count is a ``ValueError`` before any sub-env steps."""
        if isinstance(actions, (list, tuple)) and len(actions) != self.num_envs:
            raise ValueError(
                f"step() takes one action per sub-env: {self.num_envs} expected, got {len(actions)}"
            )
        if not self._concurrent_now():
            return super().step(actions)
        mode = AutoresetMode(self.autoreset_mode)
        if mode is AutoresetMode.DISABLED and self._autoreset_envs.any():
            # Gymnasium's own: it steps the sub-envs before the first that needs a
            # reset, then fails its assertion
            return super().step(actions)
        per_env = list(iterate(self.action_space, actions))

        def one(i: int) -> list[tuple[str, Any]]:
            env = self.envs[i]
            if mode is AutoresetMode.NEXT_STEP and self._autoreset_envs[i]:
                return [("reset", env.reset())]
            result = env.step(per_env[i])
            calls = [("step", result)]
            if mode is AutoresetMode.SAME_STEP and (result[2] or result[3]):
                calls.append(("reset", env.reset()))
            return calls

        return self._replaying(one, lambda: super(SharedBrowserVectorEnv, self).step(actions))

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Gymnasium's :meth:`SyncVectorEnv.reset`, the sub-envs reset concurrently."""
        seeds = per_env_seeds(seed, self.num_envs)
        mask = (options or {}).get("reset_mask", np.ones(self.num_envs, dtype=np.bool_))
        simple = (
            len(seeds) == self.num_envs
            and isinstance(mask, np.ndarray)
            and mask.shape == (self.num_envs,)
            and mask.dtype == np.bool_
            and mask.any()
        )
        if not self._concurrent_now() or not simple:
            return super().reset(seed=seed, options=options)  # its own errors for bad input
        env_options = {k: v for k, v in options.items() if k != "reset_mask"} if options else None

        def one(i: int) -> list[tuple[str, Any]]:
            if not mask[i]:
                return []
            return [("reset", self.envs[i].reset(seed=seeds[i], options=env_options))]

        return self._replaying(
            one, lambda: super(SharedBrowserVectorEnv, self).reset(seed=seed, options=options)
        )

    def _concurrent_now(self) -> bool:
        return self.concurrent and self.num_envs > 1 and not self.closed

    def _replaying(self, one: Callable[[int], list[tuple[str, Any]]], gymnasium_call: Any) -> Any:
        """Run ``one(i)`` for every sub-env concurrently, then ``gymnasium_call``
        with each sub-env replaced by a replay of the calls it made."""
        from browser_env.concurrent import run_concurrently

        self.browser()  # launched (or relaunched) here, not by several sub-envs at once
        recorded = run_concurrently(
            [lambda i=i: one(i) for i in range(self.num_envs)], self.browser.playwright
        )
        envs = self.envs
        self.envs = [_Replay(env, calls) for env, calls in zip(envs, recorded, strict=True)]
        try:
            return gymnasium_call()
        finally:
            self.envs = envs

    def close_extras(self, **kwargs: Any) -> None:
        """Close every sub-env's context, then the browser when this env owns
        it, all of them even when one raises; then raise the first exception
        (:func:`close_all`)."""
        envs = list(getattr(self, "envs", ()))
        close_all([self.browser, *envs] if self._own_browser else envs)  # last first


def close_all(envs: Sequence[Any]) -> None:
    """Close every env, last first, even when one raises (e.g. a recorder's failed
    background write); then raise the first exception."""
    failed: BaseException | None = None
    for env in reversed(envs):
        try:
            env.close()
        except Exception as exc:  # noqa: BLE001 - raised after the others are closed
            failed = failed or exc
    if failed is not None:
        raise failed


def per_env_seeds(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """The sub-envs' seeds of a vector ``reset(seed=...)``, as Gymnasium's
    ``SyncVectorEnv`` derives them: ``None`` for all, ``seed + i``, or the list."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int):
        return [seed + i for i in range(num_envs)]
    return list(seed)


class _Replay:
    """A sub-env as SyncVectorEnv sees it while it assembles a concurrent step:
    ``step``/``reset`` hand back, in order, the results the real env already gave."""

    def __init__(self, env: gym.Env, calls: list[tuple[str, Any]]) -> None:
        self.env, self.calls = env, list(calls)

    def _next(self, kind: str) -> Any:
        if not self.calls or self.calls[0][0] != kind:
            raise RuntimeError(
                f"SharedBrowserVectorEnv expected Gymnasium to call {self.calls[:1] or 'nothing'}, "
                f"not {kind}: its SyncVectorEnv changed; pass concurrent=False"
            )
        return self.calls.pop(0)[1]

    def step(self, action: Any) -> Any:
        return self._next("step")

    def reset(self, **kwargs: Any) -> Any:
        return self._next("reset")
