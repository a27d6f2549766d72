"""``progress=false`` for the Hugging Face libraries' own bars too.

transformers draws a "Loading weights" bar for every model it loads, and
huggingface_hub one per download; a command run with ``progress=false`` (a
log file, a notebook cell, CI) wants neither. :func:`hub_progress` hides
them for the duration of a ``with`` block and puts them back after it, so a
library caller's later loads draw their bars as before.

It uses the libraries' own switches, not ``HF_HUB_DISABLE_PROGRESS_BARS``
(the hub reads that once, at import, and it then outranks every switch for
the rest of the process). transformers is not imported for this (~2 s): one
imported inside the block takes the hub's setting as its own default, and
is switched back on exit with the hub.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["hub_progress"]


@contextlib.contextmanager
def hub_progress(enabled: bool) -> Iterator[None]:
    """Within the block, transformers' and huggingface_hub's progress bars are
    hidden unless ``enabled``; ``enabled=True`` changes nothing (bars a user
    disabled stay disabled). The bars' state before the block is restored on
    exit."""
    if enabled:
        yield
        return
    from huggingface_hub import utils as hub

    hub_was = not hub.are_progress_bars_disabled()
    transformers_was = _transformers_bars()
    hub.disable_progress_bars()
    _set_transformers_bars(False)
    try:
        yield
    finally:
        # imported inside the block, transformers took its default from the hub's;
        # its switch also flips the hub's, so the hub's state is put back after it
        _set_transformers_bars(hub_was if transformers_was is None else transformers_was)
        (hub.enable_progress_bars if hub_was else hub.disable_progress_bars)()


def _transformers_bars() -> bool | None:
    """transformers' switch; None while transformers is not loaded."""
    logging = sys.modules.get("transformers.utils.logging")
    return None if logging is None else bool(logging.is_progress_bar_enabled())


def _set_transformers_bars(on: bool) -> None:
    logging = sys.modules.get("transformers.utils.logging")
    if logging is not None:
        (logging.enable_progress_bar if on else logging.disable_progress_bar)()
