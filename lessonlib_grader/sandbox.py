"""Running one submission in an isolated child process (the parent side of :mod:`lessonlib_grader.child`).

What the child gets, and what it does not:

* a scratch directory (its cwd and HOME) holding a copy of its own file and nothing else;
* ``python -I -B``: no ``PYTHONPATH``, no user site, no current directory on ``sys.path``; an environment
  scrubbed to a handful of variables; the checkout, the submissions folder and any installed ``lessonlib``
  taken off ``sys.path`` and denied to ``open``/``listdir`` by an audit hook (which also refuses
  subprocesses, ``fork``, ``exec``, signals to other processes, ``ctypes`` and sockets);
* a ``lessonlib`` of its own: a copy of the package whose every ``# BEGIN SOLUTION`` body is replaced by
  ``raise NotImplementedError`` and which has no specs, no mutants and no ``solutions/`` beside it, so
  ``lessonlib.__file__`` leads nowhere useful; a call into a (stubbed) graded reference is reported;
* resource limits set in ``preexec_fn``: address space, CPU seconds, file size, open files, processes;
* its own session (``start_new_session``): on a timeout or at the end the parent kills the whole process
  group with SIGKILL, which nothing in the child can catch.

The parent sends inputs and reads back outputs (plain data only, read with ``torch.load(weights_only=True)``)
and does every comparison itself: expected values and the grader's state never exist in the child.
"""
from __future__ import annotations

import ast
import atexit
import contextlib
import functools
import io
import json
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Any

import torch

from .checks import GradingTimeout
from .extract import BEGIN, END, marked_blocks, replace_blocks, repo_root

__all__ = ["Sandbox", "SandboxDied", "RemoteError", "stripped_library", "strip_solutions", "Limits"]

CHILD_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
MAX_FRAME = 1 << 30


class SandboxDied(BaseException):
    """The child process ended (crash, memory limit, killed) before answering (a BaseException, so no
    ``except Exception`` in a check mistakes it for a wrong answer)."""


class RemoteError(Exception):
    """The student's code raised in the child: ``type_name``, message and ``where`` (line in their file)."""

    def __init__(self, type_name: str, message: str, where: str = "", exit_code: Any = None):
        super().__init__(message)
        self.type_name, self.where, self.exit_code = type_name, where, exit_code


class Limits:
    """Resource limits of one child (bytes, seconds); ``LESSONLIB_GRADE_MEMORY_MB`` overrides the memory."""

    def __init__(self, memory_mb: int | None = None, cpu_s: int = 600, file_mb: int = 64, open_files: int = 256,
                 extra_tasks: int = 256):
        self.memory = int(memory_mb or os.environ.get("LESSONLIB_GRADE_MEMORY_MB", 4096)) * 2**20
        self.cpu_s, self.file = int(cpu_s), file_mb * 2**20
        self.open_files, self.extra_tasks = open_files, extra_tasks

    def preexec(self):
        """The ``preexec_fn``: only setrlimit calls (safe between fork and exec)."""
        nproc = _user_tasks() + self.extra_tasks  # RLIMIT_NPROC counts the user's threads: room for torch's own
        mem, cpu, fsz, nof = self.memory, self.cpu_s, self.file, self.open_files

        def apply() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsz, fsz))
            resource.setrlimit(resource.RLIMIT_NOFILE, (nof, nof))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

        return apply


def _user_tasks() -> int:
    uid, n = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{pid}/task"))
    return n


# ------------------------------------------------------------------ the child's lessonlib
def strip_solutions(text: str, where: str = "?", only: set[str] | None = None) -> str:
    """``text`` with every marked block (or only those inside the functions named in ``only``) replaced by
    ``raise NotImplementedError`` (markers removed)."""
    lines = text.splitlines(keepends=True)
    blocks = marked_blocks([l.rstrip("\n") for l in lines], where)
    if only is not None:
        spans = [(n.lineno - 1, n.end_lineno - 1) for n in ast.walk(ast.parse(text))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name in only]
        blocks = [(b, e) for b, e in blocks if any(lo <= b <= hi for lo, hi in spans)]
    return "".join(replace_blocks(lines, blocks,
                                  'raise NotImplementedError("graded exercise: the reference body is not shipped")\n'))


def copy_stripped_package(dest: str, only: dict[str, set[str]] | None = None) -> str:
    """Copy the lessonlib package to ``dest/lessonlib`` with solution bodies stubbed (all of them, or with
    ``only`` = {module name: function names} just those) and no grading specs, mutants or bytecode."""
    import lessonlib

    src = os.path.dirname(os.path.abspath(lessonlib.__file__))
    out = os.path.join(dest, "lessonlib")
    for d, dirs, files in os.walk(src):
        rel = os.path.relpath(d, src)
        dirs[:] = [x for x in dirs if x != "__pycache__" and not (rel == "grading" and x == "mutants")]
        os.makedirs(os.path.join(out, rel), exist_ok=True)
        for f in files:
            if f.endswith((".pyc", ".pyo")) or (rel == "grading" and f.startswith("specs_")):
                continue
            s, t = os.path.join(d, f), os.path.join(out, rel, f)
            if f.endswith(".py"):
                with open(s, encoding="utf-8") as fh:
                    text = fh.read()
                modname = "lessonlib" + ("" if rel == "." else "." + rel.replace(os.sep, ".")) \
                    + ("" if f == "__init__.py" else "." + f[:-3])
                names = None if only is None else only.get(modname, set())
                marked = any(l.strip().startswith((BEGIN, END)) for l in text.splitlines())
                if marked and rel != "grading" and (names is None or names):
                    text = strip_solutions(text, os.path.join(rel, f), names)
                with open(t, "w", encoding="utf-8") as fh:
                    fh.write(text)
            else:
                shutil.copy2(s, t)
    return out


@functools.lru_cache(maxsize=32)
def stripped_library(graded: tuple[tuple[str, str], ...] | None = None) -> str:
    """A temporary folder (removed at exit) holding a lessonlib copy with the ``graded`` (module, function)
    bodies stubbed (``None``: every marked body)."""
    d = tempfile.mkdtemp(prefix="lessonlib-childlib-")
    atexit.register(shutil.rmtree, d, True)
    only = None
    if graded is not None:
        only = {}
        for mod, fn in graded:
            only.setdefault(mod, set()).add(fn)
    copy_stripped_package(d, only)
    return d


def _editable_roots() -> list[str]:
    out = []
    with contextlib.suppress(Exception):
        from importlib.metadata import distribution

        info = json.loads(distribution("lessonlib").read_text("direct_url.json") or "{}")
        if info.get("url", "").startswith("file://"):
            out.append(info["url"][len("file://"):])
    return out


def _deny_roots(extra: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(deny, hard, allow) realpaths for the child's audit hook."""
    import lessonlib

    pkg = os.path.realpath(os.path.dirname(lessonlib.__file__))
    deny = {os.path.realpath(repo_root()), os.path.dirname(pkg), *map(os.path.realpath, _editable_roots()),
            *map(os.path.realpath, extra)}  # the submissions folder: denied unless it holds the venv itself
    hard = {pkg, os.path.join(os.path.dirname(pkg), "solutions")}
    for p in sys.path:
        with contextlib.suppress(OSError):
            cand = os.path.join(p or ".", "lessonlib")
            if os.path.isdir(cand):
                hard.add(os.path.realpath(cand))
    allow = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    return sorted(deny), sorted(hard), sorted(allow)


# ------------------------------------------------------------------ one child
class Sandbox:
    """One isolated child for one submission file; ``call`` runs a function of it on inputs from here."""

    def __init__(self, path: str, *, graded: list[tuple[str, str]], limits: Limits | None = None,
                 deny: list[str] | None = None, startup_timeout: float = 180.0):
        self.path, self.graded, self.limits = os.path.abspath(path), graded, limits or Limits()
        self.extra_deny = [os.path.dirname(self.path)] + list(deny or [])
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.scratch: str | None = None
        self.output: deque[str] = deque(maxlen=60)
        self._ids = 0

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.scratch = tempfile.mkdtemp(prefix="lessonlib-sub-")
        name = "submission.py"
        shutil.copyfile(self.path, os.path.join(self.scratch, name))
        c_r, p_w = os.pipe()  # parent -> child
        p_r, c_w = os.pipe()  # child -> parent
        env = {"PATH": "/usr/bin:/bin", "HOME": self.scratch, "TMPDIR": self.scratch, "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MKL_NUM_THREADS": "1",
               "PYTHONHASHSEED": "0", "LESSONLIB_QUIET": "1"}
        with open(CHILD_SOURCE, encoding="utf-8") as f:
            source = f.read()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", source, str(c_r), str(c_w)], pass_fds=(c_r, c_w),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.scratch, env=env,
            start_new_session=True, preexec_fn=self.limits.preexec(), close_fds=True)
        os.close(c_r)
        os.close(c_w)
        self._w, self._r = p_w, p_r
        threading.Thread(target=self._drain, daemon=True).start()
        deny, hard, allow = _deny_roots(self.extra_deny)
        self._send({"lib": stripped_library(tuple(sorted(map(tuple, self.graded)))), "scratch": self.scratch, "file": name, "deny": deny, "hard": hard,
                    "allow": allow, "graded": [list(g) for g in self.graded]})
        self._recv(time.monotonic() + self.startup_timeout, what="starting")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in io.TextIOWrapper(self.proc.stdout, errors="replace"):
            self.output.append(line)

    def kill(self) -> None:
        """SIGKILL the child's whole process group (grandchildren included), reap it, remove its scratch folder."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=30)
            for fd in (self._w, self._r):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.proc = None
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    close = kill

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output_tail(self, n: int = 1500) -> str:
        return "".join(self.output)[-n:]

    # -------------------------------------------------------------- frames
    def _send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            os.write(self._w, struct.pack("<Q", len(data)))
            view = memoryview(data)
            while view:
                view = view[os.write(self._w, view):]
        except (BrokenPipeError, OSError) as e:
            raise SandboxDied(f"the submission's process is gone ({e})") from None

    def _read_exact(self, n: int, deadline: float, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise GradingTimeout(what)
            ready, _, _ = select.select([self._r], [], [], min(left, 0.5))
            if not ready:
                if self.proc is not None and self.proc.poll() is not None:
                    raise SandboxDied(self._death())
                continue
            chunk = os.read(self._r, min(n - len(buf), 1 << 20))
            if not chunk:
                if self.proc is not None:
                    with contextlib.suppress(Exception):
                        self.proc.wait(timeout=5)
                raise SandboxDied(self._death())
            buf += chunk
        return bytes(buf)

    def _death(self) -> str:
        code = self.proc.poll() if self.proc is not None else None
        why = {-signal.SIGKILL: " (killed: out of memory or a resource limit?)",
               -signal.SIGXCPU: " (CPU time limit)", -signal.SIGSEGV: " (segmentation fault)"}.get(code or 0, "")
        return f"the submission's process stopped (exit code {code}){why}; its last output:\n{self.output_tail()}"

    def _recv(self, deadline: float, what: str) -> dict:
        (n,) = struct.unpack("<Q", self._read_exact(8, deadline, what))
        if n > MAX_FRAME:
            self.kill()
            raise SandboxDied(f"the submission sent {n} bytes back (limit {MAX_FRAME})")
        data = self._read_exact(n, deadline, what)
        try:
            obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - anything but plain data is refused
            self.kill()
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise SandboxDied(f"the submission's process sent something that is not plain data ({first})") from None
        if not isinstance(obj, dict):
            self.kill()
            raise SandboxDied("the submission's process sent a malformed answer")
        return obj

    # -------------------------------------------------------------- requests
    def load(self, deadline: float) -> dict:
        """Import the submission in the child: ``{"ok": True, "names": {...}}`` or the import error."""
        self._send({"op": "load"})
        return self._recv(deadline, "importing the submission")

    def request(self, req: dict, deadline: float, what: str, callbacks: list | None = None) -> dict:
        """Send ``req``; answer the child's calls of ``callbacks`` (grader functions passed as arguments: the
        child sends plain data, the grader's function runs here) until the child's answer arrives."""
        from .remote import from_wire

        self._ids += 1
        req = dict(req, id=self._ids)
        self._send(req)
        while True:
            ans = self._recv(deadline, what)
            if "callback" not in ans:
                return ans
            try:
                f = (callbacks or [])[int(ans["callback"])]
                value = f(*from_wire(ans.get("args", ())), **from_wire(ans.get("kwargs", {})))
                self._send({"op": "callback_result", "ok": True, "value": value})
            except (GradingTimeout, SandboxDied):
                raise
            except Exception as e:  # noqa: BLE001 - the student passed it something it cannot take
                self._send({"op": "callback_result", "ok": False, "type": type(e).__name__, "message": str(e)})
