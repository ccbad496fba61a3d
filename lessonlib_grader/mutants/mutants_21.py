"""Wrong answers a student might hand in for notebook 21's exercise (each must score 0)."""
from __future__ import annotations

from . import mutant


def _raise(candidates):
    name, size, _ = min(candidates, key=lambda c: c[1])
    raise ValueError(f"nothing fits; the smallest is {name!r} with {size} bytes")


@mutant("q21_1", "returns the smallest candidate that fits, ignoring perplexity")
def smallest(candidates, budget_bytes):
    fits = [c for c in candidates if c[1] <= budget_bytes]
    if not fits:
        _raise(candidates)
    return min(fits, key=lambda c: c[1])[0]


@mutant("q21_1", "forgets the budget: the best perplexity overall")
def no_budget(candidates, budget_bytes):
    return min(candidates, key=lambda c: c[2])[0]


@mutant("q21_1", "treats the budget as strict (bytes < budget)")
def strict(candidates, budget_bytes):
    fits = [c for c in candidates if c[1] < budget_bytes]
    if not fits:
        _raise(candidates)
    return min(fits, key=lambda c: c[2])[0]


@mutant("q21_1", "breaks perplexity ties by the later row instead of the smaller model")
def tie_later(candidates, budget_bytes):
    fits = [(c[2], -i, c[0]) for i, c in enumerate(candidates) if c[1] <= budget_bytes]
    if not fits:
        _raise(candidates)
    return min(fits)[2]


@mutant("q21_1", "returns None when nothing fits instead of raising")
def returns_none(candidates, budget_bytes):
    fits = [(c[2], c[1], i, c[0]) for i, c in enumerate(candidates) if c[1] <= budget_bytes]
    return min(fits)[3] if fits else None


@mutant("q21_1", "maximises perplexity (the worst model that fits)")
def worst(candidates, budget_bytes):
    fits = [(c[2], -c[1], c[0]) for c in candidates if c[1] <= budget_bytes]
    if not fits:
        _raise(candidates)
    return max(fits)[2]


@mutant("q21_2", "counts only the distillation (70B -> 7B, both fp16)")
def only_distill():
    return 10.0


@mutant("q21_2", "counts only the quantization (fp16 -> INT4)")
def only_quant():
    return 4.0


@mutant("q21_2", "takes fp32 for the teacher (4 bytes per weight)")
def fp32_teacher():
    return 70e9 * 4 / (7e9 * 0.5)


@mutant("q21_3", "answers A (equal bytes, equal quality)")
def joint_a():
    return "A"


@mutant("q21_3", "answers C (only with fine-tuning)")
def joint_c():
    return "C"


@mutant("q21_3", "answers D (when the steps commute)")
def joint_d():
    return "D"


@mutant("q21_4", "uses the bitmask's threshold 1/b")
def concept_q21_4_0():
    return 0.25


@mutant("q21_4", "compares the index alone with the dense code: 2 (1 - s) < 0.5")
def concept_q21_4_1():
    return 0.75


@mutant("q21_4", "counts a 32-bit index (int32) instead of 16-bit")
def concept_q21_4_2():
    return 0.8888888888888888


@mutant("q21_5", "answers A (fewer bits, faster)")
def concept_q21_5_3():
    return 'A'


@mutant("q21_5", "answers B (zeros are skipped)")
def concept_q21_5_4():
    return 'B'


@mutant("q21_5", "answers D (smaller file, faster)")
def concept_q21_5_5():
    return 'D'
