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
