"""The encoder distillation task: a MiniLM teacher fine-tuned on the review sentences, a 3-block student.

The recipe follows DistilBERT (Sanh et al. 2019, section 3): the student keeps every other block of the
teacher (``student_by_layers``, here blocks 1, 3, 5 so that the student's top block is the teacher's top
block) and is trained with

    L = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(p_T(teacher) || p_T(student))
        + beta * sum_k  L_hid(h_S^(k), h_T^(m(k)))

where ``L_hid`` is the hidden-state loss of ``FeatureDistiller`` (DistilBERT's cosine loss, FitNets /
TinyBERT eq. 7 with ``kind="mse"``) between student block k and the teacher block m(k) it was copied from,
over the non-padding tokens.  ``beta = 0`` is plain response distillation (claim C08 compares the two).

Everything is sized by the profile: ``encoder_train`` / ``encoder_eval`` sentences, ``train_steps`` (scaled,
see ``encoder_schedule``), ``batch_size``.  Every run is seeded: the classifier head's initialisation, the
batch order (``batch_indices``) and the dropout of each step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import Profile, get_profile, progress_disabled
from ..data import load_reviews
from ..evaluate import classification_accuracy
from ..models import load_encoder
from .losses import FeatureDistiller, check_alpha, check_temperature, distillation_loss
from .students import select_layers, student_by_layers
from ..training import batch_indices, check_loss
from .train import ensemble_logits

__all__ = ["EncoderSchedule", "encoder_schedule", "teacher_schedule", "review_splits", "train_encoder",
           "finetune_teacher", "encoder_student", "encoder_accuracy"]

MAX_LENGTH = 64  # review sentences are short (median about 25 word pieces)


@dataclass(frozen=True)
class EncoderSchedule:
    steps: int  # optimiser steps of every encoder run
    batch_size: int  # sentences per step
    lr: float  # AdamW learning rate


def encoder_schedule(profile: str | Profile | None = None) -> EncoderSchedule:
    """Steps, batch and learning rate of the encoder runs, from the profile.

    Sentences are short, so a step takes ``4 * batch_size`` of them; the step count is twice the profile's
    ``train_steps`` but at most three passes over ``encoder_train`` (all training sentences when 0).  The
    learning rate is 3x the profile's (a small encoder fine-tuned for few steps).
    """
    p = get_profile(profile)
    batch = 4 * p.batch_size
    n = p.encoder_train or len(load_reviews("train")[0])
    steps = max(1, min(2 * p.train_steps, -(-3 * n // batch)))
    return EncoderSchedule(steps=steps, batch_size=batch, lr=3 * p.lr)


def review_splits(profile: str | Profile | None = None, seed: int = 0):
    """``((train_texts, train_labels), (eval_texts, eval_labels))``: seeded subsets of the review splits."""
    p = get_profile(profile)
    return load_reviews("train", limit=p.encoder_train, seed=seed), load_reviews("test", limit=p.encoder_eval, seed=seed)


def _encode(tok, texts: list[str], dev: torch.device) -> dict[str, torch.Tensor]:
    enc = tok(list(texts), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    return {k: v.to(dev) for k, v in enc.items()}


def train_encoder(model: nn.Module, tok, data: tuple[list[str], torch.Tensor],
                  teachers: Sequence[nn.Module] = (), layer_map: Sequence[int] | None = None,
                  T: float = 2.0, alpha: float = 0.5, feature_weight: float = 0.0, feature_kind: str = "cosine",
                  schedule: EncoderSchedule | None = None, seed: int = 0, profile=None) -> list[float]:
    """Train a sequence classifier in place; returns the loss of every step.

    Without ``teachers``: plain fine-tuning (cross-entropy).  With teachers: ``distillation_loss`` against
    their (ensembled, ``ensemble_logits``) logits, plus ``feature_weight`` times the hidden-state loss
    between student block k and teacher block ``layer_map[k]`` (of the first teacher).
    """
    check_temperature(T)
    check_alpha(alpha)
    if feature_weight < 0:
        raise ValueError(f"feature_weight={feature_weight} must be >= 0")
    teachers = list(teachers)
    if feature_weight > 0 and (not teachers or layer_map is None):
        raise ValueError("a feature loss (feature_weight > 0) needs a teacher and a layer_map")
    texts, labels = data
    if len(texts) != len(labels) or not len(texts):
        raise ValueError(f"{len(texts)} texts and {len(labels)} labels: need the same, non-zero count")
    sched = schedule or encoder_schedule(profile)
    dev = next(model.parameters()).device
    fd = None
    if feature_weight > 0:
        n_student = model.config.num_hidden_layers
        if len(layer_map) != n_student:
            raise ValueError(f"layer_map={list(layer_map)} must name one teacher block per student block "
                             f"({n_student})")
        fd = FeatureDistiller(model.config.hidden_size, teachers[0].config.hidden_size, kind=feature_kind, seed=seed)
        fd = fd.to(dev)
    params = [p for p in model.parameters() if p.requires_grad] + (list(fd.parameters()) if fd else [])
    opt = torch.optim.AdamW(params, lr=sched.lr)
    for t in teachers:
        t.eval()
    model.train()
    losses = []
    for step in tqdm(range(sched.steps), desc="encoder", disable=progress_disabled()):
        idx = batch_indices(len(texts), sched.batch_size, step, seed)
        enc = _encode(tok, [texts[i] for i in idx.tolist()], dev)
        y = labels[idx].to(dev)  # (B,)
        want_h = fd is not None
        with torch.no_grad():
            t_out = [t(**enc, output_hidden_states=want_h) for t in teachers]
        torch.manual_seed(seed * 1_000_003 + step)  # this step's dropout
        out = model(**enc, output_hidden_states=want_h)
        if teachers:
            z_t = t_out[0].logits.float() if len(teachers) == 1 else \
                ensemble_logits([o.logits for o in t_out], T, "probs")  # (B, C)
            loss = distillation_loss(out.logits, z_t, y, T=T, alpha=alpha)
        else:
            loss = nn.functional.cross_entropy(out.logits.float(), y)
        if fd is not None:
            mask = enc["attention_mask"]  # (B, S): hidden-state loss on real tokens only
            hs, ht = out.hidden_states, t_out[0].hidden_states  # index 0 = embeddings, k + 1 = block k
            feat = sum(fd(hs[k + 1], ht[m + 1], mask) for k, m in enumerate(layer_map)) / len(layer_map)
            loss = loss + feature_weight * feat
        check_loss(loss, step, "encoder loss", f"lower lr={sched.lr}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def finetune_teacher(data: tuple[list[str], torch.Tensor], seed: int = 0, name: str = "minilm-l6",
                     profile=None, schedule: EncoderSchedule | None = None):
    """MiniLM with a fresh (seeded) two-class head, fine-tuned on ``data``: ``(model, tokenizer)``.

    ``schedule`` defaults to ``encoder_schedule(profile)``; ``teacher_schedule`` gives a teacher its full
    three passes over the training sentences.
    """
    p = get_profile(profile)
    torch.manual_seed(seed)  # the classifier head's initialisation
    model, tok = load_encoder(name, task="classification", num_labels=2, device=p.device)
    train_encoder(model, tok, data, seed=seed, schedule=schedule, profile=p)
    return model, tok


def teacher_schedule(profile: str | Profile | None = None) -> EncoderSchedule:
    """``encoder_schedule`` with as many steps as three passes over the training sentences take.

    A distillation teacher should be trained to convergence before it teaches; with the ci profile's few
    steps it would not even see every sentence once.  On larger profiles this equals ``encoder_schedule``.
    """
    p = get_profile(profile)
    s = encoder_schedule(p)
    n = p.encoder_train or len(load_reviews("train")[0])
    return EncoderSchedule(steps=max(s.steps, -(-3 * n // s.batch_size)), batch_size=s.batch_size, lr=s.lr)


def encoder_student(teacher: nn.Module, every: int = 2) -> tuple[nn.Module, list[int]]:
    """DistilBERT-style student: every ``every``-th block of the teacher, ending with its top block.

    Returns ``(student, layer_map)``; ``layer_map[k]`` is the teacher block student block k was copied from.
    """
    n = teacher.config.num_hidden_layers
    layers = select_layers(n, every, offset=(n - 1) % every)
    return student_by_layers(teacher, layers=layers), layers


def encoder_accuracy(model: nn.Module, tok, data: tuple[list[str], torch.Tensor]) -> float:
    """Accuracy on ``(texts, labels)`` with the task's tokenisation."""
    return classification_accuracy(model, tok, data[0], data[1], max_length=MAX_LENGTH)
