"""Every quoted claim of the source texts (see ../shared/claims.md), restated in our own words.

Seeds: 000 the compression dictionary, 001 the compression-pipeline page, 002 the short overview post,
003 the interview-style Q&A, 004 the compression-and-pruning chapter.  ``issue`` is the tracker issue
whose track owns the experiment.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimInfo:
    id: str
    seeds: tuple[str, ...]
    statement: str
    test: str
    issue: int


_ROWS = [
    ("C01", "000,003,004", "Removing whole structures (heads, neurons, blocks) speeds up inference on dense hardware, while zeroing individual weights with a mask does not.",
     "latency of a structurally shrunk model against a masked model with the same parameter count", 6),
    ("C02", "000", "Irregular sparsity only beats a dense matmul once roughly 50-80% of weights are zero; sparse BLAS on CPUs profits more.",
     "CSR against dense matmul across sparsities on CPU: where the curves cross", 5),
    ("C03", "000", "Pruning by magnitude holds up at 10-30% sparsity but falls apart at high sparsity unless the model is retrained.",
     "perplexity against sparsity for magnitude, Wanda and SparseGPT", 5),
    ("C04", "000", "SparseGPT prunes half of an LLM's weights in one shot for less than 2 points of perplexity, without retraining.",
     "perplexity dense against SparseGPT at 50%", 5),
    ("C05", "000", "Wanda matches SparseGPT's quality from one pass over the data, with no Hessian, and runs about ten times faster.",
     "perplexity and wall time of both at 50% and 2:4", 5),
    ("C06", "000,004", "A teacher's soft probabilities carry information about how classes relate ('dark knowledge') that one-hot labels throw away.",
     "the same student trained on soft against hard targets, same budget", 7),
    ("C07", "000", "Temperatures of 4-8 soften the teacher's distribution and give the student a stronger signal.",
     "teacher entropy against T; student quality against T", 7),
    ("C08", "000,001", "Matching hidden states as well as outputs trains a better student than matching outputs alone, especially for BERT-sized models.",
     "encoder student with and without a feature loss", 7),
    ("C09", "000", "Skipping 20-30% of the layers costs only 1-2 perplexity points, and fine-tuning wins most of that back.",
     "perplexity after dropping layers by a sensitivity schedule, before and after a short recovery", 6),
    ("C10", "000", "Early exit saves 30-60% of the per-token compute on easy tokens, while hard tokens still run through every layer.",
     "mean layers per token at a quality budget, split by token difficulty", 7),
    ("C11", "000", "In BERT-sized models a third or more of the attention heads can be removed with almost no loss on the task.",
     "head pruning of the encoder on the review classification task", 6),
    ("C12", "000", "The feed-forward layers hold about two thirds of a transformer's parameters, so halving d_ff from 4d to 2d removes about a third of them.",
     "parameter accounting on the embedded models; shrink d_ff and count", 2),
    ("C13", "000", "Truncated SVD trades accuracy for size smoothly when each layer's rank follows its singular-value curve.",
     "perplexity against parameters with per-layer ranks", 8),
    ("C14", "000,003", "Sharing one set of block weights across layers, as ALBERT does, divides the parameter count by up to 12 (or 24) at competitive quality.",
     "tie blocks, count parameters, perplexity before and after recovery", 8),
    ("C15", "000", "Late blocks often barely change their input and can be removed (ShortGPT).",
     "Block Influence per layer; perplexity after removing the least influential blocks", 6),
    ("C16", "000,004", "A sparse subnetwork found by iterative magnitude pruning, reset to its initial weights, trains alone to the dense network's accuracy.",
     "iterative magnitude pruning of an MNIST MLP: ticket against random re-initialisation", 8),
    ("C17", "000", "GPTQ and SparseGPT are fast special cases of Optimal Brain Compression / Optimal Brain Surgeon.",
     "exact OBS/OBQ on a small layer against GPTQ and SparseGPT", 4),
    ("C18", "000", "Turning SwiGLU into ReLU and fine-tuning brings back more than half of the activations as exact zeros at little cost.",
     "fraction of zero activations and perplexity before and after", 8),
    ("C19", "000,003", "Small models trained for very long (TinyLlama, DistilBERT, Phi) are strong for their size.",
     "size against quality of the embedded small models and their larger references", 2),
    ("C20", "001,003", "4-bit GPTQ raises perplexity by under 1% on most LLMs.",
     "perplexity dense against GPTQ 4-bit (and RTN)", 4),
    ("C21", "001,003", "A 70B-parameter model needs 140 GB in fp16 and about 35 GB in INT4.",
     "byte accounting, checked on real packed tensors", 4),
    ("C22", "001", "Movement pruning reaches 50-70% sparsity on a fine-tuned task for under 2% accuracy loss.",
     "encoder fine-tuned with movement pruning against magnitude", 5),
    ("C23", "001", "Training with quantization in the loop beats quantizing after training at the same bit width.",
     "PTQ against QAT at 4 and 3 bits", 4),
    ("C24", "001", "The usual distillation temperature is 2-4 (compare C07's 4-8).",
     "the same temperature sweep as C07", 7),
    ("C25", "001", "Distilling 10x, then INT4 (4x), then pruning 20% makes a model about 50x smaller while keeping 85-93% of its quality.",
     "the pipeline at our scale: size and quality per stage", 9),
    ("C26", "001", "Compressing jointly beats applying the same methods one after another.",
     "same budget, sequential against joint (e.g. sparsity and quantization together)", 9),
    ("C27", "001", "Each deployment scenario (cloud, edge, real-time, mobile) has its own recommended recipe.",
     "run each recipe; report size, latency and quality", 9),
    ("C28", "003", "About 30% sparsity costs little, 50% costs some, 70% and beyond costs a lot.",
     "perplexity against sparsity", 5),
    ("C29", "003", "Grouped-query attention shrinks the KV cache 4-8x at little quality cost.",
     "KV bytes per token for MHA against GQA; perplexity after conversion", 6),
    ("C30", "003", "One block reused 24 times has 24x fewer block parameters than 24 distinct blocks.",
     "as C14", 8),
    ("C31", "003", "Fused kernels make the same model 2-3x faster without changing its outputs.",
     "eager against fused/compiled latency, identical outputs", 6),
    ("C32", "003", "Llama-7B goes from 14 GB (fp16) to 3.5 GB at 4 bits and 2.8 GB after pruning 20%: 5x smaller, 2x faster, 95% of the quality.",
     "the same recipe on the embedded model", 9),
    ("C33", "003", "Going from 16-bit to 4-bit weights cuts weight memory by 4x.",
     "measured storage of packed weights including scales", 4),
    ("C34", "004", "Unstructured pruning can zero 90% and more of the weights, but that sparsity is hard to turn into speed.",
     "accuracy at 90% (MNIST MLP, encoder) and kernel timings", 5),
    ("C35", "004", "Pruning gradually with retraining in between beats pruning in one shot at high sparsity.",
     "gradual against one-shot at 70-95%", 5),
    ("C36", "004", "Rewinding to initialisation stops finding tickets in larger networks; rewinding to an early training step brings them back.",
     "rewind to step 0 against step k", 8),
    ("C37", "004", "4-bit weights of which 80% are zero entropy-code to 1-2 bits per weight.",
     "a real coder on pruned and quantized tensors: bits per weight against entropy", 8),
    ("C38", "004,003", "DistilBERT keeps about 97% of BERT's accuracy with half of the layers.",
     "a 6-to-3-block encoder student on the review task", 7),
    ("C39", "004", "An ensemble of teachers makes distillation more robust than a single teacher.",
     "single against ensemble teacher", 7),
    ("C40", "004", "100M fp32 parameters (400 MB), 90% pruned, 4-bit survivors coded at 1.5 bits each: the final size follows by arithmetic.",
     "computed, then checked on a real tensor", 8),
    ("C41", "004", "NVIDIA Ampere and later GPUs accelerate 2:4 sparsity.",
     "2:4 semi-structured matmul against dense on a GPU; not measurable on a CPU", 5),
]

CATALOG: dict[str, ClaimInfo] = {
    cid: ClaimInfo(cid, tuple(seeds.split(",")), statement, test, issue)
    for cid, seeds, statement, test, issue in _ROWS
}
