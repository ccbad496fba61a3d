"""Real bytes of packed low-bit weights (codes + scales + zeros) against the bits x params limit.

For random weights in SmolLM2-135M's linear-layer shapes, every scheme is packed into a ``QuantLinear``
(scales and zeros in float16) and its buffers are counted; "limit" is bits x params / 8, "formula" is
``evaluate.bytes_at_precision`` with 16-bit scales (and 16-bit zeros for asymmetric schemes).

    python benchmarks/bench_quant_storage.py
"""
from __future__ import annotations

import torch
from torch import nn

from lessonlib.evaluate import bytes_at_precision
from lessonlib.quant.affine import QuantScheme
from lessonlib.quant.qlinear import QuantLinear

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536)]  # (out, in): q/o, k/v, gate/up, down
SCHEMES = [QuantScheme(8, -1, True), QuantScheme(4, -1, False), QuantScheme(4, 128, False),
           QuantScheme(4, 64, False), QuantScheme(4, 64, True), QuantScheme(4, 32, False),
           QuantScheme(3, 64, False), QuantScheme(2, 64, False)]


def rows(seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)
    out = []
    for o, i in SHAPES:
        lin = nn.Linear(i, o, bias=False)
        for sch in SCHEMES:
            if sch.group_size > 0 and i % sch.group_size:
                continue  # 576 is not a multiple of 128
            q = QuantLinear.from_linear(lin, sch, scale_dtype=torch.float16)
            n = o * i
            real = q.nbytes()
            groups = sch.group_size if sch.group_size > 0 else i
            formula = bytes_at_precision(n, sch.bits, groups, 16, 0 if sch.sym else 16)
            out.append(dict(shape=f"{o}x{i}", scheme=str(sch), params=n, fp16=2 * n, limit=n * sch.bits / 8,
                            formula=formula, real=real, bits_per_param=8 * real / n))
    return out


def main() -> None:
    hdr = f"{'shape':>9} {'scheme':>14} {'fp16 B':>9} {'limit B':>9} {'formula B':>10} {'real B':>9} " \
          f"{'bits/param':>10} {'real/limit':>10} {'vs fp16':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows():
        print(f"{r['shape']:>9} {r['scheme']:>14} {r['fp16']:>9} {r['limit']:>9.0f} {r['formula']:>10.0f} "
              f"{r['real']:>9} {r['bits_per_param']:>10.3f} {r['real'] / r['limit']:>10.3f} "
              f"{r['fp16'] / r['real']:>7.2f}x")


if __name__ == "__main__":
    main()
