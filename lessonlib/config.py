"""Run profiles: every size a notebook, test or claim uses comes from here.

Select one with the environment variable ``LESSONLIB_PROFILE`` (``ci``, ``lab``, ``laptop`` or ``gpu``) or
pass ``profile=`` to the functions that take it.  ``ci`` keeps each notebook under two minutes on two CPU
cores; ``lab`` is the default for people working through the chapters (each under five minutes on two CPU
cores); ``laptop`` is the ledger's CPU profile (``lessonlib reproduce`` defaults to it: larger runs that the
chapters read from ``reports/claims.json`` instead of repeating); ``gpu`` follows the published protocols
(2048-token windows, 128 calibration sequences).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

__all__ = ["Profile", "PROFILES", "get_profile", "cache_dir", "progress_disabled"]


@dataclass(frozen=True)
class Profile:
    name: str
    seqlen: int  # tokens per perplexity window
    eval_windows: int  # at most this many non-overlapping windows (0 = all)
    calib_samples: int  # calibration sequences for GPTQ / SparseGPT / Wanda / AWQ
    calib_seqlen: int  # tokens per calibration sequence
    train_steps: int  # optimiser steps for QAT, distillation, recovery fine-tunes
    batch_size: int  # sequences per optimiser step
    lr: float  # learning rate for short fine-tunes
    encoder_train: int  # labelled review sentences used for encoder fine-tuning (0 = all)
    encoder_eval: int  # labelled review sentences used for accuracy (0 = all)
    sweep_points: int  # points on sparsity / bit-width / temperature sweeps
    bench_repeats: int  # timed repetitions in latency measurements
    device: str  # "auto" picks CUDA when present
    # sizes of particular experiments (defaults: the laptop ledger's); experiments read these, never the name
    reduced_sweeps: bool = False  # the ledger's sweeps drop their costliest points (fewer sparsities, no 2:4)
    gen_tokens: int = 32  # tokens generated per timed generation
    partial_blocks: int = 0  # a slow method in a notebook compresses only the first n blocks (0 = all)
    compile_kernels: bool = True  # time torch.compile'd kernels too (minutes of compilation on 2 CPU cores)
    block_stride: int = 1  # C13 factorises the linears of every block_stride-th block
    lottery_rounds: int = 11  # LeNet-300-100 iterative magnitude pruning rounds (C16, C36)
    lottery_rate: float = 0.2  # fraction pruned per round (Frankle & Carbin: 20%)
    lottery_epochs: int = 5  # training epochs per round
    rewind_iter: int = 60  # iteration the weights are rewound to (C36)
    live_batch: int = 2  # windows per optimiser step of a chapter's short live fine-tune (05's QAT runs)

    def __post_init__(self) -> None:
        """Every field is checked, so ``with_(seqlen=-5)`` fails here and not deep inside an experiment."""
        from .checks import device_str, integer, positive_float, short

        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Profile name={short(self.name)} must be a non-empty string")
        for f in ("seqlen", "calib_samples", "calib_seqlen", "train_steps", "batch_size", "sweep_points",
                  "bench_repeats", "gen_tokens", "block_stride", "lottery_rounds", "lottery_epochs", "live_batch"):
            integer(f, getattr(self, f), lo=1, where=f"profile {self.name!r}")
        for f in ("eval_windows", "encoder_train", "encoder_eval", "partial_blocks", "rewind_iter"):  # 0 = all
            integer(f, getattr(self, f), lo=0, where=f"profile {self.name!r}; 0 means all")
        positive_float("lr", self.lr, where=f"profile {self.name!r}")
        if not 0 < self.lottery_rate < 1:
            raise ValueError(f"lottery_rate={short(self.lottery_rate)} must lie in (0, 1) (profile {self.name!r})")
        for f in ("reduced_sweeps", "compile_kernels"):
            if not isinstance(getattr(self, f), bool):
                raise TypeError(f"{f}={short(getattr(self, f))} must be a bool (profile {self.name!r})")
        device_str("device", self.device)

    def as_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "Profile":
        """A copy with some fields changed (unknown field names raise TypeError)."""
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "ci": Profile("ci", seqlen=256, eval_windows=8, calib_samples=16, calib_seqlen=256, train_steps=12,
                  batch_size=4, lr=1e-4, encoder_train=512, encoder_eval=256, sweep_points=3,
                  bench_repeats=3, device="cpu", reduced_sweeps=True, gen_tokens=8, partial_blocks=4,
                  compile_kernels=False, block_stride=3, lottery_rounds=4, lottery_rate=0.5, lottery_epochs=2,
                  rewind_iter=20, live_batch=1),
    # lab: the chapters' default, a live version of each experiment that finishes in minutes; the larger
    # runs belong to the ledger (laptop, gpu) and are read from reports/claims.json
    "lab": Profile("lab", seqlen=512, eval_windows=8, calib_samples=16, calib_seqlen=512, train_steps=16,
                   batch_size=4, lr=1e-4, encoder_train=1000, encoder_eval=500, sweep_points=4,
                   bench_repeats=3, device="auto"),
    # laptop: the ledger's CPU profile, the seeds' 512-token windows; sized so the whole ledger (`lessonlib reproduce`) runs in about
    # two hours on two CPU cores (fine-tunes are the cost: one 4 x 512-token SmolLM2 step is ~12 s there)
    "laptop": Profile("laptop", seqlen=512, eval_windows=16, calib_samples=32, calib_seqlen=512,
                      train_steps=32, batch_size=4, lr=1e-4, encoder_train=2000, encoder_eval=1000,
                      sweep_points=6, bench_repeats=5, device="auto"),
    "gpu": Profile("gpu", seqlen=2048, eval_windows=0, calib_samples=128, calib_seqlen=2048,
                   train_steps=2000, batch_size=16, lr=5e-5, encoder_train=0, encoder_eval=0,
                   sweep_points=10, bench_repeats=50, device="cuda", lottery_rounds=13, lottery_epochs=10,
                   live_batch=8),
}


def get_profile(profile: str | Profile | None = None, default: str = "lab") -> Profile:
    """The active profile: the argument, else ``$LESSONLIB_PROFILE``, else ``default`` (``lab``)."""
    if isinstance(profile, Profile):
        return profile
    name = profile or os.environ.get("LESSONLIB_PROFILE") or default
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                         "(argument or LESSONLIB_PROFILE)")
    return PROFILES[name]


def cache_dir(*parts: str) -> str:
    """``$LESSONLIB_CACHE`` (default ``~/.cache/lessonlib``) joined with ``parts``, created if missing."""
    root = os.environ.get("LESSONLIB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lessonlib")
    path = os.path.join(root, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def progress_disabled() -> bool:
    """Progress bars stay quiet in CI (``CI`` set) or when ``LESSONLIB_QUIET=1``."""
    return bool(os.environ.get("CI")) or os.environ.get("LESSONLIB_QUIET", "") not in ("", "0")
