"""Fixtures for learner tests: tiny synthetic episodes written with the real EpisodeWriter."""

from __future__ import annotations

import os

import numpy as np
import pytest

from browser_env.observation import make_element

os.environ["WANDB_MODE"] = os.environ.get("WANDB_MODE", "disabled")


def _element(eid: str, tag: str, role: str, text: str) -> dict:
    return make_element(eid, tag, role, text, bbox=(0, 0, 10, 10))


def write_click_episode(
    root, seed: int, *, target: str = "ONE", source: str = "scripted", task: str = "click-button"
):
    """A one-step 'click the button labelled X' episode, solved."""
    from browser_env.episodes import AgentInfo, EpisodeMeta, EpisodeWriter

    labels = ["ONE", "TWO", "THREE"]
    elements = tuple(_element(f"e{i + 1}", "button", "button", lab) for i, lab in enumerate(labels))
    goal = f'Click on the "{target}" button.'
    obs = {
        "goal": goal,
        "url": "http://localhost/click-button.html",
        "elements": elements,
        "text": " ".join(labels),
        "last_action_error": "",
        "screenshot": np.zeros((8, 8, 3), dtype=np.uint8),
    }
    w = EpisodeWriter(
        root,
        EpisodeMeta(
            env_id=f"browser_env/miniwob.{task}-v0",
            task=task,
            seed=seed,
            source=source,
            goal=goal,
            agent=AgentInfo(name="expert"),
        ),
    )
    eid = f"e{labels.index(target) + 1}"
    w.write_step(obs, {"action": "CLICK", "element_id": eid}, 1.0, True, False, {"success": True})
    return w.close()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run fastest on one thread; more oversubscribe a shared 2-core machine."""
    try:
        import torch
    except ModuleNotFoundError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def click_episode_writer():
    """:func:`write_click_episode`, for tests that write their own episodes (a bare
    ``from conftest import`` picks whichever conftest.py pytest imported last)."""
    return write_click_episode


@pytest.fixture(scope="module")
def episodes_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    for seed, target in enumerate(["ONE", "TWO", "THREE", "TWO"]):
        write_click_episode(root, seed, target=target)
    return root


@pytest.fixture(scope="session")
def tiny_model():
    from agents.tiny import tiny_model_path

    return str(tiny_model_path("text"))


class Killed(Exception):
    """The trainer's process dying mid-run (the :func:`killer` fixture)."""


@pytest.fixture
def killer(monkeypatch):
    """``killer.at = i``: the next ``TrainLoop.fit`` dies (raises :class:`Killed`,
    or ``KeyboardInterrupt`` -- Ctrl+C -- with ``killer.ctrl_c = True``) as its
    step ``i`` (0-based) starts; ``killer.resumed``: the checkpoints
    ``CheckpointManager.restore`` loaded; ``killer.error``: :class:`Killed`
    (a bare ``from conftest import`` would pick another conftest.py)."""
    import types

    from learners.checkpoint import CheckpointManager
    from learners.loop import TrainLoop

    state = types.SimpleNamespace(at=None, resumed=[], error=Killed, ctrl_c=False)
    fit, restore = TrainLoop.fit, CheckpointManager.restore

    def dying_fit(self, loss_step, **kwargs):
        at, state.at = state.at, None

        def step_or_die(i):
            if i == at:
                raise (KeyboardInterrupt if state.ctrl_c else Killed)(f"killed at step {i}")
            return loss_step(i)

        return fit(self, step_or_die, **kwargs)

    def spy(self, path, optimizer):
        state.resumed.append(path)
        return restore(self, path, optimizer)

    monkeypatch.setattr(TrainLoop, "fit", dying_fit)
    monkeypatch.setattr(CheckpointManager, "restore", spy)
    return state
