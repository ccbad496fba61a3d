"""Single-state rANS of notebook 19: the hand-computed example, exact round trips, bad input."""
import random

import pytest

from lessonlib.coding.tiny_rans import rans_tiny_decode, rans_tiny_encode


def test_worked_example_by_hand():
    # freqs [3, 1], L = M = 4, base 2 (states in [4, 8)); see the module docstring for every step
    assert rans_tiny_encode([0, 0, 1, 0], [3, 1], 4, 2) == (5, [1, 0, 1])
    assert rans_tiny_decode(5, [1, 0, 1], 4, [3, 1], 4, 2) == [0, 0, 1, 0]


def test_round_trip_and_state_interval():
    rng = random.Random(0)
    for _ in range(300):
        k = rng.randint(1, 6)
        f = [rng.randint(1, 12) for _ in range(k)]
        L, b = sum(f) * rng.choice([1, 2, 8]), rng.choice([2, 3, 16, 256])
        msg = [rng.randrange(k) for _ in range(rng.randint(0, 60))]
        x, d = rans_tiny_encode(msg, f, L, b)
        assert L <= x < b * L and all(0 <= v < b for v in d)
        assert rans_tiny_decode(x, d, len(msg), f, L, b) == msg


def test_cost_close_to_information_content():
    # a long message costs about sum log2(M / f_s) bits: digits plus the final state's log2(b L) bits
    import math
    rng = random.Random(1)
    f = [13, 2, 1]
    msg = [rng.choices(range(3), weights=f)[0] for _ in range(4000)]
    x, d = rans_tiny_encode(msg, f, 16 * 16, 2)
    info = sum(math.log2(16 / f[s]) for s in msg)
    assert abs(len(d) - info) < 0.01 * info + 16


@pytest.mark.parametrize("args", [([0], [], None, 2), ([0], [1, 0], None, 2), ([0], [1, 1], 3, 2),
                                  ([0], [1, 1], None, 1), ([2], [1, 1], None, 2)])
def test_bad_input_raises(args):
    with pytest.raises((ValueError, TypeError)):
        rans_tiny_encode(*args)


def test_corrupt_streams_raise():
    with pytest.raises(ValueError):
        rans_tiny_decode(5, [1, 1, 0, 1], 4, [3, 1], 4, 2)  # a digit left over
    with pytest.raises(ValueError):
        rans_tiny_decode(5, [0, 1], 4, [3, 1], 4, 2)  # too few digits
    with pytest.raises(ValueError):
        rans_tiny_decode(9, [1, 0, 1], 4, [3, 1], 4, 2)  # state outside [L, 2L)
