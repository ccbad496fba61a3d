"""One error vocabulary for bad input: ``ValueError``/``TypeError`` naming the value, what is allowed and where.

Every public function of lessonlib checks its arguments with these helpers instead of ad-hoc tests, so a
careless call or a hostile file gets the same kind of message everywhere::

    positive_int("n", 2.5)        # TypeError: n=2.5 must be an int (got float)
    fraction("sparsity", 1.5)     # ValueError: sparsity=1.5 is outside [0, 1)
    finite("hessian", H, where="model.layers.3.mlp.up_proj")   # ValueError naming the layer

``short(v)`` is the bounded ``repr`` every message uses, so no message can echo an unbounded value (a
forged file's megabyte string, an expanded YAML alias).
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

__all__ = ["short", "integer", "positive_int", "nonneg_int", "fraction", "positive_float", "finite",
           "all_finite", "device_str"]

MAX_REPR = 80


def short(v: Any, limit: int = MAX_REPR) -> str:
    """``repr(v)`` cut to ``limit`` characters (with the total length), safe to put into any message."""
    if isinstance(v, torch.Tensor):
        return f"tensor(shape={tuple(v.shape)}, dtype={v.dtype})"
    try:
        r = repr(v) if not isinstance(v, (list, dict, tuple, set)) or len(v) <= 16 else \
            f"<{type(v).__name__} of {len(v)} items>"
    except Exception:  # a hostile __repr__
        r = f"<{type(v).__name__}>"
    return r if len(r) <= limit else f"{r[:limit - 20]}...<{len(r)} chars>"


def _where(where: str | None) -> str:
    return f" ({where})" if where else ""


def integer(name: str, v: Any, lo: int | None = None, hi: int | None = None, where: str | None = None) -> int:
    """``v`` as an int in ``lo..hi`` (either bound optional).  bool and float (even 3.0) are a TypeError."""
    if isinstance(v, bool) or not isinstance(v, int):
        if hasattr(v, "__index__") and not isinstance(v, (bool, torch.Tensor)):
            v = v.__index__()  # numpy integers
        elif isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool:
            v = int(v)
        else:
            raise TypeError(f"{name}={short(v)} must be an int (got {type(v).__name__}){_where(where)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
        raise ValueError(f"{name}={v} is outside the allowed range {rng}{_where(where)}")
    return int(v)


def positive_int(name: str, v: Any, where: str | None = None) -> int:
    """An int >= 1 (a count: samples, steps, clusters, sequence length)."""
    return integer(name, v, lo=1, where=where)


def nonneg_int(name: str, v: Any, where: str | None = None) -> int:
    """An int >= 0."""
    return integer(name, v, lo=0, where=where)


def _real(name: str, v: Any, where: str | None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if isinstance(v, torch.Tensor) and v.dim() == 0 and v.is_floating_point():
            v = float(v)
        elif hasattr(v, "__float__") and not isinstance(v, (str, bytes, torch.Tensor)):
            v = float(v)  # numpy floats
        else:
            raise TypeError(f"{name}={short(v)} must be a number (got {type(v).__name__}){_where(where)}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name}={v} must be finite{_where(where)}")
    return v


def fraction(name: str, v: Any, lo_open: bool = False, hi_open: bool = True, where: str | None = None) -> float:
    """A float in [0, 1) by default (``lo_open``/``hi_open`` choose the interval's ends)."""
    v = _real(name, v, where)
    ok = (v > 0 if lo_open else v >= 0) and (v < 1 if hi_open else v <= 1)
    if not ok:
        rng = f"{'(' if lo_open else '['}0, 1{')' if hi_open else ']'}"
        raise ValueError(f"{name}={v} is outside {rng}{_where(where)}")
    return v


def positive_float(name: str, v: Any, where: str | None = None) -> float:
    """A finite float > 0 (a learning rate, a temperature, a damping)."""
    v = _real(name, v, where)
    if not v > 0:
        raise ValueError(f"{name}={v} must be > 0{_where(where)}")
    return v


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite.  A finite sum proves it (NaN and inf propagate into the sum)
    at a fraction of the cost of the elementwise test, which only runs when the sum is not finite."""
    if not t.is_floating_point() and not t.is_complex():
        return True
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def finite(name: str, t: Any, where: str | None = None) -> Any:
    """Raise ``ValueError`` if a tensor (or a float, or a list of them) holds NaN or inf; returns it."""
    if isinstance(t, torch.Tensor):
        if not all_finite(t):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{name} has {bad} non-finite entries (NaN or inf) of {t.numel()}{_where(where)}; "
                             "check the statistics it came from")
        return t
    if isinstance(t, (list, tuple)):
        for j, x in enumerate(t):
            finite(f"{name}[{j}]", x, where)
        return t
    if isinstance(t, (int, float)) and not math.isfinite(float(t)):
        raise ValueError(f"{name}={t} is not finite{_where(where)}")
    return t


_DEVICE = re.compile(r"^(cpu|auto|meta|mps|cuda(:\d+)?|xpu(:\d+)?)$")
DEVICE_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps', 'xpu', 'xpu:N' or a torch.device"


def device_str(name: str, v: Any) -> str | torch.device:
    """A device given as a ``torch.device`` or one of the strings in ``DEVICE_FORMS``."""
    if isinstance(v, torch.device):
        return v
    if not isinstance(v, str):
        raise TypeError(f"{name}={short(v)} must be a string or torch.device; allowed {DEVICE_FORMS}")
    if not _DEVICE.match(v):
        raise ValueError(f"{name}={short(v)} is not a device; allowed {DEVICE_FORMS}")
    return v
