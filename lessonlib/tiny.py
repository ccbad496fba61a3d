"""Tiny random models in real Hugging Face architectures, built offline from their config classes (tests,
exercises and the generality matrix of ``tests/test_generality.py``)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["TINY_FAMILIES", "tiny_causal_lm"]

TINY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "opt", "gpt2",
                 "gpt_neox", "falcon", "mixtral", "qwen2_moe", "bert")


def tiny_causal_lm(family: str = "llama", seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4,
                   kv_heads: int | None = None, intermediate: int = 128, vocab: int = 256) -> nn.Module:
    """A small random model in a real architecture, for tests and exercises (no download).

    ``family`` is one of ``TINY_FAMILIES`` (``"bert"`` gives a ``BertForMaskedLM`` encoder; the others are
    causal LMs).  Sliding-window families get a window of 8 tokens and alternate sliding and global
    layers; MoE families get 4 experts, 2 per token.  Weights are seeded, so results are reproducible.
    """
    import transformers as t

    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {list(TINY_FAMILIES)}")
    kv = kv_heads or heads
    c = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
             num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=512)
    d = hidden // heads
    lt = {"layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]}
    builders: dict[str, Callable[[], nn.Module]] = {
        "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(**c, tie_word_embeddings=True)),
        "mistral": lambda: t.MistralForCausalLM(t.MistralConfig(**c, sliding_window=8)),
        "qwen2": lambda: t.Qwen2ForCausalLM(t.Qwen2Config(**c)),
        "qwen3": lambda: t.Qwen3ForCausalLM(t.Qwen3Config(**c, head_dim=d)),
        "gemma": lambda: t.GemmaForCausalLM(t.GemmaConfig(**c, head_dim=d)),
        "gemma2": lambda: t.Gemma2ForCausalLM(t.Gemma2Config(**c, head_dim=d, sliding_window=8, **lt)),
        "gemma3": lambda: t.Gemma3ForCausalLM(t.Gemma3TextConfig(**c, head_dim=d, sliding_window=8, **lt)),
        "phi3": lambda: t.Phi3ForCausalLM(t.Phi3Config(**c, pad_token_id=0)),
        "opt": lambda: t.OPTForCausalLM(t.OPTConfig(
            vocab_size=vocab, hidden_size=hidden, ffn_dim=intermediate, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=512, word_embed_proj_dim=hidden)),
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(
            vocab_size=vocab, n_embd=hidden, n_inner=intermediate, n_layer=layers, n_head=heads, n_positions=512)),
        "gpt_neox": lambda: t.GPTNeoXForCausalLM(t.GPTNeoXConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=512)),
        "falcon": lambda: t.FalconForCausalLM(t.FalconConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            multi_query=True, parallel_attn=True, bias=False, new_decoder_architecture=False)),
        "mixtral": lambda: t.MixtralForCausalLM(t.MixtralConfig(**c, num_local_experts=4, num_experts_per_tok=2)),
        "qwen2_moe": lambda: t.Qwen2MoeForCausalLM(t.Qwen2MoeConfig(
            **c, moe_intermediate_size=intermediate // 4, shared_expert_intermediate_size=intermediate // 2,
            num_experts=4, num_experts_per_tok=2)),
        "bert": lambda: t.BertForMaskedLM(t.BertConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=512)),
    }
    torch.manual_seed(seed)
    import logging
    lg = logging.getLogger("transformers.configuration_utils")
    level = lg.level
    lg.setLevel(logging.ERROR)  # tiny vocabularies make transformers warn about the default special token ids
    try:
        return builders[family]().eval()
    finally:
        lg.setLevel(level)
