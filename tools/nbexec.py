"""Execute a notebook once and keep the executed copy: shared by `make test`, `make book` and `make timings`.

`make test` runs every chapter through :func:`run` (notebooks/conftest.py collects each .ipynb as its own
test file), which writes the executed notebook to ``build/executed/<stem>.ipynb`` with, in its metadata
``lessonlib``, the sha of its source cells (:func:`source_sha`), the sha of what else decides its outputs
(:func:`inputs_sha`: the ``lessonlib`` package and the ledger ``reports/claims.json`` it reads), the profile,
whether every cell ran, and each code cell's wall seconds. ``make book`` then renders that copy instead of
executing the chapter a second time, when :func:`executed_copy` finds one whose shas and profile still match.

The kernel is the course's Python (the notebook's ``python3`` kernelspec resolves to the running
interpreter) with ``LESSONLIB_PROFILE``, ``OMP_NUM_THREADS`` and matplotlib's inline backend, i.e. what a
learner gets in ``make lab``: figures become PNG outputs the book can show.

Only the standard library at import time (the book's own venv imports :func:`executed_copy`); nbclient and
nbformat are imported by the functions that execute.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import os
import re
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "build" / "executed"
INLINE = "module://matplotlib_inline.backend_inline"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _sha(path: str | os.PathLike, kinds: tuple[str, ...] | None) -> str:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    h = hashlib.sha256()
    for cell in nb.get("cells", []):
        if kinds is not None and cell.get("cell_type") not in kinds:
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        h.update(cell.get("cell_type", "").encode() + b"\0" + src.encode("utf-8") + b"\0")
    return h.hexdigest()


def source_sha(path: str | os.PathLike) -> str:
    """sha256 of a notebook's cell types and sources (outputs, ids and metadata excluded)."""
    return _sha(path, None)


def code_sha(path: str | os.PathLike) -> str:
    """sha256 of a notebook's code cells only: what its outputs depend on (a prose edit leaves it unchanged)."""
    return _sha(path, ("code",))


def inputs_sha(root: Path = ROOT) -> str:
    """sha256 over the files besides a notebook's own cells that decide its outputs: every file of the
    ``lessonlib`` package (code, recipes, resources) and ``reports/claims.json`` (the ledger it quotes)."""
    h = hashlib.sha256()
    files = sorted(p for p in (root / "lessonlib").rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix != ".pyc")
    files.append(root / "reports" / "claims.json")
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
        h.update(b"\0")
    return h.hexdigest()


def commit(root: Path = ROOT) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class Result:
    """What one execution gave: the executed notebook, wall seconds, seconds per code cell, the failure."""
    nb: object                                   # nbformat.NotebookNode with outputs
    seconds: float
    cell_seconds: dict[int, float] = field(default_factory=dict)   # cell index -> wall seconds
    failed_cell: int | None = None
    error: str = ""                              # the failing cell's source and traceback, ANSI-free
    cpu_seconds: float | None = None             # the kernel process's CPU time (user + system, with children)

    @property
    def ok(self) -> bool:
        return self.failed_cell is None and not self.error


HANG = "[timed out or kernel died] "  # prefix of a failure the executor, not the notebook, may have caused

def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` and its waited-for children (Linux ``/proc``), else None.

    With one thread this is what the work costs on an idle core, whatever else the machine runs: the runtime
    of a notebook measured on a busy machine, where its wall time is inflated by waiting for a core."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime (stat fields 14-17)
    return round(ticks / os.sysconf("SC_CLK_TCK"), 1)


def kernel_env(profile: str, threads: str = "1", mplbackend: str = INLINE) -> dict[str, str]:
    """This process's environment with what a chapter's kernel runs under."""
    env = dict(os.environ)
    env.update(LESSONLIB_PROFILE=profile, OMP_NUM_THREADS=str(threads), MPLBACKEND=mplbackend)
    return env


POLL_SLICE_S = 1.0  # longest single wait on a kernel channel (see sliced_get_msg)


def sliced_get_msg(get_msg, slice_s: float = POLL_SLICE_S, clock=time.monotonic):  # noqa: ANN001, ANN201
    """Wrap a kernel channel's async ``get_msg(timeout)`` so that no single wait is longer than ``slice_s``.

    Why: a cell of 02 and one of 07 (both widget cells) each took exactly the per-cell timeout (600.0 s) in one
    clean-clone run and then *succeeded*: their outputs were complete and no error was raised. That is pyzmq's
    asyncio poll missing the wake-up of an already-readable socket (ZMQ's notification fd is edge-triggered):
    ``zmq.asyncio`` ends a poll at its timeout with a real ``poll(0)``, which then finds the waiting reply, so
    a missed wake-up costs the whole timeout and is otherwise silent. Waiting in slices of ``slice_s`` bounds
    that cost to ``slice_s``; the overall ``timeout`` (None = forever) and ``queue.Empty`` at its end are kept.
    """
    import queue

    if not slice_s > 0:
        raise ValueError(f"slice_s={slice_s!r} must be a positive number of seconds")

    async def get(timeout: float | None = None):  # noqa: ANN202
        deadline = None if timeout is None else clock() + max(0.0, float(timeout))
        while True:
            left = None if deadline is None else max(0.0, deadline - clock())
            try:
                return await get_msg(timeout=slice_s if left is None else min(slice_s, left))
            except queue.Empty:
                if deadline is not None and clock() >= deadline:
                    raise

    get.sliced = True  # type: ignore[attr-defined]
    return get


def execute(path: str | os.PathLike, env: dict[str, str], timeout: int = 1800,
            kernel_name: str = "python3") -> Result:
    """Run every cell of ``path`` in a fresh kernel started with ``env``; never raises on a failing cell.

    ``timeout`` is per cell (seconds). The kernel is shut down before this returns."""
    import nbclient
    import nbformat

    if timeout <= 0:
        raise ValueError(f"timeout={timeout!r} must be a positive number of seconds")
    nb = nbformat.read(str(path), as_version=4)
    cell_s: dict[int, float] = {}
    current: list[int] = [-1]
    cpu: list[float | None] = [None]

    class Timed(nbclient.NotebookClient):
        async def _async_cleanup_kernel(self) -> None:
            if self.km is not None:  # read the kernel's CPU time before it is shut down
                cpu[0] = process_cpu_seconds(getattr(getattr(self.km, "provisioner", None), "pid", None))
            await super()._async_cleanup_kernel()

        async def async_start_new_kernel_client(self):  # noqa: ANN202
            kc = await super().async_start_new_kernel_client()
            for ch in (kc.shell_channel, kc.iopub_channel):  # see sliced_get_msg: a missed wake-up costs <= 1 s
                if inspect.iscoroutinefunction(ch.get_msg) and not getattr(ch.get_msg, "sliced", False):
                    ch.get_msg = sliced_get_msg(ch.get_msg)
            return kc

        async def async_execute_cell(self, cell, cell_index, *a, **k):  # noqa: ANN001
            current[0] = cell_index
            t = time.perf_counter()
            try:
                return await super().async_execute_cell(cell, cell_index, *a, **k)
            finally:
                if cell.get("cell_type") == "code":
                    cell_s[cell_index] = round(time.perf_counter() - t, 2)

    client = Timed(nb, timeout=timeout, kernel_name=kernel_name, store_widget_state=True,
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    t0 = time.perf_counter()
    failed, error = None, ""
    try:
        client.execute(env=env)
    except Exception as e:  # noqa: BLE001 - reported with the cell's source and traceback
        failed = current[0]
        error = describe_failure(nb, failed, e)
        if isinstance(e, (nbclient.exceptions.CellTimeoutError, nbclient.exceptions.DeadKernelError)):
            error = HANG + error
    return Result(nb, round(time.perf_counter() - t0, 1), cell_s, failed, error, cpu[0])


def describe_failure(nb, index: int, exc: BaseException) -> str:  # noqa: ANN001
    """``cell N`` + its source + the traceback the kernel sent (or the executor's own error), ANSI-free."""
    cell = nb.cells[index] if 0 <= index < len(nb.cells) else {}
    src = "".join(cell.get("source", "")) if cell else ""
    tb = ""
    for out in cell.get("outputs", []) if cell else []:
        if out.get("output_type") == "error":
            tb = "\n".join(out.get("traceback", [])) or f"{out.get('ename')}: {out.get('evalue')}"
    if not tb:
        tb = f"{type(exc).__name__}: {exc}"
    return ANSI.sub("", f"cell {index} failed\n---- source of cell {index} ----\n{src}\n---- traceback ----\n{tb}")


def write_executed(path: str | os.PathLike, result: Result, profile: str, dest_dir: Path = EXECUTED,
                   root: Path = ROOT) -> Path:
    """Write the executed notebook to ``dest_dir/<stem>.ipynb`` (atomically) with its provenance."""
    import nbformat

    nb = result.nb
    nb.metadata["lessonlib"] = {
        "source_sha": source_sha(path), "code_sha": code_sha(path), "inputs_sha": inputs_sha(root), "profile": profile, "ok": result.ok,
        "seconds": result.seconds, "cpu_seconds": result.cpu_seconds, "cell_seconds": {str(k): v for k, v in sorted(result.cell_seconds.items())},
        "failed_cell": result.failed_cell, "commit": commit(root),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / (Path(path).stem + ".ipynb")
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, out)
    return out


def executed_copy(path: str | os.PathLike, profile: str, dest_dir: Path = EXECUTED, root: Path = ROOT,
                  inputs: str | None = None) -> Path | None:
    """``dest_dir/<stem>.ipynb`` when it ran every cell of exactly these code cells under ``profile`` with the
    same library and ledger (``inputs`` = :func:`inputs_sha`, computed when not given); otherwise None.
    Markdown may have changed since: :func:`with_outputs` puts the copy's outputs into the current source."""
    out = dest_dir / (Path(path).stem + ".ipynb")
    try:
        meta = json.loads(out.read_text(encoding="utf-8")).get("metadata", {}).get("lessonlib", {})
    except (OSError, ValueError):
        return None
    if not (meta.get("ok") is True and meta.get("profile") == profile and meta.get("code_sha") == code_sha(path)):
        return None
    if meta.get("inputs_sha") != (inputs if inputs is not None else inputs_sha(root)):
        return None
    return out


def with_outputs(source: dict, executed: dict) -> dict:
    """The notebook ``source`` (JSON dict) with the outputs, execution counts and widget state of ``executed``,
    a run of the same code cells (:func:`executed_copy`); markdown cells stay as they are in ``source``."""
    src_code = [c for c in source.get("cells", []) if c.get("cell_type") == "code"]
    run_code = [c for c in executed.get("cells", []) if c.get("cell_type") == "code"]
    if len(src_code) != len(run_code) or any("".join(a.get("source", "")) != "".join(b.get("source", ""))
                                              for a, b in zip(src_code, run_code)):
        raise ValueError("the executed copy's code cells differ from the source's: not a run of this notebook")
    out = json.loads(json.dumps(source))
    for cell, ran in zip((c for c in out["cells"] if c.get("cell_type") == "code"), run_code):
        cell["outputs"] = ran.get("outputs", [])
        cell["execution_count"] = ran.get("execution_count")
    for key in ("widgets", "lessonlib"):
        if key in executed.get("metadata", {}):
            out.setdefault("metadata", {})[key] = executed["metadata"][key]
    return out


def run(path: str | os.PathLike, profile: str, threads: str = "1", timeout: int = 1800,
        dest_dir: Path = EXECUTED) -> Result:
    """Execute ``path`` as a learner's kernel would (inline figures) and keep the executed copy.

    The first attempt gives each cell half of ``timeout``, the retry all of it: a kernel that sits idle (the
    intermittent hang below) then costs half as long before it is replaced, and a cell that is only slow still
    gets the full timeout on the retry."""
    result = execute(path, kernel_env(profile, threads), max(1, timeout // 2))
    if not result.ok and result.error.startswith(HANG):
        # a cell that timed out or a kernel that died is run again once in a fresh kernel; a real hang or crash
        # fails twice. (The "idle kernel" seen in 02/07's widget cells was the executor missing a ready reply,
        # see sliced_get_msg; since the channels are polled in 1 s slices that costs a second, not a timeout.)
        # The retry is said in the report and the executed copy.
        first = result.error.splitlines()[0]
        warnings.warn(f"{Path(path).name}: {first}; running it once more in a fresh kernel")
        result = execute(path, kernel_env(profile, threads), timeout)
        result.nb.metadata.setdefault("lessonlib_retry", {})["first_attempt"] = first
    write_executed(path, result, profile, dest_dir)
    return result
