"""``compress(model, recipe)``: run a recipe's stages in order and measure after each one.

Per stage the report records the real storage bytes (``size.storage_report``), quality on the held-out
split (perplexity, GPTQ protocol, and next-token top-1 accuracy, both from one pass), the latency of one
forward pass of a short prompt (``evaluate.measure_latency``), and the seconds the stage took.

Latency is measured on the model as the pipeline holds it: float weights carrying the compressed values.
So quantization and unstructured sparsity show their size gains but no speed gain here (there is no
low-bit or sparse kernel on this path); structural stages (distillation to fewer blocks, head / FFN /
depth pruning, factorisation) do change the latency.  ``pack_quantized`` turns quantized layers into
packed ``QuantLinear`` layers (real buffers; dequantized on every call) when the deployed form is wanted.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..config import Profile, get_profile
from ..data import calibration_batches, eval_tokens
from ..evaluate import measure_latency, perplexity
from ..quant import QuantScheme, quantize_
from .recipe import Recipe, load_recipe
from .size import FORMAT_ATTR, SPARSE_ATTR, storage_report
from .stages import StageContext, block_linear_modules, run_stage
from ..atomic import atomic

__all__ = ["StageRecord", "PipelineReport", "compress", "quality", "speed", "pack_quantized"]


@dataclass
class StageRecord:
    label: str  # "dense" for the starting point, else "<stage>/<method>"
    params: dict
    bytes: int  # real storage bytes after this stage (float parts at the report's float_bytes)
    by_format: dict
    ppl: float | None = None
    accuracy: float | None = None  # next-token top-1 accuracy on the held-out windows
    latency_ms: float | None = None  # median forward time of a (1, prompt_len) prompt
    seconds: float = 0.0  # wall time of the stage itself (not of the measurements)
    info: dict = field(default_factory=dict)


@dataclass
class PipelineReport:
    recipe: dict
    float_bytes: int
    baseline_fp32_bytes: int
    rows: list[StageRecord] = field(default_factory=list)

    @property
    def baseline(self) -> StageRecord:
        return self.rows[0]

    @property
    def final(self) -> StageRecord:
        return self.rows[-1]

    def size_ratio(self, row: StageRecord | None = None) -> float:
        """How many times smaller than the dense model at the same float width (fp16 by default)."""
        return self.baseline.bytes / (row or self.final).bytes

    def quality_ratio(self, row: StageRecord | None = None, metric: str = "accuracy") -> float:
        """Quality kept: accuracy_after / accuracy_dense, or for ``"ppl"`` ppl_dense / ppl_after (both <= 1
        when quality drops)."""
        row = row or self.final
        if metric == "accuracy":
            return row.accuracy / self.baseline.accuracy
        if metric == "ppl":
            return self.baseline.ppl / row.ppl
        raise ValueError(f"metric={metric!r}; choose 'accuracy' or 'ppl'")

    def as_dict(self) -> dict:
        return {"recipe": self.recipe, "float_bytes": self.float_bytes,
                "baseline_fp32_bytes": self.baseline_fp32_bytes, "rows": [asdict(r) for r in self.rows]}

    def table(self) -> str:
        """A markdown table: stage, MB, x smaller, PPL, accuracy, latency, seconds."""
        lines = ["| stage | MB | x smaller | PPL | next-token acc | latency ms | seconds |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            def f(v, fmt):
                return "-" if v is None else format(v, fmt)
            lines.append(f"| {r.label} | {r.bytes / 1e6:.2f} | {self.size_ratio(r):.2f} | {f(r.ppl, '.2f')} | "
                         f"{f(r.accuracy, '.3f')} | {f(r.latency_ms, '.1f')} | {r.seconds:.1f} |")
        return "\n".join(lines)


def quality(model: nn.Module, tokens: torch.Tensor, seqlen: int, max_windows: int = 0) -> dict[str, float]:
    """Perplexity (GPTQ protocol) and next-token top-1 accuracy of ``model`` on a 1-D token stream: one
    ``evaluate.perplexity`` pass (with its checks: window sizes, the model's positions, finite result)."""
    r = perplexity(model, tokens=tokens, seqlen=seqlen, max_windows=max_windows, progress=False, top1=True)
    return {"ppl": r.ppl, "accuracy": r.top1}


@torch.no_grad()
def speed(model: nn.Module, tokens: torch.Tensor, prompt_len: int = 64, batch: int = 1,
          profile: str | Profile | None = None) -> dict[str, float]:
    """Median latency (ms) of one forward pass over ``batch`` prompts of ``prompt_len`` tokens, and the
    throughput in tokens per second that implies."""
    if tokens.numel() < batch * prompt_len:
        raise ValueError(f"need {batch * prompt_len} tokens for batch={batch} x prompt_len={prompt_len}, "
                         f"got {tokens.numel()}")
    x = tokens[: batch * prompt_len].view(batch, prompt_len).to(next(model.parameters()).device)
    model.eval()
    lat = measure_latency(lambda: model(x, use_cache=False), warmup=1, profile=profile)
    return {"latency_ms": 1e3 * lat.median_s, "tokens_per_s": batch * prompt_len / lat.median_s}


@atomic
def pack_quantized(model: nn.Module, scale_dtype: torch.dtype | None = None) -> int:
    """Swap every quantized, dense, non-AWQ decoder linear for a packed ``QuantLinear`` (in place); returns
    how many were packed.  A layer whose method chose its own grid (GPTQ) is packed on exactly that grid
    (its codes, scales and zeros), so the packed model is the quantized model bit for bit; the others
    (RTN) are on the grid that re-rounding fits."""
    from types import SimpleNamespace

    from ..models import get_weight
    from ..quant.qlinear import codes_on_grid

    groups: dict[QuantScheme, set[str]] = {}
    grids: dict[QuantScheme, dict[str, SimpleNamespace]] = {}
    for n, m in block_linear_modules(model).items():
        fmt = getattr(m, FORMAT_ATTR, None)
        if fmt is None or fmt.kind != "quant" or fmt.awq_scale is not None or getattr(m, SPARSE_ATTR, False):
            continue
        groups.setdefault(fmt.scheme, set()).add(n)
        if fmt.qparams is not None:
            sc, ze, gi = fmt.qparams
            try:  # a later stage (pruning) may have moved weights off that grid: then re-round as before
                codes_on_grid(get_weight(m), fmt.scheme, sc, ze, gi)
            except ValueError:
                continue
            grids.setdefault(fmt.scheme, {})[n] = SimpleNamespace(codes=None, scales=sc, zeros=ze, g_idx=gi)
    for scheme, names in groups.items():
        quantize_(model, scheme if scale_dtype is None else _cfg(scheme, scale_dtype),
                  filter_fn=lambda m, n, names=names: n in names, qparams=grids.get(scheme))
    return sum(len(v) for v in groups.values())


def _cfg(scheme: QuantScheme, scale_dtype: torch.dtype):
    from ..quant import WeightOnlyConfig
    return WeightOnlyConfig(scheme, scale_dtype)


@atomic
def compress(model: nn.Module, recipe: dict | list | str | Recipe, tokenizer=None, calib: torch.Tensor | None = None,
             profile: str | Profile | None = None, evaluate: bool = True, *, tokens: torch.Tensor | None = None,
             float_bytes: int = 2, seed: int = 0, prompt_len: int = 64, inplace: bool = False,
             ) -> tuple[nn.Module, PipelineReport]:
    """Apply ``recipe`` (dict, list of stages, YAML path or shipped scenario name) to ``model`` stage by stage.

    ``calib`` (N, T) token windows feed every calibrated stage (default: the profile's calibration batches
    drawn with ``tokenizer``).  With ``evaluate`` the dense model and every stage are measured on the
    held-out split (``tokens``, default the tokenizer's eval split).  The input model is copied unless
    ``inplace``.  Returns the compressed model and a ``PipelineReport`` (first row: the dense model).
    """
    rec = load_recipe(recipe)
    prof = get_profile(profile)
    if evaluate and tokens is None:
        if tokenizer is None:
            raise ValueError("evaluate=True needs a tokenizer or a held-out tokens stream (tokens=...)")
        tokens = eval_tokens(tokenizer)
    cache: dict[str, torch.Tensor] = {}

    def get_calib() -> torch.Tensor:
        if "c" not in cache:
            if calib is not None:
                cache["c"] = calib
            elif tokenizer is None:
                raise ValueError("a calibrated stage needs calib=(N, T) token windows or a tokenizer")
            else:
                cache["c"] = calibration_batches(tokenizer, n=prof.calib_samples, seqlen=prof.calib_seqlen,
                                                 seed=seed)
        return cache["c"]

    ctx = StageContext(prof, get_calib, seed, device=str(next(model.parameters()).device))
    model = model if inplace else copy.deepcopy(model)
    seqlen = min(prof.seqlen, max(2, tokens.numel() // 2)) if tokens is not None else 0

    def record(label: str, params: dict, secs: float, info: dict) -> StageRecord:
        size = storage_report(model, float_bytes)
        r = StageRecord(label, params, size.total, size.by_format, seconds=secs, info=info)
        if evaluate:
            r.ppl, r.accuracy = quality(model, tokens, seqlen, prof.eval_windows).values()
            r.latency_ms = speed(model, tokens, min(prompt_len, tokens.numel()), profile=prof)["latency_ms"]
        return r

    report = PipelineReport(rec.as_dict(), float_bytes, storage_report(model, 4).total)
    report.rows.append(record("dense", {}, 0.0, {}))
    for i, st in enumerate(rec.stages):
        t0 = time.perf_counter()
        try:
            model, info = run_stage(model, st, ctx)
        except ValueError as e:
            raise type(e)(f"stage {i} ({st.label}) of recipe {rec.name!r}: {e}") from e  # keeps UnsupportedError
        report.rows.append(record(st.label, dict(st.params), time.perf_counter() - t0, info))
    return model.eval(), report
