"""Shared helpers for the tables of tried bad inputs (tests/test_bad_inputs_*.py, issue 23).

A case is ``(id, call, exception type, needle)``: ``call()`` must raise exactly that type (or a subclass) from
lessonlib, and the message must contain ``needle``, the bad value as the user wrote it (or the path/layer
name), so every message names what was wrong.  ``OUTCOMES`` counts cases per outcome for the closing note.
"""
from __future__ import annotations

import functools

import pytest

OUTCOMES = {"clear error": 0, "documented answer": 0}


def cases(table: list[tuple]) -> list:
    """pytest params from ``(id, call, exc, needle)`` rows (the id becomes the test id)."""
    OUTCOMES["clear error"] += len(table)
    return [pytest.param(call, exc, needle, id=cid) for cid, call, exc, needle in table]


def answers(table: list[tuple]) -> list:
    """pytest params from ``(id, check)`` rows whose ``check()`` asserts a documented, tested answer."""
    OUTCOMES["documented answer"] += len(table)
    return [pytest.param(check, id=cid) for cid, check in table]


def check_case(call, exc, needle) -> None:
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    assert needle in msg, f"message {msg!r} does not name {needle!r}"
    assert len(msg) < 2000, "messages must stay bounded"


@functools.lru_cache(maxsize=None)
def tiny():
    from lessonlib.models import tiny_causal_lm
    return tiny_causal_lm()
