"""The otter-grader flow end to end, offline, no Docker (``make otter-check``; run by .ci/run).

For each chapter given (default 01 and 03):

1. ``otter assign`` on the master notebook built from lessonlib's specs (lessonlib_grader.otter): a student
   notebook and an autograder zip; otter runs every test against the reference solutions first;
2. the student notebook is scanned for reference answers (the release scan of ``lessonlib exercises
   release``): none may be in it;
3. ``otter run`` grades three submissions: the reference solutions (must score full marks), a realistic
   wrong answer (one edit of the reference; must score less than full marks and more than 0: partial
   credit), and the untouched student notebook (must score 0);
4. the scores go to ``OUT/grades.csv`` (one row per submission).

Exit code 0 when every expectation holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import nbformat

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lessonlib_grader.otter import build_assignment, grade_submission  # noqa: E402
from lessonlib_grader.registry import notebooks  # noqa: E402
from lessonlib_grader.release import scan_release  # noqa: E402

# One realistic wrong answer per chapter: (exact text in the reference, what a student writes instead).
WRONG = {
    "01": ("zeros = -wmin / scales", "zeros = -wmin / scales + 1  # off by one"),
    "03": ("U1[i, i:].unsqueeze(0)", "U1[i:, i].unsqueeze(0)  # the column, not the row"),
}


def _wrong_submission(solution: str, number: str, out: str) -> str:
    old, new = WRONG[number]
    nb = nbformat.read(solution, as_version=4)
    hits = 0
    for c in nb.cells:
        if c.cell_type == "code" and old in c.source:
            c.source = c.source.replace(old, new, 1)
            hits += 1
            break
    if not hits:
        raise SystemExit(f"otter_flow: the reference of chapter {number} no longer contains {old!r}; "
                         "update WRONG in tools/otter_flow.py")
    nbformat.write(nb, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chapters", nargs="*", default=sorted(WRONG))
    p.add_argument("--out", default="build/otter")
    a = p.parse_args(argv)
    by_number = {nb[:2]: nb for nb in notebooks()}
    rows, bad = [], []
    for number in a.chapters:
        if number not in WRONG or number not in by_number:
            print(f"chapter {number!r}: choose from {sorted(set(WRONG) & set(by_number))}", file=sys.stderr)
            return 2
        notebook, out = by_number[number], os.path.join(a.out, by_number[number])
        t0 = time.perf_counter()
        paths = build_assignment(notebook, out)
        t_assign = time.perf_counter() - t0
        leaks = scan_release(os.path.dirname(paths["student"]))
        bad += [f"{notebook}: student notebook leaks {l}" for l in leaks]
        subs = {"reference": paths["solution"],
                "wrong": _wrong_submission(paths["solution"], number, os.path.join(out, "wrong.ipynb")),
                "unanswered": paths["student"]}
        for who, path in subs.items():
            t1 = time.perf_counter()
            r = grade_submission(path, paths["autograder"])
            dt = time.perf_counter() - t1
            rows.append({"chapter": notebook, "submission": who, "score": r["score"], "possible": r["possible"],
                         "seconds": round(dt, 1)})
            print(f"{notebook:<24} {who:<11} {r['score']:>6.2f} / {r['possible']:<6.2f} ({dt:.0f} s)")
            full = abs(r["score"] - r["possible"]) < 1e-6
            if who == "reference" and not full:
                bad.append(f"{notebook}: the reference solutions scored {r['score']} of {r['possible']}: "
                           + ", ".join(n for n, (s, m) in r["tests"].items() if s < m))
            if who == "wrong" and (full or r["score"] <= 0):
                bad.append(f"{notebook}: the wrong answer scored {r['score']} of {r['possible']} "
                           "(expected partial credit)")
            if who == "unanswered" and r["score"] != 0:
                bad.append(f"{notebook}: the untouched student notebook scored {r['score']}")
        print(f"{notebook:<24} otter assign {t_assign:.0f} s")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "grades.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["chapter", "submission", "score", "possible", "seconds"])
        w.writeheader()
        w.writerows(rows)
    for b in bad:
        print(f"FAIL {b}", file=sys.stderr)
    print(f"otter flow: {len(rows)} submissions graded, {len(bad)} problems; {os.path.join(a.out, 'grades.csv')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
