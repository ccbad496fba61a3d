"""Take a model compressed in the course to other runtimes (GGUF for llama.cpp and transformers)."""
from .gguf import GGUF_SCHEMES, gguf_grid, quantize_for_gguf, write_gguf

__all__ = ["GGUF_SCHEMES", "gguf_grid", "quantize_for_gguf", "write_gguf"]
