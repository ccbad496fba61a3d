"""Graded exercise of notebook 18 (weight sharing): one Lloyd step of Deep Compression's 1-D k-means.

The student writes :func:`lessonlib.share.clustering.lloyd_step`: assign every value to its nearest centroid
(indices into the *given* centroids, a value exactly halfway going to the lower one), then move every centroid
to the mean of its values, an empty cluster keeping its centroid.  Every expected value is computed by hand in
the comment beside it; the random cases compare with the reference.
"""
from __future__ import annotations

import torch

from .checks import Check, CheckFailure, assert_close, assert_tensor, call, prop
from .registry import Exercise

NOTEBOOK = "18_weight_sharing"

T = torch.tensor


def _kind(kind: str):
    """Re-label a check written with ``prop`` as a hand-computed literal or a comparison with the reference."""
    return lambda c: Check(c.name, kind, c.run)


def _step(fn, ref, values: torch.Tensor, centroids: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    got = call(fn, values, centroids, _ref=ref)
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"{what}\n  expected a tuple (new_centroids, indices), got {type(got).__name__}")
    c, idx = got
    assert_tensor(c, what=f"{what}: new_centroids", shape=tuple(centroids.shape), dtype=centroids.dtype)
    assert_tensor(idx, what=f"{what}: indices", shape=tuple(values.shape), dtype=torch.int64)
    return c, idx


def _expect(fn, ref, values: list[float], centroids: list[float], new: list[float], idx: list[int]) -> None:
    what = f"lloyd_step(values={values}, centroids={centroids})"
    c, i = _step(fn, ref, T(values), T(centroids), what)
    assert_close(i, T(idx), what=f"{what}: indices (nearest of the given centroids)")
    assert_close(c, T(new), what=f"{what}: new_centroids (mean of each cluster)", atol=1e-5)


@_kind("literal")
@prop("two clear clusters: [0, 1, 9, 10] around [0, 10] -> indices [0, 0, 1, 1], centroids [0.5, 9.5]")
def _two(fn, ref):
    _expect(fn, ref, [0.0, 1.0, 9.0, 10.0], [0.0, 10.0], [0.5, 9.5], [0, 0, 1, 1])  # boundary at 5


@_kind("literal")
@prop("unsorted and negative values: [-3, 8, -1, 5, 6] around [-2, 6] -> centroids [-2, 19/3]")
def _unsorted(fn, ref):
    # boundary (-2 + 6) / 2 = 2: -3, -1 -> 0 (mean -2); 8, 5, 6 -> 1 (mean 19/3 = 6.3333, median would be 6)
    _expect(fn, ref, [-3.0, 8.0, -1.0, 5.0, 6.0], [-2.0, 6.0], [-2.0, 19.0 / 3.0], [0, 1, 0, 1, 1])


@_kind("literal")
@prop("an empty cluster keeps its centroid: [0, 2, 100] around [1, 50, 99] -> [1, 50, 100]")
def _empty(fn, ref):
    # boundaries 25.5 and 74.5: 0, 2 -> 0 (mean 1), nothing -> 1 (stays 50), 100 -> 2 (mean 100)
    _expect(fn, ref, [0.0, 2.0, 100.0], [1.0, 50.0, 99.0], [1.0, 50.0, 100.0], [0, 0, 2])


@_kind("literal")
@prop("indices refer to the given centroids, not the moved ones: [0, 2.4, 3, 10] around [0, 5, 10]")
def _old_assignment(fn, ref):
    # boundaries 2.5, 7.5: indices [0, 0, 1, 2]; means 1.2, 3, 10.  Against the *new* centroids 2.4 would be
    # nearer 3 than 1.2 (index 1), so returning the re-assignment is wrong.
    _expect(fn, ref, [0.0, 2.4, 3.0, 10.0], [0.0, 5.0, 10.0], [1.2, 3.0, 10.0], [0, 0, 1, 2])


@_kind("literal")
@prop("a value exactly halfway goes to the lower centroid: [1] around [0, 2] -> index 0, centroids [1, 2]")
def _tie(fn, ref):
    _expect(fn, ref, [1.0], [0.0, 2.0], [1.0, 2.0], [0])  # |1 - 0| = |1 - 2|: the lower one wins


@prop("dtypes: centroids keep their dtype (float32 or float64), indices are int64; one centroid = the mean")
def _dtypes(fn, ref):
    g = torch.Generator().manual_seed(0)
    for dt in (torch.float32, torch.float64):
        v = torch.randn(9, generator=g).to(dt)
        c, i = _step(fn, ref, v, T([0.0]).to(dt), f"lloyd_step on {dt} values with a single centroid [0]")
        assert_close(c, v.mean().reshape(1), what=f"a single {dt} centroid moves to the mean of all values")
        assert_close(i, torch.zeros(9, dtype=torch.int64), what="with one centroid every index is 0")


@_kind("reference")
@prop("seeded random weights and sorted centroids (k = 1..16): same centroids and indices as the reference")
def _random(fn, ref):
    g = torch.Generator().manual_seed(1)
    for n, k in ((50, 2), (200, 5), (300, 16), (40, 1), (500, 8)):
        v = torch.randn(n, generator=g, dtype=torch.float64) * 0.02
        c0 = torch.sort(torch.randn(k, generator=g, dtype=torch.float64) * 0.03)[0]
        what = f"lloyd_step on {n} random weights with {k} random sorted centroids"
        c, i = _step(fn, ref, v, c0, what)
        rc, ri = ref(v.clone(), c0.clone())
        assert_close(i, ri, what=f"{what}: indices")
        assert_close(c, rc, what=f"{what}: new_centroids", rtol=1e-9, atol=1e-12)


Q18_1 = Exercise(
    id="q18_1", points=4, notebook=NOTEBOOK, reference="lessonlib.share.clustering:lloyd_step",
    statement="One step of Lloyd's k-means in 1-D, the inner loop of Deep Compression's weight clustering. "
              "values (n,) and sorted centroids (k,): assign every value to its nearest centroid (a value "
              "exactly halfway goes to the lower one), then move every centroid to the mean of the values "
              "assigned to it; a centroid with no value stays where it is. Return (new_centroids (k,) in the "
              "centroids' dtype, indices (n,) int64 into the given centroids).",
    hints=("In 1-D the boundary between neighbouring centroids is their midpoint: "
           "torch.searchsorted(midpoints, values) gives the nearest centroid (ties go left).",
           "index_add_ sums the values per cluster, torch.bincount(idx, minlength=k) counts them.",
           "torch.where(counts > 0, sums / counts.clamp_min(1), centroids) keeps empty clusters in place."),
    checks=(_two, _unsorted, _empty, _old_assignment, _tie, _dtypes, _random),
)

from .checks import literal  # noqa: E402
from .concept import answer_function_checks  # noqa: E402  (concept questions)

Q18_2 = Exercise(
    id='q18_2', points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:clustered_bytes",
    statement='Concept question (a number). A 576 x 1536 weight is clustered into k = 16 shared values: each weight stores a 4-bit index, and the codebook stores 16 float32 values. How many bytes in all?',
    hints=('n weights times log2(k) bits, divided by 8, plus 4 bytes per centroid.',),
    checks=(literal("the number", (), expected=442432, rtol=1e-6), *answer_function_checks("number")),
)

EXERCISES = [Q18_1, Q18_2]
