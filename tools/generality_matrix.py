"""Print (or, with --write, put into README.md) the generality matrix from lessonlib.layout's support statement."""
from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lessonlib.layout import support_matrix_markdown  # noqa: E402

START, END = "<!-- generality-matrix:start -->\n", "<!-- generality-matrix:end -->"


def main() -> None:
    table = support_matrix_markdown()
    if "--write" not in sys.argv:
        print(table)
        return
    path = os.path.join(ROOT, "README.md")
    text = open(path, encoding="utf-8").read()
    if START not in text:
        raise SystemExit(f"README.md has no {START.strip()} marker; add the section first")
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: START + table + END, text, flags=re.S)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
