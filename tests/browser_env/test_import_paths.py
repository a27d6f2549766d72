"""Import paths that outlive a module split: what moved is re-exported where it was,
and ``browser_env`` imports nothing from the packages built on it."""

from __future__ import annotations

import subprocess
import sys


def test_moved_names_are_the_same_objects_at_their_old_paths():
    from browser_env import demo_recorder, env, page_io, record, tasks

    assert record.DemoRecorder is demo_recorder.DemoRecorder
    assert env.make_task is tasks.make_task
    assert env.validate_safely is page_io.validate_safely
    assert env.BrowserEnv._observe is page_io.PageIO._observe  # a plain method, no wrapper


def test_browser_env_imports_nothing_from_the_packages_above_it():
    modules = "env", "record", "demo_recorder", "page_io", "vector", "replay", "view"
    code = (
        "import sys\n"
        + "".join(f"import browser_env.{m}\n" for m in modules)
        + "print(sorted({n.split('.')[0] for n in sys.modules}"
        " & {'agents', 'learners', 'serve', 'benchmarks'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
