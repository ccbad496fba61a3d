"""Ledger experiments of entropy coding: C37 (sparse 4-bit weights coded) and C40 (Deep Compression's
worked problem, checked on a real SmolLM2 tensor).
"""
from __future__ import annotations

from ..models import block_linears, decoder_blocks, get_weight
from ..evaluate import bytes_at_precision
from . import Context, Outcome, experiment, rules


__all__ = ["c40_real_tensor"]


# ------------------------------------------------------------------ C37, C40 (entropy coding)
_CODED_LAYERS = ("self_attn.q_proj", "mlp.gate_proj", "mlp.down_proj")


@experiment("C37")
def c37(ctx: Context) -> Outcome:
    from ..coding.compare import coded_bits_per_weight

    model, _ = ctx.model()
    mid = len(decoder_blocks(model)) // 2
    lins = block_linears(decoder_blocks(model)[mid])
    res = {name: coded_bits_per_weight(get_weight(lins[name]), sparsity=0.8, bits=4) for name in _CODED_LAYERS}
    measured = {f"{n}_{k}": v for n, r in res.items() for k, v in r.items() if k != "raw_bits"}
    verdict = rules.all_of(*(rules.within(r["rans"], 1.0, 2.0, f"rANS bits per weight, block {mid} {n}")
                             for n, r in res.items()))
    return Outcome(measured, verdict, f"Block {mid}'s {', '.join(_CODED_LAYERS)}: 80% magnitude-pruned, 4-bit "
                   "symmetric per channel, all codes (zeros included) rANS-coded: "
                   + ", ".join(f"{r['rans']:.2f} bits (H {r['entropy']:.2f})" for r in res.values()) + ".")


def c40_real_tensor(ctx: Context) -> dict:
    """C40 on a real tensor: Deep Compression of a SmolLM2 down projection at 90% sparsity, 16 shared values
    (4-bit indices), rANS-coded values and relative positions; bits per nonzero from the real byte counts."""
    from ..coding.compare import deep_compress

    model, _ = ctx.model()
    mid = len(decoder_blocks(model)) // 2
    w = get_weight(block_linears(decoder_blocks(model)[mid])["mlp.down_proj"])  # (576, 1536)
    r = deep_compress(w, sparsity=0.9, k=16, coder="rans")
    per_nz = 8 * (r.value_bytes + r.position_bytes) / r.nnz
    return {"layer": f"{mid}.mlp.down_proj", "n_weights": r.n_weights, "nnz": r.nnz,
            "value_bits_per_nonzero": r.value_bits_per_nonzero,
            "position_bits_per_nonzero": r.position_bits_per_nonzero, "bits_per_nonzero_with_positions": per_nz,
            "real_ratio_vs_fp32": r.ratios()["coded"], "fillers": r.fillers}


@experiment("C40")
def c40(ctx: Context) -> Outcome:
    from ..coding.compare import prune_quantize_code_sizes

    n = 100_000_000
    sizes = prune_quantize_code_sizes(n, prune_fraction=0.9, bits=4, coded_bits_per_nonzero=1.5)
    fp32, int4, coded = sizes["dense_fp32"], sizes["quantized_values"], sizes["coded_values"]
    nonzero = int(sizes["nonzero"])
    real = c40_real_tensor(ctx)  # Deep Compression of a real SmolLM2 tensor, 90% pruned, 16 shared values
    real_per_nz = real["bits_per_nonzero_with_positions"]
    measured = {"fp32_MB": fp32 / 1e6, "pruned_4bit_MB": int4 / 1e6, "coded_MB": coded / 1e6,
                "overall_ratio": fp32 / coded, **{f"real_{k}": v for k, v in real.items()},
                "real_final_MB_for_100M": bytes_at_precision(nonzero, real_per_nz) / 1e6}
    verdict = rules.parts(
        ("arithmetic",),
        arithmetic=rules.all_of(
            rules.close_to(fp32 / 1e6, 400, 0.001, "fp32 MB of 100M parameters (the quoted 400 MB)"),
            rules.close_to(coded, n * 0.10 * 1.5 / 8, 1e-9, "final bytes = 100M x 10% survivors x 1.5 bits / 8 "
                           "(the problem's own premises)")),
        premise_bits_per_value=rules.at_most(
            real["value_bits_per_nonzero"], 1.5, f"real rANS bits per surviving value ({real['layer']}; positions "
            "excluded as the problem does, reported separately)"))
    return Outcome(measured, verdict, f"The worked problem: {coded / 1e6:.3f} MB after coding, "
                   f"{fp32 / coded:.0f}x smaller (sparsity pattern not counted, as the problem says). On SmolLM2's "
                   f"{real['layer']} the real coder needs {real['value_bits_per_nonzero']:.2f} bits per survivor "
                   f"+ {real['position_bits_per_nonzero']:.2f} for its position: "
                   f"{measured['real_final_MB_for_100M']:.1f} MB at 100M parameters.")
