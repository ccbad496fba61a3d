"""A student's function living in a :class:`~lessonlib_grader.sandbox.Sandbox`, callable from the grader.

:class:`RemoteFunction` looks like the student's function to every check: calling it sends the inputs to
the child, which runs the student's code and sends back the output *and* the arguments as they are after
the call.  The arguments are written back into the objects the check passed (so in-place changes are seen
by :func:`lessonlib_grader.checks.call`, and checks of in-place contracts still work), an exception of the
student's code is raised here with its type name and line, and outputs that need gradients are tied to
the child's autograd graph (``out.backward()`` here asks the child for the input gradients).
"""
from __future__ import annotations

import builtins
import time
from typing import Any

import torch

from .checks import GradingTimeout
from .sandbox import RemoteError, Sandbox

__all__ = ["RemoteFunction", "Unsupported", "from_wire", "write_back"]


class Unsupported:
    """A value the child could not send as plain data (shown by type and repr; equal to nothing)."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return f"<{self.type_name} {self.text}>"


def from_wire(x: Any) -> Any:
    if isinstance(x, dict):
        if set(x) == {"__unsupported__", "repr"}:
            return Unsupported(str(x["__unsupported__"]), str(x["repr"]))
        if set(x) == {"__numpy__", "dtype"} and isinstance(x["__numpy__"], torch.Tensor):
            import numpy as np

            return x["__numpy__"].numpy().astype(np.dtype(str(x["dtype"])))
        if set(x) == {"__npscalar__", "dtype"}:
            import numpy as np

            return np.dtype(str(x["dtype"])).type(x["__npscalar__"])
        if set(x) == {"__module_state__"}:
            return Unsupported("torch.nn.Module", "(returned a module)")
        return {k: from_wire(v) for k, v in x.items()}
    if isinstance(x, list):
        return [from_wire(v) for v in x]
    if isinstance(x, tuple):
        return tuple(from_wire(v) for v in x)
    return x


def write_back(target: Any, wire: Any) -> None:
    """Make ``target`` (an argument the check passed) look as the child's copy did after the call."""
    if isinstance(target, torch.Tensor) and isinstance(wire, torch.Tensor):
        with torch.no_grad():
            if target.shape == wire.shape and target.dtype == wire.dtype:
                if not torch.equal(target.nan_to_num() if target.is_floating_point() else target,
                                   wire.nan_to_num() if wire.is_floating_point() else wire) \
                        or not torch.equal(target.isnan(), wire.isnan()):
                    target.copy_(wire)
            else:
                target.data = wire
    elif type(target).__name__ == "ndarray" and isinstance(wire, dict) and "__numpy__" in wire:
        new = from_wire(wire)
        if new.shape == target.shape:
            target[...] = new
    elif isinstance(target, torch.nn.Module) and isinstance(wire, dict) and "__module_state__" in wire:
        with torch.no_grad():
            target.load_state_dict(wire["__module_state__"], strict=False)
    elif isinstance(target, list) and isinstance(wire, list):
        if len(target) == len(wire):
            for i, (t, w) in enumerate(zip(target, wire)):
                if _replace(t, w):
                    target[i] = from_wire(w)
                else:
                    write_back(t, w)
        else:
            target[:] = from_wire(wire)
    elif isinstance(target, dict) and isinstance(wire, dict):
        for k in [k for k in target if k not in wire]:
            del target[k]
        for k, w in wire.items():
            if k in target and not _replace(target[k], w):
                write_back(target[k], w)
            else:
                target[k] = from_wire(w)
    elif isinstance(target, tuple) and isinstance(wire, tuple) and len(target) == len(wire):
        for t, w in zip(target, wire):
            write_back(t, w)


def _replace(t: Any, w: Any) -> bool:
    """Whether ``t`` must be replaced (not updated in place) to look like ``w``: immutable or another kind."""
    if isinstance(w, dict) and "__callback__" in w:
        return False
    if isinstance(t, torch.Tensor):
        return not isinstance(w, torch.Tensor)
    if isinstance(t, (list, dict, torch.nn.Module)):
        return not isinstance(w, type(t)) and not (isinstance(t, torch.nn.Module) and isinstance(w, dict))
    if isinstance(t, tuple):
        return True if not isinstance(w, tuple) else False
    return t != w if not isinstance(w, (torch.Tensor, list, dict, tuple)) else True


class _Bridge(torch.autograd.Function):
    """Output tensors computed in the child, differentiable here: backward asks the child for the grads."""

    @staticmethod
    def forward(ctx, remote, call_id, n_out, values, *inputs):  # noqa: D401
        ctx.remote, ctx.call_id, ctx.n_in = remote, call_id, len(inputs)
        return tuple(v.clone() for v in values) if n_out > 1 else values[0].clone()

    @staticmethod
    def backward(ctx, *grads):
        got = ctx.remote._backward(ctx.call_id, [None if g is None else g.detach() for g in grads])
        return (None, None, None, None) + tuple(got[: ctx.n_in]) + (None,) * max(0, ctx.n_in - len(got))


class RemoteFunction:
    """The student's function ``name`` of a running :class:`Sandbox` (see the module docstring)."""

    def __init__(self, sandbox: Sandbox, name: str, *, deadline: float = float("inf")):
        self.sandbox, self.__name__, self.deadline = sandbox, name, deadline
        self.ref_calls: list[str] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() > self.deadline:
            raise GradingTimeout(self.__name__)
        callbacks: list = []
        ans = self.sandbox.request({"op": "call", "name": self.__name__, "args": _callbacks_out(args, callbacks),
                                    "kwargs": _callbacks_out(kwargs, callbacks)},
                                   self.deadline, f"calling {self.__name__}", callbacks=callbacks)
        call_id = self.sandbox._ids
        self.ref_calls += [str(r) for r in ans.get("ref_calls", [])]
        if not ans.get("ok"):
            name = str(ans.get("type", "Exception"))
            if name == "NotImplementedError":
                raise NotImplementedError(str(ans.get("message", "")))
            if name == "GradingTimeout":
                raise GradingTimeout(self.__name__)
            cls = getattr(builtins, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception) and cls.__init__ is not None:
                try:
                    exc = cls(str(ans.get("message", "")))
                except Exception:  # noqa: BLE001 - exceptions needing other arguments
                    exc = RemoteError(name, str(ans.get("message", "")), str(ans.get("where", "")))
                exc.where = str(ans.get("where", ""))  # type: ignore[attr-defined]
                raise exc
            raise RemoteError(name, str(ans.get("message", "")), str(ans.get("where", "")), ans.get("exit_code"))
        write_back(args, ans["args"])
        write_back(kwargs, ans["kwargs"])
        out = from_wire(ans["out"])
        inputs = _needing_grad((args, kwargs), [])
        outs = out if isinstance(out, tuple) else (out,)
        if inputs and any(ans.get("grad", [])) and all(isinstance(o, torch.Tensor) for o in outs):
            bridged = _Bridge.apply(self, call_id, len(outs), outs, *inputs)
            bridged = bridged if isinstance(bridged, tuple) else (bridged,)
            fixed = tuple(b if g else o for b, o, g in zip(bridged, outs, ans["grad"]))
            out = fixed if isinstance(out, tuple) else fixed[0]
        return out

    def _backward(self, call_id: int, grads: list) -> list:
        ans = self.sandbox.request({"op": "backward", "call": call_id, "grads": grads}, self.deadline,
                                   f"backpropagating through {self.__name__}")
        if not ans.get("ok"):
            raise RuntimeError(f"{ans.get('type')}: {ans.get('message')}")
        return list(ans["grads"])


def _callbacks_out(x: Any, callbacks: list, depth: int = 0) -> Any:
    """Arguments with every plain callable (a quantizer, a loss function) replaced by a marker: the child
    calls it back here, on data, instead of receiving the grader's code."""
    if depth > 20:
        return x
    if callable(x) and not isinstance(x, (torch.Tensor, torch.nn.Module, type)):
        callbacks.append(x)
        return {"__callback__": len(callbacks) - 1}
    if isinstance(x, list):
        return [_callbacks_out(v, callbacks, depth + 1) for v in x]
    if isinstance(x, tuple) and type(x) is tuple:
        return tuple(_callbacks_out(v, callbacks, depth + 1) for v in x)
    if isinstance(x, dict):
        return {k: _callbacks_out(v, callbacks, depth + 1) for k, v in x.items()}
    return x


def _needing_grad(x: Any, out: list) -> list:
    if isinstance(x, torch.Tensor):
        if x.requires_grad:
            out.append(x)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _needing_grad(v, out)
    elif isinstance(x, dict):
        for v in x.values():
            _needing_grad(v, out)
    return out
