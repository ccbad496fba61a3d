"""awq_fold folds scales exactly for the norm variants it supports and refuses the rest (issue 22, item 4)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lessonlib.layout import supports
from lessonlib.models import TINY_FAMILIES, UnsupportedError, decoder_blocks, tiny_causal_lm
from lessonlib.quant.awq_fold import find_folds, fold_scales

FOLDABLE = [f for f in TINY_FAMILIES if supports(tiny_causal_lm(f), "awq_fold")]


@pytest.mark.parametrize("fam", FOLDABLE)
def test_folding_random_scales_keeps_the_logits(fam):
    m = tiny_causal_lm(fam)
    for b in decoder_blocks(m):  # random norm weights, so a wrong variant (w vs 1 + w) cannot pass by luck
        for mod in b.modules():
            if isinstance(getattr(mod, "weight", None), torch.Tensor) and mod.weight.dim() == 1:
                mod.weight.data.uniform_(0.5, 1.5)
    x = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x, use_cache=False).logits
    folds = find_folds(m, x)
    assert all(len(f) >= 1 for f in folds)  # every block has at least its attention norm -> QKV fold
    gen = torch.Generator().manual_seed(2)
    for b, block_folds in zip(decoder_blocks(m), folds):
        for prev, names in block_folds:
            p = b.get_submodule(prev)
            c = p.weight.shape[0] if p.weight.dim() == 1 else (p.weight.shape[1] if type(p).__name__ == "Conv1D"
                                                               else p.weight.shape[0])
            s = torch.rand(c, generator=gen) * 1.5 + 0.5  # (C,) in [0.5, 2)
            fold_scales(p, [b.get_submodule(n) for n in names], s)
    with torch.no_grad():
        out = m(x, use_cache=False).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_gemma2_mlp_fold_uses_the_norm_that_feeds_the_mlp():
    folds = find_folds(tiny_causal_lm("gemma2"), torch.randint(0, 256, (1, 12)))[0]
    assert ("pre_feedforward_layernorm", ("mlp.gate_proj", "mlp.up_proj")) in folds
    assert not any(prev == "post_attention_layernorm" for prev, _ in folds)


def test_gemma_norm_folds_as_one_plus_w():
    m = tiny_causal_lm("gemma")
    norm = decoder_blocks(m)[0].input_layernorm
    norm.weight.data.fill_(0.25)  # scales by 1.25
    lin = nn.Linear(64, 3)
    fold_scales(norm, [lin], torch.full((64,), 2.0))
    torch.testing.assert_close(norm.weight.data, torch.full((64,), 1.25 / 2 - 1))


def test_unknown_norm_form_is_refused_and_left_unchanged():
    class Odd(nn.Module):  # y = xhat + w: not a scale, cannot absorb 1/s
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(8))

        def forward(self, x):
            return x / x.norm(dim=-1, keepdim=True) + self.weight

    odd, lin = Odd(), nn.Linear(8, 2)
    w, lw = odd.weight.data.clone(), lin.weight.data.clone()
    with pytest.raises(UnsupportedError, match="Odd"):
        fold_scales(odd, [lin], torch.full((8,), 2.0))
    assert torch.equal(odd.weight.data, w) and torch.equal(lin.weight.data, lw)
