"""All-or-nothing model operations: a failed driver leaves the model exactly as it was.

A model-level driver (GPTQ, Wanda, low-rank factorisation, FFN pruning, ...) changes a model step by step,
block after block.  If step 40 of 60 raises (a group size that does not divide a width, a degenerate
Hessian, an interrupted run), the caller must not be left with a half-compressed model it cannot tell from
a whole one.  ``transaction(model)`` makes a block of code atomic:

* **structure** (cheap, recorded on entry): every module's ``__dict__`` (its children, parameters, buffers,
  hooks and plain attributes such as ``num_heads``), each parameter's storage and ``requires_grad``, and
  ``model.config``.  Replacing a submodule, re-pointing a parameter (``setattr``, ``p.data = ...``, tying)
  or changing an attribute is undone from this record without copying any tensor.
* **values written in place** (copy on first write): before a tensor of the original model is changed in
  place, the code that changes it calls ``protect(tensor_or_module)``, which clones it once per transaction.
  ``models.set_weight`` and ``calib.run_sequential`` (before handing a block to its ``compress`` callback)
  already do, so a driver built on them needs nothing else.  Memory: a copy of what changed, nothing more.

On an exception the record is restored and the exception re-raised; on success it is dropped.  Transactions
nest: a write is protected by every open transaction, so an outer one also undoes a finished inner one.
``atomic`` is the decorator form for a driver whose first argument is the model.
"""
from __future__ import annotations

import copy
import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import nn

__all__ = ["transaction", "atomic", "protect", "Transaction"]

F = TypeVar("F", bound=Callable[..., Any])
_OPEN: list["Transaction"] = []


class Transaction:
    """The undo record of one ``transaction(model)`` block (see the module docstring)."""

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"transaction needs an nn.Module, got {type(model).__name__}")
        self.model = model
        self.modules: list[tuple[nn.Module, type, dict, list[tuple[dict, dict]]]] = []
        self.tensors: dict[int, tuple] = {}  # id -> (tensor, its storage, requires_grad, grad)
        self.saved: dict[int, torch.Tensor] = {}  # id -> clone of the values on first in-place write
        for mod in model.modules():
            attrs = dict(mod.__dict__)
            inner = [(v, dict(v)) for v in attrs.values() if isinstance(v, dict)]  # _modules, _parameters, hooks
            self.modules.append((mod, type(mod), attrs, inner))
            for t in list(mod._parameters.values()) + list(mod._buffers.values()):
                if t is not None and id(t) not in self.tensors:
                    self.tensors[id(t)] = (t, t.data, bool(t.requires_grad), t.grad)
        cfg = getattr(model, "config", None)
        self.config = (cfg, copy.deepcopy(cfg.__dict__)) if cfg is not None and hasattr(cfg, "__dict__") else None

    def protect(self, obj: nn.Module | torch.Tensor) -> None:
        """Clone (once) the values of a tensor, or of every parameter/buffer of a module, about to change."""
        tensors = [obj] if isinstance(obj, torch.Tensor) else list(obj.parameters()) + list(obj.buffers())
        for t in tensors:
            key = id(t)
            if key in self.tensors and key not in self.saved:
                self.saved[key] = self.tensors[key][1].detach().clone()

    @torch.no_grad()
    def rollback(self) -> None:
        for mod, cls, attrs, inner in self.modules:
            if type(mod) is not cls:  # torch.nn.utils.parametrize swaps the class
                mod.__class__ = cls
            for d, content in inner:
                d.clear()
                d.update(content)
            mod.__dict__.clear()
            mod.__dict__.update(attrs)
        for key, (t, storage, req, grad) in self.tensors.items():
            t.data = storage
            if key in self.saved:
                storage.copy_(self.saved[key])
            if t.is_leaf and t.requires_grad != req:  # (an inference tensor refuses even a no-op set)
                t.requires_grad_(req)
                t.grad = grad
        if self.config is not None:
            cfg, state = self.config
            cfg.__dict__.clear()
            cfg.__dict__.update(state)
        self.saved.clear()


@contextmanager
def transaction(model: nn.Module) -> Iterator[Transaction]:
    """``with transaction(model): ...``: if the block raises, ``model`` is restored exactly, then it re-raises."""
    tx = Transaction(model)
    _OPEN.append(tx)
    try:
        yield tx
    except BaseException:
        _OPEN.remove(tx)
        tx.rollback()
        raise
    else:
        _OPEN.remove(tx)
        tx.saved.clear()


def protect(obj: nn.Module | torch.Tensor) -> None:
    """Tell every open transaction that ``obj`` (a tensor or a module's tensors) is about to change in place."""
    for tx in _OPEN:
        tx.protect(obj)


def atomic(fn: F) -> F:
    """Decorator: run a driver whose first argument is the model inside ``transaction(model)``."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        if not isinstance(model, nn.Module):
            return fn(model, *args, **kwargs)  # let the driver raise its own error for a non-module
        with transaction(model):
            return fn(model, *args, **kwargs)
    return wrapper  # type: ignore[return-value]
