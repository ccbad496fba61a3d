"""``StageCache``: run recipes that share their first stages without redoing those stages.

An interactive recipe editor (notebook 21) asks for many recipes that differ in one stage: the same 20%
magnitude pruning followed by 8, 4 or 3 bits.  ``compress`` copies the model once and then applies its
stages in order, each stage a deterministic function of the model it receives, the profile, the
calibration windows and the seed (``run_stage`` reseeds before every stage).  So applying stages 0..k-1
and then, on a copy of that result, stages k..n-1 gives exactly the model of one call with all n stages:
the cache keeps the model after the longest prefixes it has seen and re-runs only the stages after the
longest prefix a new recipe shares with them.
"""
from __future__ import annotations

import json
from collections import OrderedDict

import torch
from torch import nn

from ..config import Profile, get_profile
from .core import compress
from .recipe import load_recipe
from .size import storage_report

__all__ = ["StageCache"]


class StageCache:
    """Memoised prefixes of recipes applied to one model.

    ``cache(recipe)`` returns ``(model, bytes, redone)``: the compressed model (evaluate it, do not modify it:
    it may be a cached prefix of a later recipe), its real storage bytes (``storage_report`` at
    ``float_bytes``) and how many stages were actually run for this call.  The models after every *strict*
    prefix of a recipe are kept (the final model of a request is the caller's: memoise its measurements
    instead), up to ``max_models`` of them, least recently used dropped first; each is a full copy.
    """

    def __init__(self, model: nn.Module, tokenizer=None, calib: torch.Tensor | None = None,
                 profile: str | Profile | None = None, *, float_bytes: int = 2, seed: int = 0,
                 max_models: int = 3) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise ValueError(f"max_models={max_models!r} must be an int >= 1 (how many compressed copies to keep)")
        self.model, self.tokenizer, self.calib = model, tokenizer, calib
        self.profile, self.float_bytes, self.seed, self.max_models = get_profile(profile), float_bytes, seed, max_models
        self._models: OrderedDict[str, tuple[nn.Module, int]] = OrderedDict()  # recipe prefix key -> (model, bytes)

    @staticmethod
    def _key(stages) -> str:
        return json.dumps([s.as_dict() for s in stages], sort_keys=True)  # validated: defaults filled in

    def __len__(self) -> int:
        return len(self._models)

    def __call__(self, recipe: dict | list | str) -> tuple[nn.Module, int, int]:
        if isinstance(recipe, list) and not recipe:  # the dense model itself
            return self.model, storage_report(self.model, self.float_bytes).total, 0
        stages = load_recipe(recipe).stages  # the whole recipe is validated before any stage runs
        start, known = self.model, 0
        for k in range(len(stages), 0, -1):  # the longest prefix already computed
            key = self._key(stages[:k])
            if key in self._models:
                self._models.move_to_end(key)
                start, known = self._models[key][0], k
                break
        m = start
        for k in range(known, len(stages)):
            # compress copies its input, so the cached model stays as it was
            m, rep = compress(m, [stages[k].as_dict()], self.tokenizer, calib=self.calib, profile=self.profile,
                              evaluate=False, float_bytes=self.float_bytes, seed=self.seed)
            if k + 1 < len(stages):
                self._models[self._key(stages[: k + 1])] = (m, rep.final.bytes)
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
        if known == len(stages):  # the whole recipe was a prefix of an earlier one
            return m, self._models[self._key(stages)][1], 0
        return m, rep.final.bytes, len(stages) - known
