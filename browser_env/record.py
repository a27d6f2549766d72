"""Record a person's demonstration as an episode (``source: human``): the
``python -m browser_env.record`` command line.

``python -m browser_env.record url=https://example.com goal="Find the price"``
opens a visible browser on the page (``env=miniwob.<task>
seed=3`` records a MiniWoB++ task instead) and records the person's input
with :class:`~browser_env.demo_recorder.DemoRecorder` (which documents how
input becomes actions) until Enter in the terminal, the window closing or the
task ending; then it asks in the terminal for the answer that the final
``FINISH`` carries, and writes the episode. :func:`record` is that session as
a function, :func:`run` the Hydra entry point's body over
:class:`RecordConfig`. ``DemoRecorder`` is re-exported here.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from browser_env.browser import check_display
from browser_env.cli_help import help_field
from browser_env.demo_recorder import DemoRecorder
from browser_env.refusal import exit_on_interrupt, exit_on_refusal, refusing
from browser_env.registration import env_id, resolve_env_id
from browser_env.rundir import run_dir
from browser_env.tasks.open import check_start_url

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["DemoRecorder", "RecordConfig", "main", "record", "register_config", "run"]


@dataclasses.dataclass
class RecordConfig:
    """What ``python -m browser_env.record`` takes (``key=value`` overrides): the
    one place of its defaults, registered as the structured config
    ``record_schema`` that ``conf/record.yaml`` builds on (:func:`register_config`),
    so a misspelt key or a value of the wrong kind is Hydra's error naming it."""

    url: str | None = help_field(None, "The page to start on (the open-ended task open-v0).")
    goal: str = help_field("", "The instruction the demonstration fulfils.")
    answer: str | None = help_field(None, "The expected FINISH answer, if any (open-v0 checks it).")
    env: str | None = help_field(
        None,
        "Instead of url: an env, e.g. miniwob.click-button (any spelling resolve_env_id takes).",
    )
    seed: int = help_field(0, "The env's seed for the recorded episode.")
    episodes_dir: str | None = help_field(
        None, "Where the episode is written; null: <hydra run dir>/episodes."
    )
    headless: bool = help_field(False, "Run Chromium without a window (a person needs one).")
    executable_path: str | None = help_field(
        None, "The Chromium binary; null: the one browser_env finds."
    )
    env_kwargs: dict[str, Any] = help_field(
        {},
        "Extra BrowserEnv arguments, one key each on the command line: "
        "+env_kwargs.viewport=[1024,768], +env_kwargs.allowed_url_schemes=[http,https,file].",
    )


class _TerminalLines:
    """The one reader of stdin: a daemon thread reads a line only when one is
    asked for, so nothing is read ahead of the code that wants it.

    :meth:`next_line` is the next line no one has taken (:meth:`take`; ``""``
    at the end of stdin): until its line is taken every call returns the same
    future, read or still being read, so the line the person types after the
    window closed goes to whoever asks next (the answer), not to a reader
    that was waiting for the stop line and gave up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Future[str] | None = None
        self._taken = False
        self._requests: queue.SimpleQueue[Future[str]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def next_line(self) -> Future[str]:
        with self._lock:
            if self._pending is None or self._taken:
                self._pending, self._taken = Future(), False
                self._requests.put(self._pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._read, name="stdin", daemon=True)
                self._thread.start()
            return self._pending

    def _read(self) -> None:
        while True:
            future = self._requests.get()
            try:
                line = sys.stdin.readline()
            except BaseException as exc:  # noqa: BLE001 - e.g. no stdin: handed to the asker
                future.set_exception(exc)
            else:
                future.set_result(line)

    def take(self, line: Future[str]) -> str:
        """``line``'s text, which is then no one else's: the next
        :meth:`next_line` is a new read."""
        text = line.result()
        with self._lock:
            if line is self._pending:
                self._taken = True
        return text

    def ask(self, prompt: str) -> str:
        """``input(prompt)`` through this reader (``EOFError`` at the end of stdin)."""
        print(prompt, end="", flush=True)
        line = self.take(self.next_line())
        if not line:
            raise EOFError("EOF when reading a line")
        return line.rstrip("\r\n")


# Per process, as stdin is: a second reader would take lines meant for this one.
_TERMINAL = _TerminalLines()


def _env_and_options(cfg: RecordConfig) -> tuple[str, dict[str, Any] | None]:
    """The Gymnasium id to record on and its reset options: ``env`` in any
    spelling :func:`resolve_env_id` takes, else ``open-v0`` on ``url``."""
    if cfg.env:
        return resolve_env_id(cfg.env), None
    if not cfg.url:
        raise ValueError("give url=... goal=... (or env=miniwob.<task>)")
    check_start_url(cfg.url)  # before the browser starts, not ~2 s into its first page
    schemes = [str(s).lower() for s in cfg.env_kwargs.get("allowed_url_schemes", ("http", "https"))]
    scheme = urlparse(cfg.url).scheme.lower()
    if cfg.url != "about:blank" and scheme not in schemes:
        raise ValueError(
            f"{scheme}: URLs are not allowed (allowed_url_schemes={schemes}); to record one, "
            f"add it: '+env_kwargs.allowed_url_schemes=[http,https,{scheme}]'"
        )
    options: dict[str, Any] = {"url": cfg.url, "goal": cfg.goal}
    if cfg.answer is not None:
        options["answer"] = cfg.answer
    return env_id("open", family=None), options


def record(
    cfg: RecordConfig | Mapping[str, Any],
    root: str | Path,
    *,
    ask: Callable[[str], str] | None = None,
) -> Path:
    """Open a browser, record until Enter in the terminal, the window closes or
    the task ends, ask for the answer, write the episode; returns its directory.

    The terminal is read by one reader only (:class:`_TerminalLines`): the first
    line stops the recording whatever it says; when the window closed first,
    the read that waited for that line is the answer's, so the person types the
    answer once, on a TTY as through a pipe. When the task ended by itself no
    answer is asked, and the read still waiting is the next recording's stop
    line. The answer is asked for with ``ask`` (default: that reader; pass e.g.
    a GUI prompt, never ``input``, which would compete with the reader for the
    line). The end of stdin stops the recording and, where an answer is needed,
    aborts the episode (kept, incomplete) and raises ``EOFError`` naming it.
    Refused before a browser starts (a ``ValueError``): a ``cfg`` that names no
    task or a bad start URL, an unknown env, ``env_kwargs`` the env does not
    take, and a window wanted where there is no display.
    """
    import gymnasium

    import browser_env  # noqa: F401 - registers the env ids

    if not isinstance(cfg, RecordConfig):
        cfg = RecordConfig(**dict(cfg))
    kwargs: dict[str, Any] = {
        "render_mode": "rgb_array",
        "headless": cfg.headless,
        **cfg.env_kwargs,
    }
    if cfg.executable_path:
        kwargs["executable_path"] = cfg.executable_path
    with refusing():  # what a command line gets wrong, refused before a browser starts
        gym_id, options = _env_and_options(cfg)
        gymnasium.spec(gym_id)  # an unknown id: NameNotFound, with "Did you mean"
        check_display(
            cfg.headless,
            wanted="recording shows a browser window to act in",
            fix="run it on a desktop, or under xvfb-run to try it",
        )
        env = _make_env(gym_id, kwargs)  # no browser yet: it starts at reset
    recorder = DemoRecorder(
        env, root, seed=cfg.seed, options=options, env_kwargs=cfg.env_kwargs, log=print
    )
    try:
        path = recorder.start()
        print(
            f"recording to {path}\ngoal: {recorder.base.goal}\nact in the browser; press Enter here (or close the window) to stop"
        )
        stop = _TERMINAL.next_line()
        while not stop.done() and not recorder.window_closed and not recorder.done:
            recorder.poll(100)
        if stop.done():  # the person pressed Enter: that line was the stop
            _TERMINAL.take(stop)
        answer = None
        if not recorder.done:
            try:
                answer = (ask or _TERMINAL.ask)("final answer (empty for none): ").strip()
            except EOFError:
                print()  # the prompt's line ends here, not in what is printed next
                recorder.abort("interrupted")
                raise EOFError(
                    f"stdin ended before the final answer: {path} is kept as an incomplete "
                    "episode (interrupted)"
                ) from None
        recorder.finish(answer)
    except BaseException:
        if recorder.writer is not None:
            recorder.abort("interrupted")
        raise
    finally:
        env.close()
    print(f"episode written to {path}")
    return path


def _make_env(gym_id: str, kwargs: Mapping[str, Any]) -> Any:
    """``gymnasium.make(gym_id, **kwargs)``, where a ``TypeError`` (an
    ``env_kwargs`` key the env does not take, or a value of the wrong kind) is a
    ``ValueError`` naming what the env said: the command line's mistake."""
    import gymnasium

    try:
        return gymnasium.make(gym_id, **kwargs)
    except TypeError as exc:  # gymnasium re-raises it with every kwarg: the env's own words
        raise ValueError(f"env_kwargs: {exc.__cause__ or exc}") from exc


def run(cfg: DictConfig | Mapping[str, Any]) -> Path:
    """The Hydra entry point's body: ``cfg`` has :class:`RecordConfig`'s keys."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, Mapping) else dict(cfg)
    root = data.get("episodes_dir")
    if root is None:
        root = run_dir() / "episodes"
    return record(
        RecordConfig(**{k: v for k, v in data.items() if k in RecordConfig.__dataclass_fields__}),
        root,
    )


def register_config() -> None:
    """Store :class:`RecordConfig` in Hydra's ConfigStore as ``record_schema``
    (``conf/record.yaml``'s base); call before Hydra composes it. Registers the ``--help``
    resolver too (:mod:`browser_env.cli_help`). Safe to repeat."""
    from hydra.core.config_store import ConfigStore

    from browser_env import cli_help

    ConfigStore.instance().store(name="record_schema", node=RecordConfig)
    cli_help.register()  # --help (conf/hydra/help/browser_rl.yaml)


#: what a Ctrl-C of the command prints (:func:`record` aborts the episode, kept)
_STOPPED = "record: stopped by Ctrl-C; the episode so far is kept as incomplete (interrupted)"


def _task(cfg: DictConfig) -> None:
    """The ``@hydra.main`` task: :func:`run`, a refusal in one line; stdin
    ending before the answer (the episode kept, incomplete) in one line too,
    with status 1; Ctrl-C in one line, with status 130."""
    with exit_on_refusal(), exit_on_interrupt(_STOPPED):
        try:
            run(cfg)
        except EOFError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None


def main() -> None:
    import hydra

    register_config()
    hydra.main(version_base="1.3", config_path="../conf", config_name="record")(_task)()


if __name__ == "__main__":
    main()
