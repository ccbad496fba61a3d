"""Lottery tickets by iterative magnitude pruning (IMP) with rewinding, on LeNet-300-100 and MNIST.

Frankle & Carbin (2019), "The Lottery Ticket Hypothesis", Algorithm (section 1, "Identifying winning tickets"):

1. Randomly initialise a network f(x; theta_0) and keep theta_0.
2. Train it for j iterations to theta_j.
3. Prune p% of the remaining weights of each layer by magnitude (they prune the output layer at half the
   rate), giving a mask m.
4. Reset the survivors to their initial values, theta_0 * m, and repeat from 2 (n rounds: p^(1/n)% each).

Frankle, Dziugaite, Roy & Carbin (2020), "Linear Mode Connectivity and the Lottery Ticket Hypothesis" (and
"Stabilizing the LTH", 2019): on larger networks rewinding to theta_0 fails, but *rewinding* to an early
iterate theta_k (k > 0) and training the remaining iterations recovers tickets.  The control is the same
mask with a *random re-initialisation* (Frankle & Carbin section 2: tickets learn faster and reach higher
accuracy than random re-initialisations at the same sparsity).

Everything is seeded: the init, the batch order (a function of the global iteration, so a rewound run sees
the same batches as the original from iteration k on) and the re-initialisations.  Masks: bool, True = keep.
Each training run starts a fresh Adam optimiser (rewinding restores weights, not optimiser state).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import progress_disabled
from ..prune.masks import prune_lowest_count

__all__ = ["LeNet300100", "prunable_weights", "layer_prune_mask", "imp_round", "train_masked", "accuracy_of",
           "mnist_splits", "LotteryRow", "lottery_experiment", "format_lottery_table", "mask_sparsity"]


class LeNet300100(nn.Module):
    """The fully connected LeNet-300-100 (LeCun et al. 1998) used by Frankle & Carbin: 784-300-100-10, ReLU."""

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.reshape(x.shape[0], -1))))))  # (B, 10)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight matrices IMP prunes (every ``nn.Linear`` weight; biases are not pruned), by module name."""
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of pruned entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


def layer_prune_mask(w: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """Prune ``round(rate * remaining)`` of the still-unpruned entries of ``w`` by magnitude; returns the new
    mask (a subset of ``mask``).  w, mask: (out, in)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate={rate} is outside [0, 1)")
    if mask.shape != w.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool of shape {tuple(w.shape)}, got {mask.dtype} {tuple(mask.shape)}")
    remaining = int(mask.sum())
    scores = torch.where(mask, w.detach().abs(), torch.full_like(w, -1.0))  # pruned entries sort first
    return prune_lowest_count(scores, mask.numel() - remaining + round(rate * remaining))


def imp_round(trained: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], rewind: dict[str, torch.Tensor],
              rate: float, output_layer: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One IMP round (Frankle & Carbin steps 3-4): per layer, prune ``rate`` of the remaining weights of the
    ``trained`` weights by magnitude (``output_layer`` at ``rate / 2``), then rewind the survivors to
    ``rewind`` (theta_0 for a ticket, theta_k for rewinding).  Returns ``(new_masks, new_weights)`` where
    new_weights = rewind * new_mask; all dicts are keyed by layer name with (out, in) tensors.
    """
    if set(trained) != set(masks) or set(trained) != set(rewind):
        raise ValueError(f"trained, masks and rewind must have the same layers; got {sorted(trained)}, "
                         f"{sorted(masks)}, {sorted(rewind)}")
    if output_layer is not None and output_layer not in trained:
        raise ValueError(f"output_layer={output_layer!r} is not one of {sorted(trained)}")
    # BEGIN SOLUTION
    new_masks, new_weights = {}, {}
    for name, w in trained.items():
        r = rate / 2 if name == output_layer else rate
        new_masks[name] = layer_prune_mask(w, masks[name], r)  # (out, in) bool
        new_weights[name] = rewind[name] * new_masks[name]  # survivors back to their rewind values
    # END SOLUTION
    return new_masks, new_weights


def mnist_splits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(X_train (4000, 784), y_train, X_test (1000, 784), y_test)`` from ``lessonlib.data.load_mnist5k``."""
    from ..data import load_mnist5k

    xtr, ytr = load_mnist5k("train")
    xte, yte = load_mnist5k("test")
    return xtr, ytr, xte, yte


def _batch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def train_masked(model: nn.Module, masks: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 iterations: int, start: int = 0, batch: int = 60, lr: float = 1.2e-3, seed: int = 0,
                 snapshot_at: int | None = None) -> dict[str, torch.Tensor] | None:
    """Adam on the masked network from global iteration ``start`` to ``iterations`` (Frankle & Carbin use
    Adam 1.2e-3, batch 60 for LeNet).  Pruned weights get zero gradient and are re-zeroed after each step.
    Returns a copy of the state dict at iteration ``snapshot_at`` (theta_k for rewinding) if asked."""
    if not 0 <= start <= iterations or batch < 1:
        raise ValueError(f"need 0 <= start={start} <= iterations={iterations} and batch={batch} >= 1")
    weights = prunable_weights(model)
    if set(masks) != set(weights):
        raise ValueError(f"masks for {sorted(masks)} do not match the model's layers {sorted(weights)}")
    fmasks = {n: masks[n].to(w.dtype) for n, w in weights.items()}  # float copies: cheaper to multiply
    with torch.no_grad():
        for n, w in weights.items():
            w.mul_(fmasks[n])
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    per_epoch = x.shape[0] // batch
    snap, order, cur_epoch = None, None, -1
    model.train()
    for it in range(start, iterations):
        if it == snapshot_at:
            snap = {k: v.detach().clone() for k, v in model.state_dict().items()}
        epoch, step = divmod(it, per_epoch)
        if epoch != cur_epoch:
            order, cur_epoch = _batch_order(x.shape[0], epoch, seed), epoch
        idx = order[step * batch:(step + 1) * batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=False)
        loss.backward()
        for n, w in weights.items():
            w.grad.mul_(fmasks[n])
        opt.step()
        with torch.no_grad():
            for n, w in weights.items():
                w.mul_(fmasks[n])
    if snapshot_at == iterations:
        snap = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.eval()
    return snap


@torch.no_grad()
def accuracy_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(-1) == y).float().mean())


@dataclass
class LotteryRow:
    round: int
    sparsity: float  # fraction of prunable weights removed (ticket lineage)
    ticket: float  # test accuracy, IMP + rewind to iteration 0
    reinit: float  # same mask as the ticket, random re-initialisation
    rewind_k: float  # IMP + rewind to iteration k (own lineage of masks)
    sparsity_rewind_k: float

    def as_dict(self) -> dict:
        return asdict(self)


def _load(model: nn.Module, state: dict[str, torch.Tensor], weights: dict[str, torch.Tensor] | None = None) -> None:
    model.load_state_dict(state)
    if weights:
        with torch.no_grad():
            for n, w in prunable_weights(model).items():
                w.copy_(weights[n])


def lottery_experiment(rounds: int = 5, rate: float = 0.2, epochs: int = 3, rewind_iter: int = 20,
                       batch: int = 60, lr: float = 1.2e-3, seed: int = 0, data=None) -> list[LotteryRow]:
    """Accuracy vs sparsity of IMP tickets (rewind to 0), random re-initialisation and rewind to ``rewind_iter``.

    Round 0 is the dense network; round r has about 1 - (1 - rate)^r of the weights removed (output layer at
    half the rate).  ``data`` = (X_train, y_train, X_test, y_test), default :func:`mnist_splits`.
    """
    if rounds < 0 or epochs < 1:
        raise ValueError(f"rounds={rounds} must be >= 0 and epochs={epochs} >= 1")
    xtr, ytr, xte, yte = data if data is not None else mnist_splits()
    total = epochs * (xtr.shape[0] // batch)
    if not 0 < rewind_iter < total:
        raise ValueError(f"rewind_iter={rewind_iter} must be in 1..{total - 1} (the training length)")
    model = LeNet300100(seed)
    theta0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = list(prunable_weights(model))
    out_layer = names[-1]
    masks_t = {n: torch.ones_like(w, dtype=torch.bool) for n, w in prunable_weights(model).items()}
    theta_k = train_masked(model, masks_t, xtr, ytr, total, batch=batch, lr=lr, seed=seed, snapshot_at=rewind_iter)
    acc = accuracy_of(model, xte, yte)
    rows = [LotteryRow(0, 0.0, acc, acc, acc, 0.0)]
    trained_t = trained_k = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    masks_k = dict(masks_t)
    for r in tqdm(range(1, rounds + 1), desc="IMP rounds", disable=progress_disabled(), leave=False):
        # ticket: prune, rewind to theta_0, retrain
        masks_t, w0 = imp_round(trained_t, masks_t, {n: theta0[f"{n}.weight"] for n in names}, rate, out_layer)
        _load(model, theta0, w0)
        train_masked(model, masks_t, xtr, ytr, total, batch=batch, lr=lr, seed=seed)
        ticket = accuracy_of(model, xte, yte)
        trained_t = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
        # control: the ticket's mask on a fresh random initialisation
        _load(model, LeNet300100(seed + 1000 + r).state_dict())
        train_masked(model, masks_t, xtr, ytr, total, batch=batch, lr=lr, seed=seed)
        reinit = accuracy_of(model, xte, yte)
        # rewinding: own lineage, survivors reset to theta_k, train the remaining iterations
        masks_k, wk = imp_round(trained_k, masks_k, {n: theta_k[f"{n}.weight"] for n in names}, rate, out_layer)
        _load(model, theta_k, wk)
        train_masked(model, masks_k, xtr, ytr, total, start=rewind_iter, batch=batch, lr=lr, seed=seed)
        rewound = accuracy_of(model, xte, yte)
        trained_k = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
        rows.append(LotteryRow(r, mask_sparsity(masks_t), ticket, reinit, rewound, mask_sparsity(masks_k)))
    return rows


def format_lottery_table(rows: list[LotteryRow]) -> str:
    """Plain-text accuracy-vs-sparsity table."""
    lines = [f"{'round':>5} {'sparsity':>9} {'ticket':>7} {'reinit':>7} {'rewind-k':>8}"]
    for r in rows:
        lines.append(f"{r.round:>5} {100 * r.sparsity:>8.1f}% {100 * r.ticket:>6.1f}% {100 * r.reinit:>6.1f}% "
                     f"{100 * r.rewind_k:>7.1f}%")
    return "\n".join(lines)
