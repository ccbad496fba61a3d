"""Drive every widget chapter in JupyterLab with headless Chromium (issue 21).

JupyterLab starts as `make lab` starts it (notebooks/ as the root, the project's JUPYTER_* dirs, headless, a
fixed port and token, --allow-root as root), with a throw-away user-settings dir: autosave off, so the
tracked notebooks never receive outputs, and no windowing, so every cell stays in the page. For each
notebook whose code uses ipywidgets or interact(), in a fresh workspace: wait for a connected idle kernel,
Run All, then move each widget control (sliders by keyboard arrows, dropdowns to another option, checkboxes
toggled, an option of a multi-select (SelectMultiple) added or removed; interact_manual's button pressed)
and fail unless the widget's output changes and no error (a traceback) appears anywhere. Kernels are shut
down afterwards.

Self-test: a copy of a widget notebook gets, as its last cell, an exercise stub that shadows a library
function its widget calls (what broke notebook 01: the widget draws before Run All reaches the stub and
raises once it is moved); the same check must FAIL on it, or this test fails.
Two notebooks are driven at once by default (--jobs; one kernel each on two cores), slowest first.
Screenshots: build/screenshots/lab/.   Usage: python tools/browser_lab.py --python .venv/bin/python
"""
from __future__ import annotations

import argparse
import ast
import builtins
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_common import ROOT, SCREENSHOTS, Report, browser  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
TOKEN = "lessonlib-browser-test"
WIDGET_RE = re.compile(r"\bipywidgets\b|\binteract(?:ive)?\s*\(")
TRACEBACK = "Traceback (most recent call last)"


def code_of(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def widget_notebooks() -> list[Path]:
    """Every chapter whose code uses ipywidgets or interact()."""
    return [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
            if any(WIDGET_RE.search(s) for s in code_of(json.loads(p.read_text())))]


# ---------------------------------------------------------------------------------------------- self-test
def shadow_candidate(nb: dict) -> tuple[int, str] | None:
    """(index of the widget cell, an imported lowercase name the widget's function calls), or None."""
    imported: set[str] = set()
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        try:
            tree = ast.parse("\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported |= {a.asname or a.name for a in node.names}
        m = re.search(r"interact(?:ive)?\s*\(\s*([A-Za-z_]\w*)", src)
        if not m:
            continue
        funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        fn = funcs.get(m.group(1))
        if fn is None:
            continue
        called = [n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        for name in called:
            if name in imported and not hasattr(builtins, name) and name[:1].islower():
                return i, name
    return None


def make_broken_copy(widget_nbs: list[Path]) -> tuple[Path, str] | None:
    """notebooks/_broken_<chapter>.ipynb: an exercise stub shadows a function the widget calls."""
    for path in sorted(widget_nbs, key=lambda p: (not p.name.startswith("01_"), p.name)):
        nb = json.loads(path.read_text())
        found = shadow_candidate(nb)
        if not found:
            continue
        idx, name = found
        stub = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                "source": [f"def {name}(*args, **kwargs):   # exercise stub, not yet written by the learner\n",
                           '    raise NotImplementedError("your code here")\n']}
        nb["cells"].append(stub)   # after the widget, as an exercise cell: Run All breaks the live widget
        out = NOTEBOOKS / f"_broken_{path.name}"
        out.write_text(json.dumps(nb, indent=1))
        return out, name
    return None


# ------------------------------------------------------------------------------------------------ server
class Lab:
    def __init__(self, python: str, port: int) -> None:
        self.python, self.port = python, port
        self.base = f"http://127.0.0.1:{port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="lessonlib-lab-"))
        settings = self.tmp / "user-settings"
        for plugin, value in (("@jupyterlab/docmanager-extension/plugin", {"autosave": False}),
                              ("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"}),
                              ("@jupyterlab/apputils-extension/notification",
                               {"checkForUpdates": False, "fetchNews": "false"})):
            f = settings / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        env = dict(os.environ)
        env.pop("MPLBACKEND", None)             # the kernel's own inline backend, as in `make lab`
        env.setdefault("LESSONLIB_PROFILE", "ci")
        for var, sub in (("JUPYTER_CONFIG_DIR", ".jupyter/config"), ("JUPYTER_DATA_DIR", ".jupyter/data"),
                         ("JUPYTER_RUNTIME_DIR", ".jupyter/runtime"), ("IPYTHONDIR", ".ipython")):
            env.setdefault(var, str(ROOT / sub))
        cmd = [python, "-m", "jupyterlab", f"--notebook-dir={NOTEBOOKS}", "--no-browser", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", "--ServerApp.ip=127.0.0.1",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = open(self.tmp / "lab.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"JupyterLab exited: {(self.tmp / 'lab.log').read_text()[-2000:]}")
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("JupyterLab did not answer within 120 s")

    def api(self, method: str, path: str) -> object:
        req = urllib.request.Request(self.base + path, method=method, headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def sessions(self, name: str) -> list[dict]:
        # the exact file name: _broken_01_x.ipynb must not match 01_x.ipynb (both may run at once)
        return [s for s in self.api("GET", "/api/sessions") if s["path"].rsplit("/", 1)[-1] == name]

    def shutdown_kernels(self) -> None:
        for s in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{s['id']}")

    def stop(self) -> None:
        try:
            self.shutdown_kernels()
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------- page
ERRORS_JS = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output'))
  .filter(e => !e.querySelector('.jp-OutputArea-output')).map(e => e.innerText || '').filter(t => t.includes('Traceback (most recent call last)')
     || /^\\w*(Error|Exception)\\b.*:/m.test(t) && /Traceback|most recent call|---->/.test(t))
  .map(t => t.slice(0, 400))"""

BUSY_JS = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputArea-prompt'))
  .some(p => (p.textContent || '').includes('*'))"""

# Every control inside an output area, with a stable index, its kind and the snapshot of the widget
# output it drives: the .widget-output of its interact() box, or all widget outputs of its cell.
CONTROLS_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const sel = '.widget-slider, .widget-hslider, .widget-dropdown, .widget-checkbox, .widget-select-multiple';
  const out = [];
  panel.querySelectorAll('.jp-OutputArea-output').forEach(area => {
    area.querySelectorAll(sel).forEach(c => {
      if (c.parentElement.closest(sel)) return;
      const i = out.length; c.setAttribute('data-lessonlib-control', String(i));
      const kind = c.matches('.widget-dropdown') ? 'dropdown' : c.matches('.widget-checkbox') ? 'checkbox'
                 : c.matches('.widget-select-multiple') ? 'multiselect' : 'slider';
      const label = ((c.querySelector('.widget-label') || {}).textContent || '').replace(/\\u200b/g, '').trim()
                    || (c.innerText || '').split('\\n')[0].trim() || kind + ' ' + i;
      out.push({i, kind, label});
    });
  });
  return out;
}"""

SNAPSHOT_JS = """(i) => {
  const c = document.querySelector(`[data-lessonlib-control="${i}"]`);
  const box = c.closest('.widget-interact') || c.closest('.jp-Cell');
  const outs = Array.from(box.querySelectorAll('.widget-output'));
  return outs.length ? outs.map(o => o.innerHTML).join('\\n') : null;
}"""

# interact_manual(): the output is recomputed only when its "Run Interact" button is pressed.
PRESS_RUN_JS = """(i) => {
  const box = document.querySelector(`[data-lessonlib-control="${i}"]`).closest('.widget-interact');
  const b = box && box.querySelector('button.jupyter-button, .widget-button');
  if (!b) return false;
  b.click();
  return true;
}"""

SLIDER_STATE_JS = """(i) => {
  const h = document.querySelector(`[data-lessonlib-control="${i}"] .noUi-handle`);
  return h ? ['aria-valuenow', 'aria-valuemin', 'aria-valuemax'].map(a => parseFloat(h.getAttribute(a))) : null;
}"""


# What counts as catching the broken widget: an error output or a dead control, not a crash of the test.
WIDGET_FAILURES = ("error output", "slider ", "dropdown ", "checkbox ", "multi-select ")


def brief(tb: str) -> str:
    """The exception line of a rendered traceback (e.g. 'NotImplementedError ... Traceback'), one line."""
    lines = [ln.strip() for ln in tb.splitlines() if ln.strip() and not set(ln.strip()) <= {"-"}]
    hit = next((ln for ln in lines if re.match(r"^\w*(Error|Exception)\b", ln)), lines[0] if lines else "")
    last = next((ln for ln in reversed(lines) if re.match(r"^\w*(Error|Exception)\b", ln)), "")
    return " ".join(hit.split())[:120] + (f" | {' '.join(last.split())[:120]}" if last and last != hit else "")


def wait_idle(lab: Lab, page, name: str, timeout: float) -> None:
    """Until the notebook's kernel is connected and idle and no cell is queued or running (2 s stable)."""
    deadline, stable = time.time() + timeout, 0
    while time.time() < deadline:
        ss = lab.sessions(name)
        k = ss[0]["kernel"] if ss else {}
        if k.get("execution_state") == "idle" and k.get("connections", 0) > 0 and not page.evaluate(BUSY_JS):
            stable += 1
            if stable >= 4:
                return
        else:
            stable = 0
        time.sleep(0.5)
    raise TimeoutError(f"kernel of {name} not idle within {timeout:.0f} s")


def move(page, ctl: dict, attempt: int) -> str:
    """Move a control once; attempt 1, 2, ... try other values (an output may not depend on every value,
    e.g. a group size at 16 bits), so the check fails only when no value changes the output."""
    loc = page.locator(f'[data-lessonlib-control="{ctl["i"]}"]')
    if ctl["kind"] == "slider":
        now, lo, hi = page.evaluate(SLIDER_STATE_JS, ctl["i"]) or (0.0, 0.0, 1.0)
        first = attempt != 1                        # attempts 0 and 2: one step; attempt 1: two steps the other way
        down = (now > lo) if first else not (now < hi)
        handle = loc.locator(".noUi-handle").first
        handle.focus()
        key = "ArrowLeft" if down else "ArrowRight"
        for _ in range(1 if first else 2):
            handle.press(key if first else ("ArrowRight" if down else "ArrowLeft"))
        return f"slider {ctl['label']!r} {key if first else 'the other way'}" + (" again" if attempt >= 2 else "")
    if ctl["kind"] == "dropdown":
        select = loc.locator("select")
        n = select.locator("option").count()
        cur = select.evaluate("s => s.selectedIndex")
        select.select_option(index=(cur + 1) % n)
        return f"dropdown {ctl['label']!r} option {(cur + 1) % n}"
    if ctl["kind"] == "multiselect":                # SelectMultiple: option `attempt` joins or leaves the selection
        select = loc.locator("select")
        n = select.locator("option").count()
        cur = set(select.evaluate("s => Array.from(s.selectedOptions).map(o => o.index)"))
        new = sorted(cur ^ {attempt % n}) or [(attempt + 1) % n]
        select.select_option(index=new)
        return f"multi-select {ctl['label']!r} selection {new}"
    loc.locator("input[type=checkbox]").click()
    return f"checkbox {ctl['label']!r} toggled"


def attempts(page, ctl: dict) -> int:
    if ctl["kind"] == "slider":
        return 3  # a third move from the new position: under load one move + Run was once not seen (21, session 28)
    if ctl["kind"] == "multiselect":
        return min(2, page.locator(f'[data-lessonlib-control="{ctl["i"]}"] select option').count())
    if ctl["kind"] == "dropdown":
        return max(1, page.locator(f'[data-lessonlib-control="{ctl["i"]}"] select option').count() - 1)
    return 1


def drive(lab: Lab, b, path: Path, shots: Path, timeout: float) -> list[str]:
    """Open, Run All, move every control; the problems found (empty: the widgets work)."""
    name, stem = path.name, path.stem
    problems: list[str] = []
    ctx = b.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        page.goto(f"{lab.base}/lab/workspaces/ws-{stem}/tree/{name}?reset&token={TOKEN}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
        wait_idle(lab, page, name, 120)
        page.locator('.lm-MenuBar-item:has-text("Run")').first.click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        time.sleep(2)
        wait_idle(lab, page, name, timeout)
        problems += [f"error output after Run All: {brief(e)}" for e in page.evaluate(ERRORS_JS)]
        controls = [] if problems else page.evaluate(CONTROLS_JS)   # broken already: no need to move
        if not controls and not problems:
            problems.append("no widget control (slider, dropdown, checkbox, multi-select) rendered after Run All")
        for n, ctl in enumerate(controls):
            cell = page.locator(f'[data-lessonlib-control="{ctl["i"]}"]').locator("xpath=ancestor::div[contains(@class,'jp-Cell ')][1]")
            cell.scroll_into_view_if_needed()
            before = page.evaluate(SNAPSHOT_JS, ctl["i"])
            if n == 0:
                cell.locator(".jp-Cell-outputArea").first.screenshot(path=str(shots / f"{stem}_before.png"))
            changed, tried = False, []
            for k in range(attempts(page, ctl)):
                tried.append(move(page, ctl, k))
                if page.evaluate(PRESS_RUN_JS, ctl["i"]):
                    tried[-1] += " + Run Interact"
                for settle in (True, False):           # poll; then once more after the kernel went idle
                    t_end = time.time() + 4
                    while time.time() < t_end and not changed:
                        time.sleep(0.5)
                        changed = page.evaluate(SNAPSHOT_JS, ctl["i"]) != before
                    if settle:
                        wait_idle(lab, page, name, 300)
                if changed:
                    break
            what = ", then ".join(tried)
            if before is None:
                problems.append(f"{what}: no widget output area found next to the control")
            elif not changed:
                problems.append(f"{what}: the widget's output did not change")
            if n == 0:
                cell.locator(".jp-Cell-outputArea").first.screenshot(path=str(shots / f"{stem}_after.png"))
        if controls:
            problems += sorted({f"error output after moving the widgets: {brief(e)}" for e in page.evaluate(ERRORS_JS)})
    except Exception as e:  # noqa: BLE001 - a notebook that cannot be driven fails, the run goes on
        problems.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        try:
            page.screenshot(path=str(shots / f"{stem}_page.png"))
        except Exception:  # noqa: BLE001
            pass
        for s in lab.sessions(name):
            lab.api("DELETE", f"/api/sessions/{s['id']}")
        ctx.close()
    return problems


def longest_first(paths: list[Path]) -> list[Path]:
    """Slowest notebooks first (reports/timings.json, ci), so two workers finish together."""
    try:
        rows = json.loads((ROOT / "reports" / "timings.json").read_text())["profiles"]["ci"]
    except (OSError, ValueError, KeyError):
        rows = {}
    return sorted(paths, key=lambda p: -float(rows.get(p.stem, {}).get("seconds", 60.0)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the course's Python")
    ap.add_argument("--port", type=int, default=8899)
    ap.add_argument("--only", nargs="*", help="chapter numbers to drive, e.g. 00 01 (default: every widget chapter)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds for Run All of one notebook")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("BROWSER_JOBS", "2")),
                    help="notebooks driven at once, each with its own kernel and browser (default 2: two cores)")
    ap.add_argument("--no-selftest", action="store_true", help="skip the deliberately broken copy")
    ap.add_argument("--selftest-only", action="store_true", help="only the deliberately broken copy")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs {args.jobs} must be at least 1")
    nbs = widget_notebooks()
    if args.only:
        nbs = [p for p in nbs if p.name[:2] in args.only]
    if args.selftest_only:
        nbs = []
    print("widget chapters:", " ".join(p.stem for p in nbs) or "none", f"({args.jobs} at a time)", flush=True)
    shots = SCREENSHOTS / "lab"
    shots.mkdir(parents=True, exist_ok=True)
    report = Report("lab widgets")
    broken = None if args.no_selftest else make_broken_copy(widget_notebooks())
    lab = Lab(args.python, free_port(args.port))
    todo: queue.Queue = queue.Queue()
    for path in longest_first(nbs):
        todo.put(path)
    if broken is not None:
        todo.put(broken[0])
    lock = threading.Lock()

    def judge(path: Path, found: list[str], seconds: float) -> None:
        with lock:                               # one report line (and its problems) at a time
            if broken is None or path != broken[0]:
                report.check(f"widgets of {path.stem}", found, seconds)
                return
            name = broken[1]
            print(f"     (self-test: the stub of {name}() made the check report: {found})")
            caught = [f for f in found if f.startswith(WIDGET_FAILURES)]
            report.check(f"self-test: {path.name} (stub shadows {name}) is caught", [] if caught else
                         [f"the deliberately broken widget was not reported as broken (found: {found})"], seconds)

    def worker() -> None:
        with browser() as b:                     # Playwright's sync API: one instance per thread
            while True:
                try:
                    path = todo.get_nowait()
                except queue.Empty:
                    return
                t = time.perf_counter()
                judge(path, drive(lab, b, path, shots, args.timeout), time.perf_counter() - t)

    try:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(args.jobs, todo.qsize()))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        driven = len(report.passed) + len(report.failed)
        if broken is None and not args.no_selftest:
            report.check("self-test", ["no widget notebook to break (no interact() of a function that "
                                       "calls an imported name)"])
        missing = len(nbs) + (broken is not None) - driven
        if missing > 0:
            report.check("every widget chapter driven", [f"{missing} notebook(s) not driven: a worker crashed"])
    finally:
        if report.failed:
            print("---- JupyterLab's log (last 40 lines) ----")
            print("\n".join((lab.tmp / "lab.log").read_text(errors="replace").splitlines()[-40:]))
        lab.stop()
        if broken is not None:
            broken[0].unlink(missing_ok=True)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
