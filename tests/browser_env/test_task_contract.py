"""The Task contract (tests/browser_env/task_contract.py) on MiniWoB++ and open-v0;
the bundled sites run it in test_sites.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from task_contract import TaskContract

from browser_env.tasks import MiniWoBTask, OpenTask
from browser_env.tasks.server import serve_directory

pytestmark = pytest.mark.browser

SITE = Path(__file__).resolve().parents[1] / "fixtures" / "site"


class TestMiniWoBTaskContract(TaskContract):
    def make_task(self):
        return MiniWoBTask("click-button")


class TestOpenTaskContract(TaskContract):
    reset_options = {"goal": "Say hello", "answer": "hello"}

    def make_task(self):
        # served over http: the env refuses file: URLs (browser_env.policy)
        return OpenTask(url=serve_directory(SITE) + "links.html")
