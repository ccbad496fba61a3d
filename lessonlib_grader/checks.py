"""Building blocks of graded checks, and comparisons that explain themselves.

A :class:`Check` is a named test of a student's function.  It is run as ``check.run(student, reference)``
and passes by returning; it fails by raising :class:`CheckFailure` whose message says what input was
used, what was expected, what came back and (for tensors) the first element that differs.

Three kinds of check, as the issue asks for:

* :func:`literal` -- a small hand-computed input with its hand-computed expected output;
* :func:`prop` -- a property (shape, dtype, exact sparsity, idempotence, invariance, independence of an
  input, ...) written as a function of the student's function, with :func:`assert_exact_zeros`,
  :func:`assert_idempotent`, :func:`assert_tensor` and :func:`assert_close` to build on;
* :func:`agrees_with_reference` -- agreement with the lessonlib reference on seeded random inputs.

Every call of the student's function goes through :func:`call`, which passes copies of tensor
arguments, turns exceptions into readable failures and reports in-place modification of inputs.
"""
from __future__ import annotations

import contextvars
import copy
import hashlib
import hmac
import inspect
import math
import os
import random
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = [
    "CheckFailure", "GradingTimeout", "Check", "literal", "prop", "agrees_with_reference", "call",
    "describe", "describe_call", "assert_close", "assert_tensor", "assert_python_float", "assert_exact_zeros",
    "assert_idempotent", "first_difference", "student_seed", "SEED_FOR", "ReferenceUnavailable",
]

MAX_SHOWN = 12  # tensors with at most this many elements are printed in full


class CheckFailure(AssertionError):
    """A check did not pass; the message is shown to the student."""


class ReferenceUnavailable(Exception):
    """The reference implementation is not in this copy of lessonlib (a student release): the check that
    needs it is instructor-only here."""


class GradingTimeout(BaseException):
    """The student's code ran past its time limit (a BaseException, so ``except Exception`` cannot eat it)."""


@dataclass
class Check:
    """One named test of a student's function: ``run(student_fn, reference_fn)`` raises on failure."""

    name: str
    kind: str  # "literal" | "property" | "reference" | "concept"
    run: Callable[[Callable, Callable], None] = field(repr=False)
    weight: float = 1.0  # share of the question's points (partial credit: passed weight / total weight)
    hidden: bool = False  # instructor-only: left out of the student release, seeded per student when graded

    def __post_init__(self) -> None:
        if self.kind not in ("literal", "property", "reference", "concept"):
            raise ValueError(f"kind={self.kind!r} must be 'literal', 'property', 'reference' or 'concept'")
        if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool) or not (
                math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"check {self.name!r}: weight={self.weight!r} must be a positive finite number")

    def weighted(self, weight: float) -> "Check":
        """The same check with another weight (``Check`` is a plain dataclass: specs may also pass weight=)."""
        return Check(self.name, self.kind, self.run, weight, self.hidden)

    def as_hidden(self) -> "Check":
        """The same check, instructor-only (see :func:`student_seed`)."""
        return Check(self.name, self.kind, self.run, self.weight, True)


# ------------------------------------------------------------------ per-student seeds of hidden checks
SEED_FOR: contextvars.ContextVar[Callable[[str], int] | None] = contextvars.ContextVar("seed_for", default=None)


def student_seed(key: bytes | str, student: str, exercise_id: str, check_name: str) -> int:
    """``HMAC-SHA256(key, student | exercise | check)`` as a 63-bit seed: each student gets their own inputs,
    and nobody without the instructor key can compute them."""
    k = key.encode() if isinstance(key, str) else key
    msg = f"{student}\x1f{exercise_id}\x1f{check_name}".encode()
    return int.from_bytes(hmac.new(k, msg, hashlib.sha256).digest()[:8], "big") >> 1


# ------------------------------------------------------------------ describing values
def describe(x: Any) -> str:
    """A short, readable rendering of an argument or result (tensors: shape, dtype and small values)."""
    if isinstance(x, torch.Tensor):
        head = f"tensor(shape={tuple(x.shape)}, dtype={str(x.dtype).replace('torch.', '')}"
        if x.numel() <= MAX_SHOWN:
            return f"{head}, values={_fmt_values(x)})"
        flat = x.detach().reshape(-1)[:4]
        return f"{head}, first values={_fmt_values(flat)}...)"
    if isinstance(x, float):
        return repr(x) if math.isfinite(x) and abs(x) < 1e15 else f"{x:g}"
    if isinstance(x, (list, tuple)) and len(x) > MAX_SHOWN:
        return f"{type(x).__name__} of {len(x)} items [{', '.join(describe(v) for v in x[:4])}, ...]"
    return repr(x)


def _fmt_values(t: torch.Tensor) -> str:
    t = t.detach().cpu()
    if t.dtype.is_floating_point:
        return str([round(v, 6) for v in t.double().tolist()] if t.dim() == 1 else _round_nested(t.double().tolist()))
    return str(t.tolist())


def _round_nested(v):
    return [_round_nested(x) for x in v] if isinstance(v, list) else round(v, 6)


def describe_call(fn_name: str, bound: inspect.BoundArguments | None, args: tuple, kwargs: dict) -> str:
    if bound is not None:
        parts = [f"{k}={describe(v)}" for k, v in bound.arguments.items()]
    else:
        parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return f"{fn_name}({', '.join(parts)})"


# ------------------------------------------------------------------ calling the student's function
def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple, dict, set, torch.nn.Module)) or type(x).__name__ == "ndarray":
        return copy.deepcopy(x)
    return x


def _same(a: Any, b: Any, depth: int = 0) -> bool:
    """Whether the caller's value ``a`` still equals the copy ``b`` the student received, all the way down:
    tensors (values, shape, dtype; NaNs equal), dicts, lists, tuples, sets, modules' state and numbers."""
    if depth > 50:
        return True
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.is_floating_point or a.dtype.is_complex:
            return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
        return bool(torch.equal(a, b))
    if type(a).__name__ == "ndarray" and hasattr(a, "shape"):
        import numpy as np

        return isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype and \
            bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, torch.nn.Module):
        if not isinstance(b, torch.nn.Module):
            return False
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(_same(sa[k], sb[k], depth + 1) for k in sa)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], depth + 1) for k in a)
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) or isinstance(b, type(a))) and len(a) == len(b) and \
            all(_same(x, y, depth + 1) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (int, float, str, bytes, bool, set, frozenset, type(None))):
        try:
            return bool(a == b)
        except Exception:  # noqa: BLE001
            return False
    return True  # other objects: not compared


def _where_in_student_code(exc: BaseException, fn: Callable) -> str:
    """'line 12 of 00_model_anatomy.py: x = a / b' for the deepest frame in the student's file."""
    filename = getattr(getattr(fn, "__code__", None), "co_filename", None)
    if filename is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"\n  at line {f.lineno} of {os.path.basename(f.filename)}: {(f.line or '').strip()}"


def call(fn: Callable, *args: Any, _ref: Callable | None = None, _check_inputs: bool = True, **kwargs: Any) -> Any:
    """Call the student's ``fn`` on copies of the arguments; explain any exception as a CheckFailure.

    ``NotImplementedError`` and :class:`GradingTimeout` pass through unchanged (the grader reports them
    as "not implemented yet" and "time limit").  ``_ref`` (the reference function) is only used to name
    the arguments in messages.
    """
    name = getattr(_ref or fn, "__name__", "function")  # the exercise's name, whatever the student called it
    bound = None
    try:
        bound = inspect.signature(_ref or fn).bind(*args, **kwargs)
    except (TypeError, ValueError):
        pass
    shown = describe_call(name, bound, args, kwargs)
    c_args, c_kwargs = tuple(_clone(a) for a in args), {k: _clone(v) for k, v in kwargs.items()}
    try:
        out = fn(*c_args, **c_kwargs)
    except NotImplementedError:
        raise
    except CheckFailure:
        raise
    except SystemExit as exc:
        raise CheckFailure(f"calling {shown}\n  called exit({exc.code!r}); a graded function must return a value")
    except Exception as exc:  # the student's bug: explain it
        type_name = getattr(exc, "type_name", type(exc).__name__)
        if type_name == "SystemExit":
            raise CheckFailure(f"calling {shown}\n  called exit({getattr(exc, 'exit_code', None)!r}); "
                               "a graded function must return a value") from None
        where = getattr(exc, "where", "")
        where = f"\n  at {where}" if where else _where_in_student_code(exc, fn)
        raise CheckFailure(f"calling {shown}\n  raised {type_name}: {exc}{where}") from None
    if _check_inputs:
        names = list(bound.arguments) if bound is not None else [f"argument {i}" for i in range(len(args))]
        pairs = [(names[i] if i < len(names) else f"argument {i}", o, u) for i, (o, u) in enumerate(zip(args, c_args))]
        pairs += [(k, kwargs[k], c_kwargs[k]) for k in kwargs]
        for name_i, orig, used in pairs:
            if not _same(orig, used):
                raise CheckFailure(f"calling {shown}\n  modified its input `{name_i}` in place (a tensor, or "
                                   "something inside a list/dict/module); work on a copy (x = x.clone(), "
                                   "{k: v.clone() for k, v in d.items()}) instead")
    return out


# ------------------------------------------------------------------ comparisons
def first_difference(got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> str:
    """'3 of 12 elements differ; first at index (0, 2): expected 0.5, got 0.25' (or '' when close)."""
    g, e = got.detach().cpu().double(), expected.detach().cpu().double()
    bad = ~torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return ""
    idx = tuple(int(i) for i in bad.nonzero()[0].tolist())
    at = idx if len(idx) != 1 else f"[{idx[0]}]"
    return (f"{n_bad} of {g.numel()} elements differ (rtol={rtol:g}, atol={atol:g}); first at index {at}: "
            f"expected {e[idx].item():.6g}, got {g[idx].item():.6g}")


def assert_tensor(got: Any, *, what: str, shape: tuple[int, ...] | None = None,
                  dtype: torch.dtype | None = None, floating: bool = False) -> None:
    """The result is a tensor of the given shape / dtype (or any floating dtype when ``floating``)."""
    if not isinstance(got, torch.Tensor):
        raise CheckFailure(f"{what}\n  expected a torch.Tensor, got {type(got).__name__} {describe(got)}")
    if shape is not None and tuple(got.shape) != tuple(shape):
        raise CheckFailure(f"{what}\n  expected shape {tuple(shape)}, got shape {tuple(got.shape)}")
    if dtype is not None and got.dtype != dtype:
        raise CheckFailure(f"{what}\n  expected dtype {dtype}, got dtype {got.dtype}")
    if floating and not got.dtype.is_floating_point:
        raise CheckFailure(f"{what}\n  expected a floating-point tensor, got dtype {got.dtype}")


def assert_python_float(got: Any, *, what: str) -> None:
    """The result is a plain Python number (int or float), not a tensor or array."""
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        hint = " (use float(...) or .item())" if hasattr(got, "item") else ""
        raise CheckFailure(f"{what}\n  expected a Python float{hint}, got {type(got).__name__} {describe(got)}")


def assert_close(got: Any, expected: Any, *, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """``got`` matches ``expected`` (numbers or tensors); on failure say where and by how much."""
    if isinstance(expected, torch.Tensor):
        assert_tensor(got, what=what, shape=tuple(expected.shape))
        if expected.dtype != got.dtype:  # enforced the same way in every question
            raise CheckFailure(f"{what}\n  expected dtype {expected.dtype}, got dtype {got.dtype}")
        diff = first_difference(got, expected, rtol, atol)
        if diff:
            raise CheckFailure(f"{what}\n  expected: {describe(expected)}\n  got:      {describe(got)}"
                               + (f"\n  {diff}" if expected.numel() > 1 else ""))
        return
    if isinstance(expected, (int, float)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got_v = float(got.item())
        elif isinstance(got, (int, float)) and not isinstance(got, bool):
            got_v = float(got)
        else:
            raise CheckFailure(f"{what}\n  expected a number like {describe(expected)}, "
                               f"got {type(got).__name__} {describe(got)}")
        if math.isnan(got_v) or not math.isclose(got_v, float(expected), rel_tol=rtol, abs_tol=atol):
            raise CheckFailure(f"{what}\n  expected: {describe(float(expected))}\n  got:      {describe(got_v)}")
        return
    raise TypeError(f"assert_close cannot compare expected values of type {type(expected).__name__}")


def assert_exact_zeros(got: torch.Tensor, n_zeros: int, *, what: str, per_row: bool = False) -> None:
    """Exactly ``n_zeros`` zeros in the tensor (or in every row with ``per_row``): sparsity exactly as asked."""
    assert_tensor(got, what=what)
    counts = (got == 0).reshape(got.shape[0], -1).sum(1) if per_row else (got == 0).sum().reshape(1)
    bad = (counts != n_zeros).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        where = f"row {i} has" if per_row else "the result has"
        raise CheckFailure(f"{what}\n  expected exactly {n_zeros} zeros{' per row' if per_row else ''}; "
                           f"{where} {int(counts[i])}")


def assert_idempotent(fn: Callable, x: torch.Tensor, *args: Any, what: str, ref: Callable | None = None,
                      rtol: float = 1e-5, atol: float = 1e-6, **kwargs: Any) -> None:
    """Applying ``fn`` to its own output changes nothing: ``fn(fn(x)) == fn(x)`` (projections, quantisers)."""
    once = call(fn, x, *args, _ref=ref, **kwargs)
    twice = call(fn, once, *args, _ref=ref, **kwargs)
    assert_close(twice, once, what=f"{what} applied twice vs once", rtol=rtol, atol=atol)


# ------------------------------------------------------------------ check constructors
def literal(name: str, args: tuple = (), kwargs: dict | None = None, *, expected: Any,
            rtol: float = 1e-5, atol: float = 1e-6, result: Callable[..., None] | None = None,
            weight: float = 1.0, hidden: bool = False) -> Check:
    """A hand-computed case: the student's output on ``args``/``kwargs`` must be close to ``expected``.

    ``result(got, what=...)`` optionally checks the returned value's type first (e.g.
    :func:`assert_python_float`).
    """
    kwargs = dict(kwargs or {})

    def run(fn: Callable, ref: Callable) -> None:
        got = call(fn, *args, _ref=ref, **kwargs)
        shown = describe_call(getattr(ref, "__name__", "function"), _bind(ref, args, kwargs), args, kwargs)
        if result is not None:
            result(got, what=shown)
        assert_close(got, expected, what=shown, rtol=rtol, atol=atol)

    return Check(name, "literal", run, weight, hidden)


def prop(name: str, *, weight: float = 1.0, hidden: bool = False) -> Callable[[Callable[[Callable, Callable], None]], Check]:
    """Decorator: turn ``def f(student_fn, reference_fn)`` (raising CheckFailure) into a property check."""

    def wrap(f: Callable[[Callable, Callable], None]) -> Check:
        return Check(name, "property", f, weight, hidden)

    return wrap


def agrees_with_reference(name: str, make_case: Callable[[torch.Generator, random.Random], tuple[tuple, dict]],
                          *, n_cases: int = 5, seed: int = 0, rtol: float = 1e-5, atol: float = 1e-6,
                          weight: float = 1.0, hidden: bool = False) -> Check:
    """The student's output matches the reference on ``n_cases`` seeded random inputs.

    ``make_case(gen, rng)`` returns ``(args, kwargs)``; ``gen`` is a seeded ``torch.Generator``, ``rng`` a
    seeded ``random.Random`` (for integer arguments).  When the grader runs with an instructor key the
    seed is :func:`student_seed` (each student's own inputs) instead of ``seed``; ``hidden=True`` makes the
    check instructor-only (not in the student release, skipped in self-study).
    """

    def run(fn: Callable, ref: Callable) -> None:
        seed_for = SEED_FOR.get()
        s = seed_for(name) if seed_for is not None else seed
        gen, rng = torch.Generator().manual_seed(s), random.Random(s)
        for i in range(n_cases):
            args, kwargs = make_case(gen, rng)
            want = ref(*(_clone(a) for a in args), **{k: _clone(v) for k, v in kwargs.items()})
            got = call(fn, *args, _ref=ref, **kwargs)
            shown = describe_call(getattr(ref, "__name__", "function"), _bind(ref, args, kwargs), args, kwargs)
            assert_close(got, want, what=f"random case {i + 1}/{n_cases} (seed {s}): {shown}",
                         rtol=rtol, atol=atol)

    return Check(name, "reference", run, weight, hidden)


def _bind(ref: Callable, args: tuple, kwargs: dict) -> inspect.BoundArguments | None:
    try:
        return inspect.signature(ref).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
