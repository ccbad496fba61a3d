"""Where one decoding step spends its time: a per-module breakdown measured with forward hooks.

The roofline (``lessonlib.roofline``) predicts a decode step from the weight bytes it reads; this module
measures what the step really spends, so the part that does *not* shrink with the weights is visible.
Every module gets a pre-hook and a post-hook that read ``time.perf_counter``; a module's *exclusive* time
is its inclusive time minus its children's, so the categories add up to the step's wall time:

* the linear layers (``q``/``k``/``v``/``o`` projections, ``gate``/``up``/``down``, the LM head), each time
  including the layer's own dtype conversions and dispatch;
* attention outside its projections (rotary applied to q/k, the KV-cache update, SDPA, reshapes), norms,
  the MLP's activation and product, the decoder layers' residual adds, the rotary cos/sin, the embedding;
* the model's top level (masks, cache bookkeeping) and what lies outside the model (argmax, the loop).

This is Amdahl's law (Amdahl 1967) applied to weight-only quantization: if a fraction ``f`` of a step is
the weight-bound linear layers, shrinking them by any factor cannot make the step faster than
``1 / (1 - f)``.  The hooks cost a few microseconds each; ``decode_breakdown`` also returns the step time
without hooks so that cost is visible.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

import torch
from torch import nn

from .checks import positive_int

__all__ = ["module_category", "decode_breakdown", "LINEAR_CATEGORIES", "amdahl_limit"]

_PROJ = {"q_proj": "linear q", "k_proj": "linear k", "v_proj": "linear v", "o_proj": "linear o",
         "qkv_proj": "linear qkv (fused)", "gate_proj": "linear gate", "up_proj": "linear up",
         "gate_up_proj": "linear gate+up (fused)", "down_proj": "linear down", "lm_head": "linear lm_head"}
LINEAR_CATEGORIES = tuple(_PROJ.values())


def module_category(name: str, module: nn.Module) -> str:
    """The breakdown row a module's exclusive time goes to, from its qualified name and class."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in _PROJ:
        return _PROJ[leaf]
    cls = type(module).__name__
    if "Norm" in cls:
        return "norms"
    if "Rotary" in cls:
        return "rotary cos/sin"
    if "Attention" in cls:
        return "attention core (rotary, KV cache, SDPA)"
    if "MLP" in cls or leaf == "act_fn":
        return "MLP activation and product"
    if "DecoderLayer" in cls:
        return "decoder layer (residual adds)"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.Linear) or "Linear" in cls:
        return "linear other"
    return "model top level (masks, cache)"


@torch.no_grad()
def decode_breakdown(model: nn.Module, prompt: torch.Tensor, steps: int,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, object]:
    """Seconds per decoding step by category (``module_category``), summed over ``steps`` greedy steps at
    batch 1 after ``prompt`` (1, T) with the KV cache on, plus ``step_s`` (seconds per step with the
    hooks) and ``step_nohook_s`` (the same steps without hooks, run first).  ``clock`` reads seconds:
    ``time.perf_counter`` (wall) or ``time.thread_time`` (this thread's CPU time: with one thread it leaves
    out the time the process waits for a core on a shared machine)."""
    positive_int("steps", steps)
    if prompt.dim() != 2 or prompt.shape[0] != 1:
        raise ValueError(f"prompt must be (1, T) token ids, got {tuple(prompt.shape)}")
    names = {m: n for n, m in model.named_modules()}
    excl: dict[nn.Module, float] = defaultdict(float)
    stack: list[list[float]] = []  # per open call: [start, time spent in calls nested inside it]
    on = [False]  # timing only inside the decoding loop, not during the prompt's prefill

    def pre(mod, args):
        if on[0]:
            stack.append([clock(), 0.0])

    def post(mod, args, out):
        if on[0]:
            t0, inner = stack.pop()
            el = clock() - t0
            excl[mod] += el - inner  # exclusive: minus whatever ran in modules it called
            if stack:
                stack[-1][1] += el

    def run(n: int) -> float:
        out = model(prompt, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)  # (1, 1)
        on[0] = True
        t0 = clock()
        for _ in range(n):
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t = clock() - t0
        on[0] = False
        return t

    run(2)  # warm-up
    nohook = run(steps)
    handles = [m.register_forward_pre_hook(pre) for m in names] + [m.register_forward_hook(post) for m in names]
    try:
        excl.clear()
        total = run(steps)
    finally:
        on[0] = False
        for h in handles:
            h.remove()
    rows: dict[str, float] = defaultdict(float)
    for m, t in excl.items():
        rows[module_category(names[m], m)] += t / steps
    rows["outside the model (argmax, loop)"] = (total - sum(excl.values())) / steps
    return {"rows": dict(rows), "step_s": total / steps, "step_nohook_s": nohook / steps, "steps": steps}


def amdahl_limit(step_s: float, linear_s: float) -> float:
    """The largest speed-up of a step of ``step_s`` seconds when only its ``linear_s`` seconds of linear
    layers get faster (to zero time): ``step_s / (step_s - linear_s)`` (Amdahl 1967)."""
    if not 0 <= linear_s < step_s:
        raise ValueError(f"linear_s={linear_s} must be in [0, step_s={step_s})")
    return step_s / (step_s - linear_s)
