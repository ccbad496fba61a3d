"""Entropy coding of integer tensors: canonical Huffman, interleaved rANS, and comparisons to the entropy bound
and to general-purpose compressors (zstd, gzip, lzma); the Deep Compression pipeline's real byte counts."""
from .bitstream import CorruptStreamError, pack_fixed_width, unpack_fixed_width
from .compare import (coded_bits_per_weight, compare_coders, deep_compress, format_results, general_purpose_sizes,
                      prune_quantize_code_sizes, raw_symbol_bytes, shannon_entropy)
from .huffman import HuffmanCode, canonical_codes, huffman_code_lengths, huffman_decode, huffman_encode
from .rans import RansModel, quantize_frequencies, rans_decode, rans_encode

__all__ = ["CorruptStreamError", "pack_fixed_width", "unpack_fixed_width", "coded_bits_per_weight",
           "prune_quantize_code_sizes", "compare_coders", "deep_compress", "format_results", "general_purpose_sizes",
           "raw_symbol_bytes", "shannon_entropy", "HuffmanCode", "canonical_codes", "huffman_code_lengths", "huffman_decode",
           "huffman_encode", "RansModel", "quantize_frequencies", "rans_decode", "rans_encode"]
