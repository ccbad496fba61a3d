"""The layer Hessian handling shared by GPTQ, OBQ, SparseGPT and OBS.

All four minimise ||W X - W' X||^2 for one linear layer, whose Hessian is H = 2/N X X^T (in, in).  Before
any of them can use H they do the same two things (GPTQ reference code ``fasterquant``; SparseGPT
``fasterprune``): handle dead inputs, and invert H with a little damping.
"""
from __future__ import annotations

import warnings

import torch

from .checks import all_finite as _all_finite

__all__ = ["prepare_layer", "damped_inverse", "damped_cholesky", "symmetrize", "SYM_QUIET", "SYM_WARN"]


def prepare_layer(weight: torch.Tensor, hessian: torch.Tensor,
                  dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated working copies ``(W, H, dead)`` of a weight (out, in) and its Hessian (in, in).

    Dead inputs (``H_ii == 0``: the channel was always zero) get ``H_ii = 1`` and ``W[:, i] = 0``, so H stays
    invertible and the weight, which never mattered, is not spent on.  ``dtype`` is the working precision;
    by default float64 for a float64 weight, else float32.  Raises ValueError on wrong shapes or NaN/inf.
    An indefinite H is left to ``damped_inverse``, which raises the damping until it factorises.

    Degenerate statistics (issue 23), decided here once for GPTQ, OBQ, SparseGPT and OBS:

    * an all-zero H (or a zero diagonal: every input dead) means no calibration signal reached the layer;
      compressing on it would zero the whole weight and report a loss of 0, so it raises ValueError;
    * a non-symmetric H (X^T X is symmetric; only rounding or a bug makes it not) is measured as
      a = ||H - H^T||_F / ||H||_F: a <= ``SYM_QUIET`` (float32 rounding) is symmetrised to (H + H^T) / 2
      silently, a <= ``SYM_WARN`` is symmetrised with a RuntimeWarning, larger a raises ValueError (the
      algorithms read only one triangle, so a badly asymmetric H would be silently half-ignored).
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a 2-D (out, in) tensor, got {shape}")
    n = weight.shape[1]
    if not isinstance(hessian, torch.Tensor) or tuple(hessian.shape) != (n, n):
        shape = tuple(hessian.shape) if isinstance(hessian, torch.Tensor) else type(hessian).__name__
        raise ValueError(f"hessian must have shape ({n}, {n}) = (in, in) for a weight {tuple(weight.shape)}, got {shape}")
    for name, t in (("weight", weight), ("hessian", hessian)):
        if not _all_finite(t):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    dt = dtype or (torch.float64 if weight.dtype == torch.float64 else torch.float32)
    W = weight.detach().to(dt).clone()  # (out, in)
    H = hessian.detach().to(W.device, dt).clone()  # (in, in)
    dead = torch.diag(H) == 0  # (in,)
    if bool(dead.all()):
        raise ValueError(f"hessian of shape {tuple(H.shape)} has an all-zero diagonal (every input channel dead): "
                         "no calibration signal reached this layer; check the calibration batches and hooks")
    H = symmetrize(H)
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    return W, H, dead


SYM_QUIET = 1e-5  # relative asymmetry that float32 accumulation can produce: symmetrised silently
SYM_WARN = 1e-2  # up to this, symmetrised with a warning; beyond, refused


def symmetrize(H: torch.Tensor) -> torch.Tensor:
    """``(H + H^T) / 2`` for a nearly symmetric H (in, in); see ``prepare_layer`` for the thresholds."""
    D = H - H.t()
    if not bool(D.any()):
        return H
    a = float(torch.linalg.matrix_norm(D.double()) / torch.linalg.matrix_norm(H.double()).clamp_min(1e-300))
    if a > SYM_WARN:
        raise ValueError(f"hessian is not symmetric: ||H - H^T|| / ||H|| = {a:.3g} > {SYM_WARN:g} "
                         "(a Hessian X^T X is symmetric; build it with lessonlib.calib.HessianStats)")
    if a > SYM_QUIET:
        warnings.warn(f"hessian is slightly asymmetric (||H - H^T|| / ||H|| = {a:.3g}); using (H + H^T) / 2",
                      RuntimeWarning, stacklevel=3)
    return (H + H.t()) / 2


def _lower_inverse(M: torch.Tensor, eye: torch.Tensor, n_blocks: int = 4) -> torch.Tensor:
    """M^-1 of a lower-triangular M (n, n), by column blocks: block [c0, c1) of M^-1 is zero above row c0,
    so it solves only the trailing system M[c0:, c0:] (about half the work of one full solve)."""
    n = M.shape[0]
    out = torch.zeros_like(M)
    b = -(-n // n_blocks)
    for c0 in range(0, n, b):
        out[c0:, c0:c0 + b] = torch.linalg.solve_triangular(M[c0:, c0:], eye[c0:, c0:c0 + b], upper=False)
    return out


def _dampings(percdamp: float, max_tries: int, what: str):
    """The damping fractions to try: ``percdamp``, then x10 (at least 1e-6) with a warning after each failure;
    ValueError once ``max_tries`` have failed (the one retry policy of every damped factorisation)."""
    if not 0.0 <= percdamp < 1e6:
        raise ValueError(f"percdamp={percdamp} must be >= 0 (a fraction of the mean Hessian diagonal)")
    frac = percdamp
    for _ in range(max_tries):
        yield frac
        new = max(frac * 10.0, 1e-6)
        warnings.warn(f"{what} is not positive definite with percdamp={frac:g}; retrying with percdamp={new:g}",
                      RuntimeWarning, stacklevel=3)
        frac = new
    raise ValueError(f"{what} still not positive definite after {max_tries} damping increases (last percdamp="
                     f"{frac:g}); check it for degenerate statistics")


def damped_cholesky(hessian: torch.Tensor, percdamp: float = 0.01, max_tries: int = 8,
                    scale_floor: float = 0.0, what: str = "Hessian") -> tuple[torch.Tensor, float]:
    """``(L, lambda)``: the lower Cholesky factor of H + lambda I (L L^T = H + lambda I), lambda = percdamp *
    max(mean(diag H), scale_floor), raised x10 with a warning until it factorises (ValueError after
    ``max_tries``).  SVD-LLM's whitening (``lowrank.svd``) uses L; ``damped_inverse`` inverts it."""
    if hessian.dim() != 2 or hessian.shape[0] != hessian.shape[1]:
        raise ValueError(f"{what} must be square (in, in), got {tuple(hessian.shape)}")
    mean_diag = max(float(torch.diag(hessian).mean()), scale_floor)
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for frac in _dampings(percdamp, max_tries, what):
        L, info = torch.linalg.cholesky_ex(hessian + frac * mean_diag * eye)  # lower, (in, in)
        if int(info) == 0 and _all_finite(L):
            return L, frac * mean_diag
    raise AssertionError("unreachable: _dampings raises after the last try")  # pragma: no cover


def damped_inverse(hessian: torch.Tensor, percdamp: float = 0.01, upper_cholesky: bool = False,
                   max_tries: int = 8, flip: bool = False) -> tuple[torch.Tensor, float]:
    """``((H + lambda I)^-1 or its upper Cholesky factor U, lambda)`` with lambda = percdamp * mean(diag H).

    U satisfies U^T U = (H + lambda I)^-1; GPTQ and SparseGPT read their updates off its rows.  If a
    factorisation fails (H not positive definite after damping) it warns, multiplies the damping by 10
    (at least 1e-6 of the mean diagonal) and retries; after ``max_tries`` it raises ValueError.  The
    result is always finite.  ``flip=True`` (with ``upper_cholesky``) gets U from one factorisation:
    with J the reversal permutation and M the lower Cholesky factor of J (H + lambda I) J, U = J M^-1 J
    (the same unique factor, one Cholesky and one triangular solve instead of two and an inversion).
    """
    mean_diag = float(torch.diag(hessian).mean())
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for frac in _dampings(percdamp, max_tries, "Hessian"):
        if flip and upper_cholesky:
            Hf = hessian.flip(0, 1)  # J H J, a copy; its diagonal is H's diagonal reversed
            Hf.diagonal().add_(frac * mean_diag)
            M, info = torch.linalg.cholesky_ex(Hf)  # lower
            if int(info) == 0:
                out = _lower_inverse(M, eye).flip(0, 1)  # U = J M^-1 J, upper
                if _all_finite(out):
                    return out, frac * mean_diag
            continue
        L, info = torch.linalg.cholesky_ex(hessian + frac * mean_diag * eye)  # lower, (in, in)
        if int(info) == 0:
            out = torch.cholesky_inverse(L)  # (H + lambda I)^-1, (in, in)
            if upper_cholesky:
                out, info = torch.linalg.cholesky_ex(out, upper=True)  # U: U^T U = H^-1
            if int(info) == 0 and _all_finite(out):
                return out, frac * mean_diag
    raise AssertionError("unreachable: _dampings raises after the last try")  # pragma: no cover
