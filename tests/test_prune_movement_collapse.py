"""The movement task flags a classifier that collapsed to one class (issue 16: every movement run of ledger C22
sat exactly at the majority share), and C22's verdict does not call a collapsed run a measurement."""
from __future__ import annotations

import pytest
import torch

from lessonlib.claims.exp_prune import verdict_c22
from lessonlib.prune.movement_task import is_collapsed, majority_share


def test_majority_share_literal():
    assert majority_share(torch.tensor([0, 1, 1, 1])) == 0.75
    assert majority_share(torch.tensor([1, 0])) == 0.5
    with pytest.raises(ValueError):
        majority_share(torch.tensor([], dtype=torch.long))


def test_is_collapsed_at_the_majority_share_only():
    assert is_collapsed(0.548, 0.548) and is_collapsed(0.473, 0.548)   # one class, either one
    assert not is_collapsed(0.732, 0.548)
    with pytest.raises(ValueError, match="majority=0"):
        is_collapsed(0.5, 0.0)


def test_c22_verdict_names_a_collapse():
    m = {"majority": 0.548, "movement_rel_loss_50": 0.23, "movement_rel_loss_70": 0.23,
         "movement_collapsed_50": True, "movement_collapsed_70": True}
    v = verdict_c22(m)
    assert "collapsed" in str(v).lower()
    ok = dict(m, movement_collapsed_50=False, movement_collapsed_70=False, movement_rel_loss_50=0.01,
              movement_rel_loss_70=0.015)
    assert "collapsed" not in str(verdict_c22(ok)).lower()
