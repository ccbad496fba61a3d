"""Mixed precision: byte accounting against real packed layers, the Hessian proxy, the exact knapsack."""
import itertools
import random

import pytest
import torch
from torch import nn

from lessonlib.quant.affine import QuantScheme, fake_quant
from lessonlib.quant.mixed import (allocate_bits, apply_mixed_precision, block_layer_names, hessian_sensitivities,
                                   hessian_sensitivity, layer_bytes, layer_groups, measured_sensitivities,
                                   option_bytes)
from lessonlib.quant.qlinear import QuantLinear


# ------------------------------------------------------------------ bytes
def test_layer_bytes_hand_checked():
    # 4x8 weight, 4-bit, groups of 4, symmetric: 32*4/8 = 16 B codes + 8 groups * 2 B scales = 32
    assert layer_bytes(4, 8, QuantScheme(4, 4, True)) == 32
    # asymmetric adds a 16-bit zero per group: + 8 * 2 B = 48
    assert layer_bytes(4, 8, QuantScheme(4, 4, False)) == 48
    # per channel, 3 bits: 32*3/8 = 12 B + 4 rows * 2 B = 20; per tensor 8 bits: 32 B + one scale 2 B = 34
    assert layer_bytes(4, 8, QuantScheme(3, -1, True)) == 20
    assert layer_bytes(4, 8, QuantScheme(8, 0, True)) == 34
    with pytest.raises(ValueError, match="does not divide"):
        layer_bytes(4, 10, QuantScheme(4, 4, True))


@pytest.mark.parametrize("scheme", [QuantScheme(3, 64, True), QuantScheme(4, 64, False), QuantScheme(8, -1, True),
                                    QuantScheme(4, 0, False)])
def test_layer_bytes_equal_real_packed_layer(scheme):
    lin = nn.Linear(192, 24, bias=False)
    q = QuantLinear.from_linear(lin, scheme, scale_dtype=torch.float16)
    assert q.nbytes() == layer_bytes(24, 192, scheme)


# ------------------------------------------------------------------ Hessian proxy
def test_hessian_sensitivity_is_output_error():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 16, generator=g)
    X = torch.randn(50, 16, generator=g)
    H = 2 / X.shape[0] * X.T @ X  # (in, in)
    s = QuantScheme(3, 8, True, restricted=True)  # idempotent grid: re-fitting an on-grid weight keeps it
    dW = fake_quant(W, s) - W
    want = float(((X @ dW.T) ** 2).sum() / X.shape[0])  # mean squared output error per token
    assert hessian_sensitivity(W, H, s) == pytest.approx(want, rel=1e-4)
    # more bits, less error; an on-grid weight has zero sensitivity
    assert hessian_sensitivity(W, H, QuantScheme(8, 8, True)) < hessian_sensitivity(W, H, s)
    assert hessian_sensitivity(fake_quant(W, s), H, s) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="hessian"):
        hessian_sensitivity(W, H[:4, :4], s)


# ------------------------------------------------------------------ knapsack
def brute_force(sens, sizes, budget):
    items = list(sens)
    best = None
    for combo in itertools.product(*(sorted(sens[i]) for i in items)):
        b = sum(sizes[i][k] for i, k in zip(items, combo))
        c = sum(sens[i][k] for i, k in zip(items, combo))
        if b <= budget and (best is None or c < best - 1e-12):
            best = c
    return best


def test_allocate_hand_checked():
    sens = {"a": {2: 10.0, 4: 1.0}, "b": {2: 3.0, 4: 2.0}}
    sizes = {"a": {2: 10, 4: 20}, "b": {2: 10, 4: 20}}
    # budget 30: one item may go to 4 bits; upgrading a saves 9, b saves 1 -> a=4, b=2, cost 4
    al = allocate_bits(sens, sizes, 30)
    assert al.bits == {"a": 4, "b": 2} and al.cost == 4.0 and al.nbytes == 30
    assert allocate_bits(sens, sizes, 40).bits == {"a": 4, "b": 4}
    assert allocate_bits(sens, sizes, 20).bits == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="infeasible"):
        allocate_bits(sens, sizes, 19)


@pytest.mark.parametrize("seed", range(30))
def test_allocate_matches_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 5)
    sens, sizes = {}, {}
    for i in range(n):
        ks = rng.sample([2, 3, 4, 8], rng.randint(1, 3))
        sizes[f"l{i}"] = {k: rng.randint(1, 40) * 3 for k in ks}
        sens[f"l{i}"] = {k: rng.random() * 10 for k in ks}
    lo = sum(min(v.values()) for v in sizes.values())
    hi = sum(max(v.values()) for v in sizes.values())
    budget = rng.randint(lo, hi + 5)
    al = allocate_bits(sens, sizes, budget)
    assert al.nbytes <= budget
    assert al.cost == pytest.approx(brute_force(sens, sizes, budget), abs=1e-9)
    assert al.nbytes == sum(sizes[i][b] for i, b in al.bits.items())


def test_allocate_coarse_unit_stays_within_budget():
    sens = {"a": {3: 5.0, 4: 1.0}, "b": {3: 4.0, 4: 0.5}}
    sizes = {"a": {3: 100, 4: 133}, "b": {3: 100, 4: 137}}
    al = allocate_bits(sens, sizes, 240, unit=10)  # extras 33 -> 4 units, 37 -> 4 units; cap 4 units
    assert al.nbytes <= 240 and sorted(al.bits.values()) == [3, 4]
    with pytest.raises(ValueError, match="unit"):
        allocate_bits(sens, sizes, 240, unit=0)
    with pytest.raises(ValueError, match="same items"):
        allocate_bits(sens, {"a": sizes["a"]}, 240)


# ------------------------------------------------------------------ model level
def test_model_level_proxy_and_apply(tiny_llama):
    torch.manual_seed(0)
    calib = torch.randint(0, 256, (2, 16))
    names = block_layer_names(tiny_llama)
    assert len(names) == 2 and len(names[0]) == 7 and names[0][0].endswith("self_attn.q_proj")
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    sens = hessian_sensitivities(tiny_llama, calib, bits_options=(3, 8), group_size=32, device="cpu")
    assert set(sens) == {n for ns in names for n in ns}
    assert all(v[3] > v[8] > 0 for v in sens.values())
    assert all(torch.equal(before[k], v) for k, v in tiny_llama.state_dict().items())  # model unchanged
    by_type = layer_groups(tiny_llama, "type")
    assert len(by_type) == 7 and all(len(v) == 2 for v in by_type.values())
    gs = hessian_sensitivities(tiny_llama, calib, bits_options=(3, 8), group_size=32, device="cpu", groups=by_type)
    for g, ns in by_type.items():
        assert gs[g][3] == pytest.approx(sum(sens[n][3] for n in ns))
    sizes = option_bytes(tiny_llama, by_type, (3, 8), group_size=32)
    budget = sum(v[3] for v in sizes.values()) + 12000  # room for 2 of 7 groups at 8 bits
    al = allocate_bits(gs, sizes, budget)
    assert al.nbytes <= budget and 8 in al.bits.values() and 3 in al.bits.values()
    per_layer = apply_mixed_precision(tiny_llama, al.bits, by_type, group_size=32, pack=True,
                                      scale_dtype=torch.float16)
    packed = {n: m for n, m in tiny_llama.named_modules() if isinstance(m, QuantLinear)}
    assert set(packed) == set(per_layer) and all(packed[n].scheme.bits == b for n, b in per_layer.items())
    assert sum(m.nbytes() for m in packed.values()) == al.nbytes  # the budgeted bytes are the real bytes
    with pytest.raises(ValueError, match="unknown groups"):
        apply_mixed_precision(tiny_llama, {"nope": 4}, by_type)


def test_measured_sensitivity_restores_weights(tiny_llama):
    wins = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    groups = layer_groups(tiny_llama, "block")
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    sens = measured_sensitivities(tiny_llama, wins, groups, bits_options=(2, 8), group_size=32)
    assert set(sens) == {"block.0", "block.1"}
    assert all(abs(v[8]) < abs(v[2]) for v in sens.values())
    assert all(torch.equal(before[k], v) for k, v in tiny_llama.state_dict().items())
    with pytest.raises(ValueError, match="distinct"):
        measured_sensitivities(tiny_llama, wins, groups, bits_options=(4, 4))
