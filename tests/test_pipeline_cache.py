"""StageCache: a recipe that shares its first stages with an earlier one re-runs only the rest, and the result
is exactly what one ``compress`` call with every stage gives."""
from __future__ import annotations

import pytest
import torch

from lessonlib.models import tiny_causal_lm
from lessonlib.pipeline import compress
from lessonlib.pipeline.cache import StageCache

PRUNE = {"stage": "prune", "method": "magnitude", "sparsity": 0.3}
DEPTH = {"stage": "prune", "method": "depth", "fraction": 0.25}


def rtn(bits):
    return {"stage": "quantize", "method": "rtn", "bits": bits, "group_size": 32}


def tiny():
    return tiny_causal_lm(layers=4, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=256)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cached_prefixes_give_exactly_the_one_shot_model_and_bytes():
    torch.manual_seed(0)
    model = tiny()
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    cache = StageCache(model, calib=calib, profile="ci", max_models=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for recipe, redone in [([DEPTH, PRUNE, rtn(4)], 3), ([DEPTH, PRUNE, rtn(3)], 1), ([DEPTH, PRUNE], 0),
                           ([DEPTH, rtn(8)], 1), ([PRUNE, rtn(4)], 2)]:
        got, nbytes, n = cache(recipe)
        want, rep = compress(model, recipe, calib=calib, profile="ci", evaluate=False)
        assert n == redone, (recipe, n)
        assert same_weights(got, want), recipe
        assert nbytes == rep.final.bytes, recipe
    assert len(cache) == 2  # at most max_models copies
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched
    dense, nbytes, n = cache([])
    assert dense is model and n == 0 and nbytes == compress(model, [rtn(8)], calib=calib, profile="ci",
                                                           evaluate=False)[1].baseline.bytes


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_models=0"):
        StageCache(tiny(), max_models=0)
    with pytest.raises(TypeError, match="nn.Module"):
        StageCache("smollm")
    with pytest.raises(ValueError, match="bits=9"):
        StageCache(tiny(), calib=torch.zeros(2, 8, dtype=torch.long))([rtn(9)])
