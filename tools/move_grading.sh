#!/usr/bin/env bash
# Move the grading machinery out of the teaching package: lessonlib/grading/* -> lessonlib_grader/ (issue 18).
#
# Idempotent; run from the repository root after merging a branch that still adds files under
# lessonlib/grading/ (new specs_NN.py, mutants/mutants_NN.py):
#
#     bash tools/move_grading.sh && git status
#
# What it does:
#   1. every file under lessonlib/grading/ except the learner's shim (__init__.py, which stays: notebooks
#      import `from lessonlib.grading import check`) is `git mv`-ed to the same place under lessonlib_grader/;
#   2. imports in lessonlib_grader/ are rewritten for the new place: `from ..x` (a lessonlib module, seen from
#      lessonlib/grading/) becomes `from lessonlib.x`; in lessonlib_grader/mutants/ `from ...x` likewise;
#   3. `lessonlib.grading.<module>` becomes `lessonlib_grader.<module>` in lessonlib_grader/, tests/ and tools/
#      (the learner's `from lessonlib.grading import check` and `use_exercise_files` stay as they are).
set -euo pipefail
cd "$(dirname "$0")/.."
src=lessonlib/grading
dst=lessonlib_grader
mkdir -p "$dst/mutants"

if [ -d "$src" ]; then
  while IFS= read -r f; do
    rel=${f#"$src"/}
    [ "$rel" = "__init__.py" ] && [ -f "$dst/__init__.py" ] && grep -q "learner's side" "$f" && continue
    mkdir -p "$(dirname "$dst/$rel")"
    if git ls-files --error-unmatch "$f" >/dev/null 2>&1; then
      git mv -f "$f" "$dst/$rel"
    else
      mv -f "$f" "$dst/$rel" && git add "$dst/$rel"
    fi
    echo "moved $f -> $dst/$rel"
  done < <(find "$src" -type f -name '*.py' ! -path '*/__pycache__/*' | sort)
  find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +
  find "$src" -type d -empty -delete
fi

# 2. relative imports that reached lessonlib from lessonlib/grading/ (and its mutants/ folder)
for f in "$dst"/*.py; do
  sed -i -E 's/^(\s*)from \.\.([A-Za-z_])/\1from lessonlib.\2/; s/^(\s*)from \.\. import /\1from lessonlib import /' "$f"
done
for f in "$dst"/mutants/*.py; do
  [ -e "$f" ] || continue
  sed -i -E 's/^(\s*)from \.\.\.([A-Za-z_])/\1from lessonlib.\2/; s/^(\s*)from \.\.\. import /\1from lessonlib import /' "$f"
done

# 3. absolute names of the grader's modules (not the learner's check / use_exercise_files)
files=$(grep -rlE 'lessonlib\.grading|lessonlib/grading' "$dst" tests tools docs --include='*.py' --include='*.md' \
        2>/dev/null | grep -v 'tools/move_grading.sh' || true)
for f in $files; do
  sed -i -E '/from lessonlib\.grading import (check|use_exercise_files)([^,_a-z]|$)|lessonlib\.grading\.check\(/!{
    s/lessonlib\.grading([.:` ]|$)/lessonlib_grader\1/g
    s#lessonlib/grading/#lessonlib_grader/#g
    s#lessonlib/grading([` ]|$)#lessonlib_grader\1#g
  }' "$f"
  sed -i -E 's/^(\s*)from lessonlib import grading$/\1import lessonlib_grader as grading/' "$f"
done
git add -- "$dst"
echo "grading machinery is in $dst/; lessonlib/grading/__init__.py is the learner's check()"
