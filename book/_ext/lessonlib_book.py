"""Sphinx extension of the lessonlib book.

* writes the landing page (book/index.md's placeholder): the learning path (docs/LEARNING_PATH.md) when it
  exists, otherwise the curriculum table of README.md with every chapter linked; then the tables of
  contents, chapters by glob (a new notebooks/NN_*.ipynb appears without editing anything);
* injects a "run it live" note under the title of every chapter (the notebooks themselves stay untouched);
* replaces the text stand-in of an ipywidgets output ("interactive(children=...)") with a pointer to the
  live lab: the book is static and loads no widget JavaScript;
* copies MathJax 3 (the JavaScript and its fonts, from the installed django-static-mathjax package) into
  the book, so the maths renders offline;
* renders a chapter with the outputs of the executed copy that `make test` left in build/executed/
  (tools/nbexec.py) when that copy ran exactly these code cells, with this library and ledger, under this
  profile (the markdown is today's), so CI executes every chapter once; a chapter without such a copy is
  executed here (MyST-NB, cached). BOOK_REUSE=0 turns it off.
"""
from __future__ import annotations

import html
import json
import re
import os
import shutil
import sys
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx

PLACEHOLDER = "<!-- lessonlib:landing -->"


def _root(app: Sphinx) -> Path:
    return Path(app.srcdir)


def _chapters(app: Sphinx) -> list[str]:
    """Docnames of the chapters that this build includes, in order."""
    return sorted(d for d in app.env.found_docs if re.match(r"notebooks/\d\d_", d))


def _title_of(path: Path) -> str:
    try:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                for line in "".join(cell["source"]).splitlines():
                    if line.startswith("# "):
                        return line[2:].strip()
    except (OSError, ValueError, KeyError):
        pass
    return path.stem


def curriculum_table(root: Path, chapters: list[str]) -> str:
    """README's curriculum table with each chapter name linked; chapters missing from it are appended."""
    text = (root / "README.md").read_text()
    m = re.search(r"^## The curriculum\n(.*?)(?=^## )", text, flags=re.S | re.M)
    rows = [ln for ln in (m.group(1).splitlines() if m else []) if ln.startswith("|")]
    if not rows:
        rows = ["| notebook | what it teaches | graded |", "|---|---|---|"]
    stems = {Path(d).name: d for d in chapters}
    out, seen = [], set()
    for ln in rows:
        cm = re.match(r"\|\s*`(\d\d_[A-Za-z0-9_]+)`", ln)
        if cm:
            stem = cm.group(1)
            if stem not in stems:
                continue                       # not in this build (BOOK_CHAPTERS) or not a notebook
            seen.add(stem)
            ln = ln.replace(f"`{stem}`", f"[{stem}](../{stems[stem]}.ipynb)", 1)
        out.append(ln)
    for stem, doc in stems.items():
        if stem not in seen:
            out.append(f"| [{stem}](../{doc}.ipynb) | {_title_of(root / (doc + '.ipynb'))} | |")
    return "\n".join(out)


def landing(app: Sphinx) -> str:
    root, chapters = _root(app), _chapters(app)
    parts = []
    if (root / "docs" / "LEARNING_PATH.md").exists():
        parts.append("```{include} ../docs/LEARNING_PATH.md\n:relative-docs: ../\n:relative-images:\n"
                     ":heading-offset: 1\n```\n")
    else:
        parts.append("## The chapters\n\n" + curriculum_table(root, chapters) + "\n")
    toc = ["```{toctree}\n:caption: Chapters\n:maxdepth: 1\n:glob:\n:hidden:\n\n/notebooks/[0-9][0-9]_*\n```\n"]
    ref = ["/reports/claims", "/docs/INSTRUCTORS"]
    if "docs/CHAPTERS" in app.env.found_docs:
        ref.insert(0, "/docs/CHAPTERS")
    if "docs/LEARNING_PATH" in app.env.found_docs:
        ref.insert(0, "/docs/LEARNING_PATH")
    toc.append("```{toctree}\n:caption: Reference\n:maxdepth: 1\n\n" + "\n".join(ref) + "\n```\n")
    return "\n".join(parts + toc)


def _nbexec(app: Sphinx):  # noqa: ANN202 - the module tools/nbexec.py (standard library only)
    tools = str(_root(app) / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import nbexec
    return nbexec


def reuse_executed(app: Sphinx, docname: str, source: list[str]) -> None:
    """Swap a chapter's source for its executed copy from `make test`, execution off, when it still matches."""
    if os.environ.get("BOOK_REUSE", "1") == "0" or not re.match(r"notebooks/\d\d_", docname):
        return
    nbexec = _nbexec(app)
    if not hasattr(app, "_lessonlib_inputs"):
        app._lessonlib_inputs = nbexec.inputs_sha(_root(app))
        app._lessonlib_reused = {}
    path = _root(app) / (docname + ".ipynb")
    profile = os.environ.get("LESSONLIB_PROFILE", "ci")
    copy = nbexec.executed_copy(path, profile, root=_root(app), inputs=app._lessonlib_inputs)
    app._lessonlib_reused[docname] = copy is not None
    if copy is None:
        return
    nb = nbexec.with_outputs(json.loads(source[0]), json.loads(copy.read_text(encoding="utf-8")))
    nb.setdefault("metadata", {}).setdefault("mystnb", {})["execution_mode"] = "off"
    source[0] = json.dumps(nb)


def report_reuse(app: Sphinx, exc: Exception | None) -> None:
    done = getattr(app, "_lessonlib_reused", {})
    if exc is None and done:
        reused = sorted(d.split("/")[-1][:2] for d, r in done.items() if r)
        ran = sorted(d.split("/")[-1][:2] for d, r in done.items() if not r)
        print(f"book: {len(reused)} chapters rendered from make test's executed copies (build/executed)"
              f"{': ' + ' '.join(reused) if reused else ''}; {len(ran)} executed by the book build"
              f"{' (or read from its cache): ' + ' '.join(ran) if ran else ''}")


def on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == app.config.root_doc and PLACEHOLDER in source[0]:
        source[0] = source[0].replace(PLACEHOLDER, landing(app))
    reuse_executed(app, docname, source)


def _run_live_note(docname: str) -> nodes.Element:
    note = nodes.admonition(classes=["note", "run-live"])
    note += nodes.title(text="Run this chapter live")
    p = nodes.paragraph()
    p += nodes.Text("This page was executed once, with the small ")
    p += nodes.literal(text="LESSONLIB_PROFILE=ci")
    p += nodes.Text(" sizes, so its numbers are from a quick run. To change the code, move the widgets and "
                    "see the numbers at the lab sizes, clone the repository and run ")
    p += nodes.literal(text="make lab")
    p += nodes.Text(" (it installs everything, prepares the embedded model and opens JupyterLab), then open ")
    p += nodes.literal(text=docname + ".ipynb")
    p += nodes.Text(". Everything runs offline on a CPU.")
    note += p
    return note


def on_doctree_read(app: Sphinx, doctree: nodes.document) -> None:
    docname = app.env.docname
    if not re.match(r"notebooks/\d\d_", docname):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is not None:
        title = next(iter(section.findall(nodes.title)), None)
        section.insert(section.index(title) + 1 if title is not None else 0, _run_live_note(docname))
    state = _widget_state(app, docname)
    for raw in list(doctree.findall(nodes.raw)):
        m = WIDGET_VIEW.search(raw.astext())
        if m:
            raw.replace_self(widget_snapshot(state, m.group(1)))
    for lit in list(doctree.findall(nodes.literal_block)):
        if lit.astext().startswith("interactive(children="):
            lit.parent.remove(lit)             # the text stand-in; the snapshot above replaces it


WIDGET_VIEW = re.compile(r'application/vnd\.jupyter\.widget-view\+json">\s*\{[^}]*"model_id":\s*"([0-9a-f]+)"')


def _widget_state(app: Sphinx, docname: str) -> dict:
    """model_id -> model of the widgets that MyST-NB saved with the executed notebook."""
    files = getattr(app.env, "nb_metadata", {}).get(docname, {}).get("js_files", {})
    body = files.get("ipywidgets_state", (None, {}))[1].get("body")
    try:
        return json.loads(body)["state"] if body else {}
    except (ValueError, KeyError):
        return {}


def _descendants(state: dict, model_id: str) -> list[dict]:
    """The model and every widget below it (children, depth first)."""
    out, todo = [], [model_id]
    while todo:
        model = state.get(todo.pop(0))
        if model is None:
            continue
        out.append(model)
        kids = model.get("state", {}).get("children", [])
        todo += [k.removeprefix("IPY_MODEL_") for k in kids if isinstance(k, str)]
    return out


def widget_snapshot(state: dict, model_id: str) -> nodes.Element:
    """A static picture of a widget: its controls at their initial values and what its output showed.

    Widgets without an output (progress bars) leave nothing; the live widget needs `make lab`."""
    models = _descendants(state, model_id)
    outputs = [o for m in models if m.get("model_name") == "OutputModel" for o in m["state"].get("outputs", [])]
    if not outputs:
        return nodes.container()
    controls = []
    for m in models:
        st = m.get("state", {})
        if m.get("model_name") in ("OutputModel", "LabelModel", "HTMLModel"):
            continue
        labels, index = st.get("_options_labels"), st.get("index")
        if labels and isinstance(index, int) and 0 <= index < len(labels):
            controls.append(f"{st.get('description') or '?'} = {labels[index]}")
        elif "value" in st:
            controls.append(f"{st.get('description') or '?'} = {st['value']}")
    parts = ['<div class="widget-snapshot"><p class="widget-snapshot-caption">Interactive widget, shown at its '
             'starting values (' + html.escape(", ".join(controls)) + '). Run the chapter live '
             '(<code>make lab</code>) to move its controls.</p>']
    for o in outputs:
        data = o.get("data", {})
        if "image/png" in data:
            parts.append(f'<img alt="widget output" src="data:image/png;base64,{data["image/png"].strip()}"/>')
        elif "text/html" in data:
            parts.append("".join(data["text/html"]))
        elif "text/plain" in data:
            parts.append(f'<pre>{html.escape("".join(data["text/plain"]))}</pre>')
        elif o.get("output_type") == "stream":
            parts.append(f'<pre>{html.escape("".join(o.get("text", "")))}</pre>')
        elif o.get("output_type") == "error":
            parts.append(f'<pre class="output traceback">{html.escape(o.get("ename", ""))}: '
                         f'{html.escape(o.get("evalue", ""))}</pre>')
    parts.append("</div>")
    return nodes.raw("", "\n".join(parts), format="html")


def copy_mathjax(app: Sphinx) -> None:
    """MathJax 3.2.2 into build/book/mathjax_static/mathjax: the component, TeX extensions, CHTML fonts."""
    import mathjax  # django-static-mathjax

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dest = Path(app.outdir).parent / "mathjax_static" / "mathjax"
    if not (dest / "tex-mml-chtml.js").exists():
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(es5 / "tex-mml-chtml.js", dest / "tex-mml-chtml.js")
        for sub in ("input/tex/extensions", "output/chtml/fonts/woff-v2"):
            shutil.copytree(es5 / sub, dest / sub, dirs_exist_ok=True)
    app.config.html_static_path.append(str(dest.parent))


def write_redirect(app: Sphinx, exc: Exception | None) -> None:
    """build/book/html/index.html -> the landing page (the root document lives at book/index)."""
    if exc is None and app.builder.format == "html":
        target = app.config.root_doc + ".html"
        (Path(app.outdir) / "index.html").write_text(
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={target}">'
            f'<title>lessonlib</title></head><body><a href="{target}">lessonlib: the course</a></body></html>\n')


def setup(app: Sphinx) -> dict:
    app.connect("build-finished", write_redirect)
    app.connect("build-finished", report_reuse)
    app.connect("builder-inited", copy_mathjax)
    app.connect("source-read", on_source_read)
    app.connect("doctree-read", on_doctree_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
