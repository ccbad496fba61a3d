"""Wrong answers a student might hand in for notebook 19's exercise (each must score 0)."""
from __future__ import annotations

import heapq
import math

import numpy as np

from . import mutant


def _tree_depths(freqs, pick_largest: bool = False, count_root: bool = False) -> np.ndarray:
    f = [int(x) for x in np.asarray(freqs).reshape(-1)]
    n = len(f)
    sign = -1 if pick_largest else 1
    heap = [(sign * c, i) for i, c in enumerate(f)]
    heapq.heapify(heap)
    parent = [-1] * (2 * n - 1)
    nxt = n
    while len(heap) > 1:
        w1, a = heapq.heappop(heap)
        w2, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (w1 + w2, nxt))
        nxt += 1
    depth = [0] * (2 * n - 1)
    for node in range(2 * n - 3, -1, -1):
        depth[node] = depth[parent[node]] + 1
    out = np.array(depth[:n], dtype=np.int64)
    return out + 1 if count_root else out


@mutant("q19_1", "merges the two most frequent nodes instead of the two least frequent")
def merges_largest(freqs):
    return _tree_depths(freqs, pick_largest=True)


@mutant("q19_1", "Shannon code lengths ceil(-log2 p) instead of Huffman's")
def shannon_lengths(freqs):
    f = np.asarray(freqs, dtype=np.float64)
    return np.array([math.ceil(-math.log2(x / f.sum())) for x in f], dtype=np.int64)


@mutant("q19_1", "counts the root as a level (every length one too long)")
def counts_root(freqs):
    return _tree_depths(freqs, count_root=True)


@mutant("q19_1", "returns the lengths in sorted-frequency order, not in the input order")
def sorted_order(freqs):
    f = np.asarray(freqs)
    return np.sort(_tree_depths(f))


@mutant("q19_1", "always merges the newest node with the next symbol (a chain: lengths 1, 2, ..., n-1, n-1)")
def chain(freqs):
    f = np.asarray(freqs)
    order = np.argsort(-f, kind="stable")
    out = np.empty(f.size, dtype=np.int64)
    for rank, s in enumerate(order):
        out[s] = min(rank + 1, f.size - 1)
    return out


@mutant("q19_1", "returns a list instead of a numpy array")
def as_list(freqs):
    return _tree_depths(freqs).tolist()


# ---- q19_2 / q19_3: tiny rANS ----
def _model(freqs, L):
    f = [int(v) for v in freqs]
    m = sum(f)
    return f, [sum(f[:i]) for i in range(len(f))], m, (m if L is None else L)


def _encode(symbols, freqs, L=None, base=2, backwards=True, strict=False, renorm_after=False, use_if=False):
    f, cum, m, L = _model(freqs, L)
    x, digits = L, []
    seq = list(reversed(symbols)) if backwards else list(symbols)
    for s in seq:
        x_max = (L // m) * base * f[s]

        def renorm(x):
            while (x > x_max if strict else x >= x_max):
                digits.append(x % base)
                x //= base
                if use_if:
                    break
            return x
        if not renorm_after:
            x = renorm(x)
        x = (x // f[s]) * m + cum[s] + x % f[s]
        if renorm_after:
            x = renorm(x)
    return x, digits


@mutant("q19_2", "encodes the symbols front to back (the decoder then returns them reversed)")
def forwards(symbols, freqs, L=None, base=2):
    return _encode(symbols, freqs, L, base, backwards=False)


@mutant("q19_2", "renormalises while x > x_max instead of x >= x_max (the state can leave [L, base L))")
def strict_bound(symbols, freqs, L=None, base=2):
    return _encode(symbols, freqs, L, base, strict=True)


@mutant("q19_2", "renormalises after the update instead of before it")
def renorm_after(symbols, freqs, L=None, base=2):
    return _encode(symbols, freqs, L, base, renorm_after=True)


@mutant("q19_2", "emits at most one digit per symbol (if instead of while)")
def one_digit(symbols, freqs, L=None, base=2):
    return _encode(symbols, freqs, L, base, use_if=True)


@mutant("q19_2", "forgets the cumulative frequency c_s in the update")
def no_cum(symbols, freqs, L=None, base=2):
    f, cum, m, L = _model(freqs, L)
    x, digits = L, []
    for s in reversed(symbols):
        while x >= (L // m) * base * f[s]:
            digits.append(x % base)
            x //= base
        x = (x // f[s]) * m + x % f[s]
    return x, digits


def _decode(state, digits, n, freqs, L=None, base=2, front=False, use_if=False, check=True):
    f, cum, m, L = _model(freqs, L)
    slot2sym = [s for s, fs in enumerate(f) for _ in range(fs)]
    x, stack, out = int(state), list(digits), []
    for _ in range(n):
        slot = x % m
        s = slot2sym[slot]
        out.append(s)
        x = f[s] * (x // m) + slot - cum[s]
        while x < L and stack:
            x = x * base + (stack.pop(0) if front else stack.pop())
            if use_if:
                break
    if check and (stack or x != L):
        raise ValueError("stream inconsistent")
    return out


@mutant("q19_3", "reads the digits from the front of the list instead of the end")
def reads_front(state, digits, n, freqs, L=None, base=2):
    return _decode(state, digits, n, freqs, L, base, front=True, check=False)


@mutant("q19_3", "pulls in at most one digit per symbol (if instead of while)")
def dec_one_digit(state, digits, n, freqs, L=None, base=2):
    return _decode(state, digits, n, freqs, L, base, use_if=True, check=False)


@mutant("q19_3", "never checks that the stream was used up (accepts leftover digits)")
def no_final_check(state, digits, n, freqs, L=None, base=2):
    return _decode(state, digits, n, freqs, L, base, check=False)


@mutant("q19_3", "picks the symbol by slot // f instead of by the cumulative table")
def wrong_slot(state, digits, n, freqs, L=None, base=2):
    f, cum, m, L = _model(freqs, L)
    x, stack, out = int(state), list(digits), []
    for _ in range(n):
        slot = x % m
        s = min(slot // max(f), len(f) - 1)
        out.append(s)
        x = f[s] * (x // m) + slot - cum[s]
        while x < L and stack:
            x = x * base + stack.pop()
    return out


# ---- q19_4: the 100M-parameter practice problem ----
@mutant("q19_4", "stops at 4 bits per survivor (forgets the entropy coding)")
def four_bits():
    return 1e7 * 4 / 8 / 1e6


@mutant("q19_4", "codes all 100M weights at 1.5 bits (forgets the pruning)")
def no_pruning():
    return 1e8 * 1.5 / 8 / 1e6


@mutant("q19_4", "forgets to turn bits into bytes")
def bits_not_bytes():
    return 1e7 * 1.5 / 1e6
