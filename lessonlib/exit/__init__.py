"""Early exit for LLaMA-style decoders (CALM, Schuster et al. 2022): exit heads, decisions, generation."""
from .decide import (confidence, early_exit_generate, exit_decision, exit_statistics,  # noqa: F401
                     threshold_sweep)
from .heads import ExitHeads, block_outputs, train_exit_heads  # noqa: F401
