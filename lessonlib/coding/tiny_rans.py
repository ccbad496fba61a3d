"""rANS with one state and digit-by-digit renormalisation, small enough to follow by hand (notebook 19).

Duda (2013), "Asymmetric numeral systems" (arXiv 1311.2540), and Giesen (2014), "Interleaved entropy coders"
(arXiv 1402.3392).  Symbol ``s`` has an integer frequency ``f_s`` (total ``M = sum f``) and a cumulative
frequency ``c_s = f_0 + ... + f_{s-1}``.  The state ``x`` is an integer kept in ``I = [L, b L)`` with ``L`` a
multiple of ``M`` and ``b`` the base of the emitted digits (2: bits; 256: bytes).

    encode s:  while x >= (L / M) b f_s:  emit x mod b;  x = x // b      (renormalise: x into [L f_s / M, b L f_s / M))
               x = (x // f_s) M + c_s + (x mod f_s)                         (the state update: x grows by about M / f_s)
    decode:    slot = x mod M;  s = the symbol with c_s <= slot < c_s + f_s
               x = f_s (x // M) + slot - c_s                                (the exact inverse of the update)
               while x < L:  x = x b + the last digit emitted (a stack)

Each update multiplies ``x`` by about ``M / f_s = 1 / p_s``, so a message costs ``sum log2(1 / p_s)`` bits: the
entropy.  The encoder runs backwards over the message so that the decoder, which pops digits from the end,
returns the symbols in their original order.  The library coder (:mod:`lessonlib.coding.rans`) is the same
algorithm with 32-bit states, 16-bit words and many interleaved lanes.

Worked example (checked in the tests): ``freqs = [3, 1]`` (``a``: 3/4, ``b``: 1/4), ``L = M = 4``, ``b = 2``.
Encoding ``[a, a, b, a]`` from the end, starting at ``x = L = 4``: ``a`` -> 5; ``b``: emit 1, 0, then 7;
``a``: emit 1, then 4; ``a`` -> 5.  Final state 5, digits ``[1, 0, 1]``.
"""
from __future__ import annotations

__all__ = ["tiny_rans_check", "rans_tiny_encode", "rans_tiny_decode"]


def tiny_rans_check(freqs: list[int], L: int | None, base: int) -> tuple[list[int], list[int], int, int]:
    """Validate a tiny-rANS model; returns (freqs, cumulative freqs, M, L) with ``L`` defaulting to ``M``."""
    if isinstance(freqs, (str, bytes)) or not hasattr(freqs, "__len__") or len(freqs) == 0:
        raise TypeError(f"freqs must be a non-empty sequence of positive integers, got {freqs!r}")
    f = [int(v) for v in freqs]
    if any(v <= 0 for v in f) or any(int(v) != v for v in freqs):
        raise ValueError(f"freqs={list(freqs)} must be positive integers")
    if not isinstance(base, int) or base < 2:
        raise ValueError(f"base={base!r} must be an integer >= 2")
    m = sum(f)
    L = m if L is None else L
    if not isinstance(L, int) or L < m or L % m:
        raise ValueError(f"L={L!r} must be a positive multiple of M = sum(freqs) = {m}")
    cum = [sum(f[:i]) for i in range(len(f))]
    return f, cum, m, L


def rans_tiny_encode(symbols: list[int], freqs: list[int], L: int | None = None,
                     base: int = 2) -> tuple[int, list[int]]:
    """Encode symbol indices ``symbols`` (each in ``0..len(freqs)-1``) with single-state rANS.

    Returns ``(state, digits)``: the final state (in ``[L, base L)``) and the renormalisation digits in the
    order they were emitted.  The decoder reads the digits from the end.
    """
    f, cum, m, L = tiny_rans_check(freqs, L, base)
    if any(not 0 <= int(s) < len(f) for s in symbols):
        raise ValueError(f"every symbol must be an index in 0..{len(f) - 1}, got {list(symbols)}")
    # BEGIN SOLUTION
    x, digits = L, []
    for s in reversed([int(v) for v in symbols]):  # backwards, so that decoding comes out forwards
        x_max = (L // m) * base * f[s]  # renormalise until the update lands back in [L, base L)
        while x >= x_max:
            digits.append(x % base)
            x //= base
        x = (x // f[s]) * m + cum[s] + x % f[s]  # the rANS state update
    return x, digits
    # END SOLUTION


def rans_tiny_decode(state: int, digits: list[int], n: int, freqs: list[int], L: int | None = None,
                     base: int = 2) -> list[int]:
    """Decode ``n`` symbol indices from :func:`rans_tiny_encode`'s ``(state, digits)`` (digits read from the end).

    Raises ``ValueError`` when the stream is inconsistent: digits left over, too few digits, or a final state
    other than the encoder's initial ``L``.
    """
    f, cum, m, L = tiny_rans_check(freqs, L, base)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} must be a non-negative integer")
    if not L <= int(state) < base * L:
        raise ValueError(f"state={state} must lie in [L, base L) = [{L}, {base * L})")
    slot2sym = [s for s, fs in enumerate(f) for _ in range(fs)]  # (M,) which symbol owns each slot
    # BEGIN SOLUTION
    x, stack, out = int(state), list(digits), []
    for _ in range(n):
        slot = x % m
        s = slot2sym[slot]
        out.append(s)
        x = f[s] * (x // m) + slot - cum[s]  # undo the update
        while x < L:  # renormalise: pull digits back in, last emitted first
            if not stack:
                raise ValueError("the digit stream ended early")
            x = x * base + stack.pop()
    if stack or x != L:
        raise ValueError(f"decoding ended at state {x} with {len(stack)} digits left (expected state {L}, none left)")
    return out
    # END SOLUTION
