"""The quantization track: affine grids, bit packing, ``QuantLinear`` (and ``KernelLinear`` on torch's CPU int8/int4 kernels), RTN, GPTQ, OBQ, AWQ, SmoothQuant, QAT.

Every quantizer shares ``QuantScheme(bits, group_size, sym, int_zero)``: ``group_size`` 0 = per tensor,
-1 = per output channel, g > 0 = groups of g input columns (64 is the course default for SmolLM2,
whose 576/1536-wide rows are not multiples of 128).
"""
from .affine import QuantizedWeight, QuantScheme, compute_qparams, dequantize, fake_quant, quantize
from .awq import AWQResult, awq_quantize, awq_quantize_model
from .awq_fold import awq_fold_model, fold_scales
from .kernels import KernelLinear, to_kernels
from .gptq import GPTQResult, gptq_quantize, gptq_quantize_model, hessian_error
from .obq import OBQResult, obq_quantize
from .packing import pack_codes, storage_bytes, unpack_codes
from .qat import FakeQuantSTE, QATLinear, convert_qat, fake_quant_ste, prepare_qat
from .qlinear import QuantLinear, WeightOnlyConfig, load_quantized, quantize_, save_quantized
from .rtn import rtn_quantize, rtn_quantize_model
from .smoothquant import MinMaxObserver, PercentileObserver, W8A8Linear, smooth_scales, w8a8_linear

__all__ = [
    "QuantScheme", "QuantizedWeight", "compute_qparams", "quantize", "dequantize", "fake_quant",
    "pack_codes", "unpack_codes", "storage_bytes",
    "QuantLinear", "KernelLinear", "to_kernels", "WeightOnlyConfig", "quantize_", "save_quantized", "load_quantized",
    "rtn_quantize", "rtn_quantize_model",
    "GPTQResult", "gptq_quantize", "gptq_quantize_model", "hessian_error",
    "OBQResult", "obq_quantize",
    "AWQResult", "awq_quantize", "awq_quantize_model", "awq_fold_model", "fold_scales",
    "MinMaxObserver", "PercentileObserver", "smooth_scales", "w8a8_linear", "W8A8Linear",
    "FakeQuantSTE", "fake_quant_ste", "QATLinear", "prepare_qat", "convert_qat",
]
