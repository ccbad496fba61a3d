"""Behaviour check for the compress_ refactor (issue 15): run the same compressions through the notebook
shorthands and the pipeline on a tiny Llama and save every resulting state dict, so two trees can be compared
bit for bit.  Usage: ``git archive <old> lessonlib | tar -x -C /tmp/old``, then
``PYTHONPATH=/tmp/old python tools/compress_equivalence.py old.pt`` and ``PYTHONPATH=. python ... new.pt``,
and compare the two files' tensors with ``torch.equal``.
"""
import sys, torch, copy
out = sys.argv[1]
from lessonlib.models import tiny_causal_lm
from lessonlib.quant.affine import QuantScheme
try:
    from lessonlib.compress import quantized_copy, prune_with
except ImportError:
    from lessonlib.claims.exp_quant import quantized_copy
    from lessonlib.claims.exp_prune import prune_with
from lessonlib.pipeline import compress
torch.manual_seed(0)
base = tiny_causal_lm('llama', layers=2, seed=3)
calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
res = {}
for meth, kw in (("rtn", {}), ("gptq", {"act_order": True}), ("awq", {})):
    m, _ = quantized_copy(base, meth, QuantScheme(4, 16), calib, **kw); res[meth] = m.state_dict()
m, _ = quantized_copy(base, "gptq", QuantScheme(3, 16), calib, n_blocks=1); res["gptq_nb1"] = m.state_dict()
for meth in ("magnitude", "wanda", "sparsegpt"):
    for pat in ((0.5, 0, 0), (0.5, 2, 4)):
        m = copy.deepcopy(base); prune_with(m, meth, pat[0], calib, pat[1], pat[2]); res[f"{meth}{pat}"] = m.state_dict()
recipes = {"joint": [{"stage": "joint", "method": "sparsegpt_quant", "nm": "2:4", "bits": 4, "group_size": 16}, {"stage": "entropy-code", "method": "rans"}],
           "svd": [{"stage": "factorise", "method": "svd", "energy": 0.8}],
           "prune_quant": [{"stage": "prune", "method": "wanda", "sparsity": 0.3}, {"stage": "quantize", "method": "gptq", "bits": 4, "group_size": 16}],
           "cluster": [{"stage": "prune", "method": "magnitude", "sparsity": 0.3}, {"stage": "share", "method": "cluster", "k": 8}, {"stage": "entropy-code", "method": "huffman"}],
           "qat": [{"stage": "quantize", "method": "qat", "bits": 4, "group_size": 16, "steps": 2}],
           "awq": [{"stage": "quantize", "method": "awq", "bits": 4, "group_size": 16}]}
rows = {}
for k, r in recipes.items():
    m, rep = compress(base, r, calib=calib, profile="ci", evaluate=False)
    res["pipe_" + k] = m.state_dict(); rows[k] = [(x.label, x.bytes, x.info) for x in rep.rows]
torch.save({"sd": res, "rows": rows}, out)
print("done", len(res))
