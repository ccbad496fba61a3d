import pytest
import torch

from lessonlib.calib import (HessianStats, InputNormStats, InputSampleStats, capture_block_inputs, run_block,
                             run_sequential)
from lessonlib.models import block_linears, decoder_blocks, get_weight, set_weight, tiny_causal_lm


def test_hessian_is_two_over_n_sum_xxT_across_batches():
    torch.manual_seed(0)
    x1, x2 = torch.randn(5, 3), torch.randn(7, 3)
    s = HessianStats(3)
    s.add(x1)
    s.add(x2.view(1, 7, 3))
    X = torch.cat([x1, x2])
    assert torch.allclose(s.hessian(), 2 / 12 * X.t() @ X, atol=1e-5)
    with pytest.raises(ValueError, match="width 4"):
        s.add(torch.randn(2, 4))


def test_input_norm_stats():
    s = InputNormStats(2)
    s.add(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
    assert torch.allclose(s.sq_norms(), torch.tensor([5.0, 2.0]))
    assert torch.allclose(s.abs_mean(), torch.tensor([2.0, 1.0]))
    assert torch.equal(s.absmax(), torch.tensor([3.0, 2.0]))


def test_input_sample_stats_caps_rows():
    s = InputSampleStats(3, max_rows=10)
    s.add(torch.randn(4, 8, 3))
    assert s.sample().shape == (10, 3)


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])
def test_captured_inputs_and_block_outputs_match_the_model(family):
    m = tiny_causal_lm(family)
    b = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    h, kw = capture_block_inputs(m, b, "cpu")
    with torch.no_grad():
        hs = m(b[1:], output_hidden_states=True).hidden_states
    assert torch.allclose(h[1], hs[0], atol=1e-6)
    assert torch.allclose(run_block(decoder_blocks(m)[0], h, kw)[1], hs[1], atol=1e-5)


def test_run_sequential_hessians_equal_direct_hook_hessians():
    m = tiny_causal_lm("llama", layers=2)
    b = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(1))
    seen = {}
    # direct: hook every linear in the untouched model
    direct, hooks = {}, []
    for i, blk in enumerate(decoder_blocks(m)):
        for n, lin in block_linears(blk).items():
            direct[(i, n)] = HessianStats(get_weight(lin).shape[1])
            hooks.append(lin.register_forward_hook(lambda _m, inp, _o, s=direct[(i, n)]: s.add(inp[0])))
    with torch.no_grad():
        for r in range(3):
            m(b[r:r + 1])
    for h in hooks:
        h.remove()
    run_sequential(m, b, lambda i, blk, st: seen.update({(i, n): s.hessian().clone() for n, s in st.items()}),
                   progress=False)
    assert set(seen) == set(direct)
    for k in seen:  # nothing was compressed, so the sequential inputs equal the model's own
        assert torch.allclose(seen[k], direct[k].hessian(), atol=1e-4), k


def test_later_blocks_see_the_compressed_outputs():
    m = tiny_causal_lm("llama", layers=2)
    b = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(2))
    seen = {}

    def zero_block0(i, blk, st):
        seen[i] = st["self_attn.q_proj"].hessian().clone()
        if i == 0:
            for lin in block_linears(blk).values():
                set_weight(lin, torch.zeros_like(get_weight(lin)))

    run_sequential(m, b, zero_block0, progress=False)
    # block 0 became the identity (residual only), so block 1's q_proj sees normalised embeddings
    emb = m.model.embed_tokens(b)
    normed = decoder_blocks(m)[1].input_layernorm(emb).reshape(-1, 64)
    assert torch.allclose(seen[1], 2 / normed.shape[0] * normed.t() @ normed, atol=1e-4)


def test_groups_true_sequential_and_filter():
    m = tiny_causal_lm("llama", layers=1)
    b = torch.randint(0, 256, (1, 8))
    calls = []
    run_sequential(m, b, lambda i, blk, st: calls.append(sorted(st)),
                   groups=[["self_attn.q_proj", "self_attn.k_proj"], ["mlp.down_proj"]], progress=False)
    assert calls == [["self_attn.k_proj", "self_attn.q_proj"], ["mlp.down_proj"]]
    with pytest.raises(ValueError, match="nope"):
        run_sequential(m, b, lambda *a: None, groups=[["nope"]], progress=False)
    calls.clear()
    run_sequential(m, b, lambda i, blk, st: calls.append(sorted(st)), filter_fn=lambda m, n: "mlp" in n, progress=False)
    assert calls == [["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]]


def test_bad_batches():
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        capture_block_inputs(tiny_causal_lm(), torch.zeros(5, dtype=torch.long))


def test_shared_inputs_share_one_statistics_object_with_the_same_hessian():
    m = tiny_causal_lm("llama", layers=2)
    b = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(3))
    plain, shared = {}, {}
    run_sequential(m, b, lambda i, blk, st: plain.update({(i, n): s.hessian().clone() for n, s in st.items()}),
                   progress=False)

    def record(i, blk, st):
        assert st["self_attn.q_proj"] is st["self_attn.k_proj"] is st["self_attn.v_proj"]
        assert st["mlp.gate_proj"] is st["mlp.up_proj"] and st["self_attn.o_proj"] is not st["mlp.down_proj"]
        shared.update({(i, n): s.hessian().clone() for n, s in st.items()})

    run_sequential(m, b, record, progress=False, share_inputs=True,
                   stats=lambda n_in, dev: HessianStats(n_in, dev, sym_blocks=3))
    assert set(shared) == set(plain)
    for k in plain:
        torch.testing.assert_close(shared[k], plain[k], atol=1e-5, rtol=1e-5)
        H = shared[k]
        tile = torch.arange(H.shape[0]) // -(-H.shape[0] // 3)  # (in,) which of the 3 tiles each index is in
        off = tile[:, None] != tile[None, :]  # (in, in) outside the diagonal tiles
        assert torch.equal(H[off], H.T[off])  # the lower tiles are exact mirrors of the upper ones
        # a diagonal tile is one X_b^T X_b matmul: symmetric to float32 rounding, bitwise only on some BLAS kernels
        torch.testing.assert_close(H, H.T, rtol=1e-6, atol=1e-6 * float(H.abs().max()))


def test_tiled_hessian_by_hand():
    x = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    s = HessianStats(3, sym_blocks=2)
    s.add(x[:1])
    s.add(x[1:])
    # 2/2 * X^T X = [[1, 2, 0], [2, 5, 3], [0, 3, 9]]
    assert torch.equal(s.hessian(), torch.tensor([[1.0, 2.0, 0.0], [2.0, 5.0, 3.0], [0.0, 3.0, 9.0]]))
    with pytest.raises(ValueError, match="sym_blocks"):
        HessianStats(3, sym_blocks=0)
