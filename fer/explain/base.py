"""The one place that touches a model's modes, gradient flags and hooks while explaining it.

Members come from a cache shared by every session of the app, so an explanation must leave a
model exactly as it found it. :func:`explaining` puts the model in eval mode (BatchNorm uses its
running statistics and never updates them; dropout is off), turns off ``requires_grad`` of its
parameters (only the input's gradient is wanted; nothing accumulates in ``.grad``), forces
float32 (no autocast) and grad mode, and on exit — also after an exception — puts back every
module's training flag, every parameter's ``requires_grad`` and removes every hook added
meanwhile, including hooks a library (Captum) forgot. A per-model lock serialises explanations
of the same model from different Streamlit sessions. The pattern follows pytorch-grad-cam's base
class (https://github.com/jacobgil/pytorch-grad-cam), which owns its hooks.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import nn

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks_with_kwargs")
_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


class Hooks:
    """Hooks registered during one :func:`explaining` block; all removed when it ends."""

    def __init__(self) -> None:
        self._handles: list = []

    def forward(self, module: nn.Module, fn: Callable) -> None:
        """``fn(module, inputs, output)`` after ``module``'s forward (return a value to replace it)."""
        self._handles.append(module.register_forward_hook(fn))

    def forward_pre(self, module: nn.Module, fn: Callable) -> None:
        """``fn(module, inputs)`` before ``module``'s forward."""
        self._handles.append(module.register_forward_pre_hook(fn))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model``: hold it while using a model whose flags may change."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def _hook_keys(model: nn.Module) -> dict[tuple[int, str], set]:
    return {(id(m), d): set(getattr(m, d, {}) or {}) for m in model.modules() for d in _HOOK_DICTS}


def _remove_new_hooks(model: nn.Module, before: dict[tuple[int, str], set]) -> None:
    for m in model.modules():
        for d in _HOOK_DICTS:
            hooks = getattr(m, d, None)
            if hooks:
                for key in set(hooks) - before.get((id(m), d), set()):
                    del hooks[key]


@contextlib.contextmanager
def explaining(model: nn.Module) -> Iterator[Hooks]:
    """Eval mode, frozen parameters, float32 and grad mode for the block; all restored on exit.

    Yields a :class:`Hooks` to register hooks through (they are removed on exit; so is any other
    hook added to the model during the block). Re-entrant for the same model in one thread.
    """
    with model_lock(model):
        modes = [(m, m.training) for m in model.modules()]
        flags = [(p, p.requires_grad) for p in model.parameters()]
        before = _hook_keys(model)
        hooks = Hooks()
        try:
            model.eval()
            for p, _ in flags:
                p.requires_grad_(False)
            with torch.enable_grad(), torch.autocast("cpu", enabled=False):
                yield hooks
        finally:
            hooks.remove()
            _remove_new_hooks(model, before)
            for p, flag in flags:
                p.requires_grad_(flag)
            for m, training in modes:
                m.training = training
