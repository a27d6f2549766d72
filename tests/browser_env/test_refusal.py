"""``browser_env.refusal``: what a run refuses before it starts becomes ``Refused``
(still a ``ValueError``), and the command line prints it as ``error:`` lines."""

from __future__ import annotations

import gymnasium as gym
import pytest
from omegaconf import OmegaConf

from browser_env.refusal import Refused, exit_on_refusal, refusing


def test_refusals_are_value_errors_chained_to_their_cause():
    with pytest.raises(Refused, match="^episodes must be >= 1$") as raised, refusing():
        raise ValueError("episodes must be >= 1")
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value.__cause__, ValueError)
    with pytest.raises(Refused, match="doesn't exist") as raised, refusing():
        gym.spec("browser_env/miniwob.no-such-task-v0")
    assert isinstance(raised.value.__cause__, gym.error.NameNotFound)


@pytest.mark.parametrize(
    ("config", "key", "how"),
    [
        ({"agent": {"backend": {"model": "???"}}}, "agent.backend.model", "e.g. model=tiny-random"),
        ({"backend": {"model": "???"}}, "backend.model", "model=/path/to/model"),
        ({"suite": {"name": "???"}}, "suite.name", "(suite.name=...)"),
    ],
)
def test_a_value_left_unset_names_its_key_and_how_to_set_it(config, key, how):
    cfg = OmegaConf.create(config)
    with pytest.raises(Refused) as raised, refusing():
        OmegaConf.select(cfg, key, throw_on_missing=True)
    message = str(raised.value)
    assert message.startswith(f"{key} has no value: set it on the command line")
    assert how in message and "\n" not in message


def test_what_an_agent_refused_while_hydra_built_it_is_a_refusal():
    from hydra.utils import instantiate

    with pytest.raises(Refused, match="no scripted expert for task 'nope'"), refusing():
        instantiate({"_target_": "agents.experts.ScriptedExpert", "task": "nope"})
    with pytest.raises(Exception, match="division by zero") as raised, refusing():
        instantiate({"_target_": "operator.truediv", "_args_": [1, 0]})  # a bug stays a bug
    assert not isinstance(raised.value, Refused)


@pytest.mark.parametrize("error", [RuntimeError("browser crashed"), OSError("no disk"), KeyError()])
def test_other_errors_pass_through_unchanged(error):
    with pytest.raises(type(error)) as raised, refusing():
        raise error
    assert not isinstance(raised.value, Refused)


def test_exit_on_refusal_prints_each_line_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as raised, exit_on_refusal():
        raise Refused("first line\nsecond line")
    assert raised.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: first line\nerror: second line\n" and captured.out == ""
    with pytest.raises(ValueError, match="not a refusal"), exit_on_refusal():
        raise ValueError("not a refusal")  # only Refused is caught
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # a library's ValueError as a model loads
    with pytest.raises(Refused, match="whole traceback") as raised, exit_on_refusal(), refusing():
        raise ValueError("whole traceback")
    assert isinstance(raised.value.__cause__, ValueError)


def test_an_error_after_a_ctrl_c_is_taken_for_the_interrupt(sigint_raises, monkeypatch, capsys):
    """Ctrl-C reaches Chromium too: a fresh-clone run of ``benchmarks.run`` ended
    in Playwright's "Target closed" traceback and status 1, the interrupt
    itself lost. An error out of the block after a SIGINT is now the
    interrupt (status 130, the note, no traceback); one with no SIGINT before
    it, or a SystemExit, passes through; the handler is Python's again after."""
    import os
    import signal

    from browser_env.refusal import exit_on_interrupt

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(RuntimeError, match="Target closed"), exit_on_interrupt("kept 1"):
        raise RuntimeError("Target closed")
    with pytest.raises(SystemExit) as exited, exit_on_interrupt("kept 1"):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs between bytecodes of the main thread
                pass
        except KeyboardInterrupt:
            pass  # dropped, as Python drops it inside a weakref callback
        raise RuntimeError("Target closed")
    assert exited.value.code == 130 and capsys.readouterr().err == "kept 1\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(SystemExit) as exited, exit_on_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                pass
        except KeyboardInterrupt:
            pass
        raise SystemExit(143)  # SIGTERM's: not the interrupt's
    assert exited.value.code == 143


def test_a_refused_run_leaves_a_dir_another_run_holds_as_it_was(tmp_path, monkeypatch):
    """A second ``benchmarks.run`` into the ``output_dir`` of one still loading
    its model (only Hydra's files there yet) took them for its own refused
    run's and removed them, and the dir: the first run then wrote into a
    deleted, unlocked dir. A held dir is left alone; a free one is cleaned."""
    from browser_env.dirlock import hold_dir
    from browser_env.refusal import _drop_run_dir

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "x"
    (run_dir / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).write_text("{}\n")
    log = run_dir / "run.log"
    log.write_text("")
    with hold_dir(run_dir):  # the first run
        _drop_run_dir((run_dir.resolve(), log.resolve()))
        assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == [
            "config.yaml",
            "hydra.yaml",
            "overrides.yaml",
        ]
        assert log.is_file()
    _drop_run_dir((run_dir.resolve(), log.resolve()))  # no one holds it: a refused run's own
    assert not run_dir.exists() and (tmp_path / "runs").is_dir()  # outputs/ itself stays


def test_an_error_long_after_a_dropped_ctrl_c_keeps_its_traceback(sigint_raises, monkeypatch):
    """A run that went on after a Ctrl-C Python dropped, and failed for real
    later, ended with status 130 and no word: only an error within
    INTERRUPT_FALLOUT_S of the SIGINT is its doing."""
    import os
    import signal
    import time

    import browser_env.refusal
    from browser_env.refusal import exit_on_interrupt

    monkeypatch.setattr(browser_env.refusal, "INTERRUPT_FALLOUT_S", 0.05)
    with pytest.raises(RuntimeError, match="out of memory"), exit_on_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                pass
        except KeyboardInterrupt:
            pass  # dropped; the run goes on
        time.sleep(0.2)
        raise RuntimeError("out of memory")


def test_a_ctrl_c_dropped_in_a_finalizer_is_raised_again_without_its_report(
    sigint_raises, monkeypatch, capsys
):
    """A fresh-clone run's Ctrl-C landed in ``EpisodeWriter.__del__``: Python
    printed "Exception ignored in ... KeyboardInterrupt" and went on (a
    browser error then ended it). The dropped interrupt is now raised again in
    the main thread, and Python's report of it is not printed."""
    import os
    import signal
    import time
    import weakref

    from browser_env.refusal import exit_on_interrupt

    class Thing:
        pass

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    start = time.monotonic()
    with pytest.raises(SystemExit) as exited, exit_on_interrupt("kept 1"):
        thing = Thing()
        weakref.finalize(thing, os.kill, os.getpid(), signal.SIGINT)
        del thing  # the handler runs inside the callback: its KeyboardInterrupt is dropped
        while time.monotonic() - start < 10:
            time.sleep(0.01)
    assert exited.value.code == 130 and time.monotonic() - start < 5
    assert capsys.readouterr().err == "kept 1\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
