"""Committed notebooks are exactly what the nbstripout clean filter makes of them (issue 14).

`make install` / `make lab` configure ``nbstripout --keep-id`` as git's clean filter for ``*.ipynb``. If a
notebook is stored in any other form (outputs, execution counts, another key order or indentation), a fresh
clone with the filter shows it as modified before anyone touched it. This test takes what git stores (the
index: what the next commit holds; outside a git checkout, the files), runs nbstripout once on all of them, and
requires each stored notebook to be byte-identical to the filter's output. A learner's run notebook with
outputs in the working copy does not fail it: the filter strips those when they are staged.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stored_notebooks() -> dict[str, bytes]:
    """``{path: bytes}`` of every tracked ``*.ipynb`` as the git index holds it (the files without git)."""
    inside = shutil.which("git") and subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, text=True).stdout.strip() == "true"
    if not inside:
        return {os.path.relpath(p, ROOT): open(p, "rb").read()
                for p in sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))}
    listing = subprocess.run(["git", "ls-files", "-s", "-z", "--", "*.ipynb"], cwd=ROOT, check=True,
                             capture_output=True).stdout.decode().split("\0")
    entries = [ln.split("\t", 1) for ln in listing if ln]  # "mode sha stage\tpath"
    shas = [meta.split()[1] for meta, _ in entries]
    out = subprocess.run(["git", "cat-file", "--batch"], cwd=ROOT, check=True, capture_output=True,
                         input=("\n".join(shas) + "\n").encode()).stdout
    blobs: dict[str, bytes] = {}
    pos = 0
    for (_, path), sha in zip(entries, shas):
        header_end = out.index(b"\n", pos)
        got_sha, _, size = out[pos:header_end].decode().split()
        assert got_sha == sha, (got_sha, sha)
        blobs[path] = out[header_end + 1:header_end + 1 + int(size)]
        pos = header_end + 1 + int(size) + 1  # the blob, then a newline
    return blobs


def _not_canonical(notebooks: dict[str, bytes], workdir: str) -> list[str]:
    """Names whose bytes differ from ``nbstripout --keep-id -t`` of them (one nbstripout process for all)."""
    files = []
    for i, (name, data) in enumerate(notebooks.items()):
        p = os.path.join(workdir, f"{i:03d}.ipynb")
        with open(p, "wb") as f:
            f.write(data)
        files.append(p)
    # cwd outside any repository: nbstripout reads no clone's extra-keys settings, as in a fresh clone
    r = subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id", "-t", *files], cwd=workdir,
                       capture_output=True, env=dict(os.environ, GIT_CEILING_DIRECTORIES=workdir))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    # nbformat writes each notebook as indented JSON ending in a "}" line of its own: split there
    docs = [d + b"}\n" for d in re.split(rb"(?m)^}\n", r.stdout)[:-1]]
    assert len(docs) == len(files), f"nbstripout printed {len(docs)} notebooks for {len(files)}"
    return [name for (name, data), doc in zip(notebooks.items(), docs) if data != doc]


def _variants(clean: bytes) -> dict[str, bytes]:
    """A stored notebook, and three forms of it that the filter would change: an output, an execution count,
    its top-level keys in another order."""
    nb = json.loads(clean)
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["ran\n"]}]
    with_output = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    code["outputs"] = []
    code["execution_count"] = 3
    with_count = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    code["execution_count"] = None
    reordered = json.dumps(dict(reversed(list(nb.items()))), indent=1, ensure_ascii=False).encode() + b"\n"
    return {"(clean)": clean, "(output)": with_output, "(count)": with_count, "(reordered)": reordered}


@pytest.fixture(scope="module")
def flagged(tmp_path_factory) -> tuple[dict[str, bytes], list[str]]:
    """The stored notebooks plus the variants of the first, and which of them nbstripout would change."""
    stored = _stored_notebooks()
    allnb = {**stored, **_variants(next(iter(stored.values())))}
    return stored, _not_canonical(allnb, str(tmp_path_factory.mktemp("nbstripout")))


def test_committed_notebooks_are_what_the_clean_filter_writes(flagged):
    stored, bad = flagged
    assert len(stored) >= 20 and all(p.endswith(".ipynb") for p in stored)
    bad = [b for b in bad if b in stored]
    assert not bad, (f"{bad} are not stored in nbstripout's form: a fresh clone shows them modified. Re-stage "
                     f"them through the filter (`make git-filter`, then `git add --renormalize {' '.join(bad)}`)")


def test_the_check_catches_outputs_counts_and_another_layout(flagged):
    """The same check flags a notebook with an output, one with an execution count and one with its keys in
    another order, and passes the untouched one."""
    stored, bad = flagged
    assert [b for b in bad if b not in stored] == ["(output)", "(count)", "(reordered)"]
