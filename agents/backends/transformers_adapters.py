"""PEFT LoRA adapters of :class:`~agents.backends.transformers.TransformersBackend`.

:class:`AdapterMixin` gives the backend its adapter methods: :meth:`load_adapter`
applies one and makes it the one :meth:`generate` uses (a learner's update of
it, or the adapter the backend was built with), and, for serving several at
once (``serve.openai_server`` loads them at run time), :meth:`add_adapter`
loads one under a name without changing what ``generate`` uses,
:meth:`using_adapter` picks one for the calls inside its block and
:meth:`delete_adapter` drops one.

The backend holds ``model`` (a ``PeftModel`` once an adapter is loaded; setting
it empties the prefix cache), ``adapter`` (the path of the adapter ``generate``
uses, or None), ``_lock`` (held around every generation), ``_bare`` (True when
``generate`` runs the model with its adapters switched off: adapters were added
beside a plain model, or the active one was dropped), ``_merged`` (True once an
adapter was folded into the weights), ``_load_base()`` (the base weights loaded
again) and ``_weights_changed()`` (empties the prefix cache; called after every
change here, since a replaced adapter's tensors can reuse the old ones'
addresses). ``peft`` is imported by each method, not by this module.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

from agents.backends.common import require

__all__ = ["AdapterMixin"]


class AdapterMixin:
    """Loading, adding, picking and dropping LoRA adapters (see the module docstring)."""

    model: Any
    adapter: str | None
    _bare: bool
    _merged: bool

    def load_adapter(
        self, path: str | os.PathLike[str], name: str = "default", *, merge: bool = False
    ) -> None:
        """Apply a PEFT adapter directory and make it the active one.

        A second call with a new ``name`` adds another adapter and switches to
        it; the same ``name`` replaces it. ``merge=True`` folds it into the
        base weights (it can then not be switched off). After a merge the base
        weights are loaded again first, so the new adapter replaces the merged
        one instead of adding to it (e.g. an online learner's update of it).
        """
        peft = require("peft", purpose="LoRA adapters")
        path = os.fspath(path)
        if self._merged:
            self.model = self._load_base()
            self._merged = False
        if isinstance(self.model, peft.PeftModel):
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
            self.model.load_adapter(path, adapter_name=name, is_trainable=False)
            self.model.set_adapter(name)
        else:
            self.model = peft.PeftModel.from_pretrained(
                self.model, path, adapter_name=name, is_trainable=False
            )
        if merge:
            self.model = self.model.merge_and_unload()
            self._merged = True
        self.model.eval()
        self.adapter = path
        self._bare = False
        self._weights_changed()

    def add_adapter(self, path: str | os.PathLike[str], name: str) -> None:
        """Load a PEFT adapter under ``name`` without changing what :meth:`generate` uses.

        ``name`` must be new (a PEFT adapter name: no dots). Raises
        ``ValueError`` when the adapter does not fit the model, or when an
        adapter was merged into the weights (``merge_adapter=True``).
        """
        peft = require("peft", purpose="LoRA adapters")
        if "." in name:
            raise ValueError(f"adapter name {name!r} must not contain '.'")
        if self._merged:  # the "bare" model would be base + the merged adapter
            raise ValueError(
                f"adapter {self.adapter} was merged into the weights (merge_adapter=True), so "
                "other adapters cannot be served beside it; load the backend without merging"
            )
        path = os.fspath(path)
        with self._lock:
            model = self.model
            if isinstance(model, peft.PeftModel):
                if name in model.peft_config:
                    raise ValueError(f"an adapter named {name!r} is already loaded")
                active = model.active_adapter
                try:
                    model.load_adapter(path, adapter_name=name, is_trainable=False)
                except (RuntimeError, ValueError, KeyError) as exc:
                    if name in model.peft_config:
                        model.delete_adapter(name)
                    raise ValueError(f"adapter {path} does not fit this model: {exc}") from exc
                model.set_adapter(active, inference_mode=True)
            else:
                try:
                    wrapped = peft.PeftModel.from_pretrained(
                        model, path, adapter_name=name, is_trainable=False
                    )
                except (RuntimeError, ValueError, KeyError) as exc:
                    raise ValueError(f"adapter {path} does not fit this model: {exc}") from exc
                self.model = wrapped
                self._bare = True
            self.model.eval()
            self._weights_changed()

    def delete_adapter(self, name: str) -> None:
        """Drop adapter ``name``; without adapters left the model is the bare model again."""
        peft = require("peft", purpose="LoRA adapters")
        with self._lock:
            model = self.model
            if not isinstance(model, peft.PeftModel) or name not in model.peft_config:
                raise KeyError(name)
            self._weights_changed()
            if len(model.peft_config) == 1:
                self.model = model.unload()
                self._bare = False
                self.adapter = None
                return
            was_active = model.active_adapter == name
            with warnings.catch_warnings():  # PEFT says which adapter it made active instead
                warnings.simplefilter("ignore", UserWarning)
                model.delete_adapter(name)
            if was_active:  # the adapter generate used is gone: generate uses the bare model
                self._bare = True
                self.adapter = None

    @contextlib.contextmanager
    def using_adapter(self, name: str | None) -> Iterator[None]:
        """Within the block, :meth:`generate` applies adapter ``name`` (None: no adapter).

        Not for concurrent use from several threads with different names
        (the server holds one lock around the block).
        """
        peft = require("peft", purpose="LoRA adapters")
        model = self.model
        if not isinstance(model, peft.PeftModel):
            if name is not None:
                raise KeyError(name)
            yield
            return
        if name is not None and name not in model.peft_config:
            raise KeyError(name)
        active, bare = model.active_adapter, self._bare
        # several adapters can be active at once (set on the LoRA model directly)
        actives = list(getattr(model, "active_adapters", None) or [active])
        if name is not None:
            model.set_adapter(name, inference_mode=True)
        self._bare = name is None
        try:
            yield
        finally:
            model.set_adapter(active, inference_mode=True)
            if len(actives) > 1:
                model.base_model.set_adapter(actives, inference_mode=True)
            self._bare = bare
