"""The grading child: runs ONE student's file and computes its functions' outputs, nothing else.

This file is not imported by the grader: :mod:`lessonlib_grader.sandbox` reads its text and runs it as
``python -I -B -c <this source> RFD WFD`` in a scratch directory that holds only the student's file.  It
imports nothing from the lessonlib checkout: its ``lessonlib`` (if the student imports it) is a copy in
which every graded reference body is replaced by ``raise NotImplementedError``.

Protocol (length-prefixed frames over two inherited pipes):

* parent -> child: pickled requests ``{"op": "config"|"load"|"call"|"backward"|"bye", ...}`` (the parent
  is trusted);
* child -> parent: ``torch.save`` of plain data only (tensors, numbers, strings, lists, tuples, dicts),
  which the parent reads back with ``torch.load(weights_only=True)``: the child cannot send code.

Expected values never travel to this process: it only ever learns inputs.
"""
import io
import os
import pickle
import struct
import sys

RFD, WFD = int(sys.argv[1]), int(sys.argv[2])
MAX_FRAME = 1 << 30


def _read_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(RFD, n - len(buf))
        if not chunk:
            os._exit(0)  # the parent is gone
        buf += chunk
    return bytes(buf)


def _recv():
    (n,) = struct.unpack("<Q", _read_exact(8))
    return pickle.loads(_read_exact(n))


_RAW_SEND = None


def _send(obj):
    _RAW_SEND(obj)


cfg = _recv()  # {"lib": dir, "scratch": dir, "file": name, "deny": [...], "allow": [...], "graded": [[mod, fn], ...]}

# ---------------------------------------------------------------- paths: no checkout, no classmates, no solutions
def _in(p, roots):
    return any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)


sys.path[:] = [p for p in sys.path if p and not _in(os.path.realpath(p), cfg.get("hard", ()))
               and not (_in(os.path.realpath(p), cfg["deny"]) and not _in(os.path.realpath(p), cfg["allow"]))]
sys.path.insert(0, cfg["lib"])
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "").lower()
                    and "editable" not in type(f).__name__.lower()]
sys.path_importer_cache.clear()
for _m in [m for m in sys.modules if m == "lessonlib" or m.startswith("lessonlib.")]:
    del sys.modules[_m]
os.chdir(cfg["scratch"])

import torch  # noqa: E402  (imported before the audit hook: torch loads its libraries with ctypes)

try:
    import numpy  # noqa: E402,F401
except ImportError:
    pass


def _send_torch(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    os.write(WFD, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        n = os.write(WFD, view)
        view = view[n:]


_RAW_SEND = _send_torch

# the stubbed reference functions: a call into one of them is reported (a wrapper around the reference)
import importlib  # noqa: E402

_REF_CODES = {}
for _mod, _fn in cfg["graded"]:
    try:
        _f = getattr(importlib.import_module(_mod), _fn)
        _REF_CODES[_f.__code__] = f"{_mod}:{_fn}"
    except Exception:  # noqa: BLE001 - a reference module that does not import here is simply not watched
        pass
_REF_CALLS = []


def _profile(frame, event, arg):
    if event == "call" and frame.f_code in _REF_CODES:
        _REF_CALLS.append(_REF_CODES[frame.f_code])


# ---------------------------------------------------------------- the audit hook (cannot be removed)
def _make_hook(scratch, deny, hard, allow, self_pid):
    """The audit hook, as a closure: its state lives in cells that no module attribute reaches (the gc
    walkers and the setters of function internals are refused by the hook itself), and every function it
    uses is bound here, so monkeypatching os/posixpath afterwards changes nothing."""
    realpath, fsdecode, getcwd = os.path.realpath, os.fsdecode, os.getcwd
    path_types, str_, bytes_, int_ = (str, bytes, os.PathLike), str, bytes, int
    blocked = frozenset({"subprocess.Popen", "os.system", "os.posix_spawn", "os.fork", "os.forkpty", "pty.spawn",
                         "os.kill", "os.killpg", "signal.pthread_kill", "socket.connect", "socket.bind", "os.setsid",
                         "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames"})
    prefixes = ("os.exec", "os.spawn", "os.posix_spawn", "ctypes.")
    writes = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown",
                        "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
                        "shutil.copytree", "os.chdir"})
    reads = frozenset({"os.listdir", "os.scandir", "glob.glob", "os.walk", "shutil.copyfile", "shutil.copytree"})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    scratch_roots = (scratch,)

    def textual(p):  # absolute and with '.', '..' collapsed, without asking the file system
        p = p if p.startswith("/") else getcwd() + "/" + p
        parts = []
        for c in p.split("/"):
            if c in ("", "."):
                continue
            if c == "..":
                if parts:
                    parts.pop()
            else:
                parts.append(c)
        return "/" + "/".join(parts)

    def forms(a):
        try:
            p = fsdecode(a)
        except Exception:  # noqa: BLE001
            return ()
        if not isinstance(p, str_):
            return ()
        t = textual(p)
        try:
            r = realpath(p)
        except Exception:  # noqa: BLE001
            r = t
        return (t, r) if r != t else (t,)

    def under(p, roots):
        for r in roots:
            if p == r or p.startswith(r.rstrip("/") + "/"):
                return True
        return False

    def check_read(a):
        for p in forms(a):
            bits = p.split("/")
            if p.startswith("/proc/") and len(bits) > 2 and bits[2].isdigit() and bits[2] != self_pid:
                raise PermissionError(f"the grader does not let a submission look at other processes ({p})")
            if (under(p, hard) and not under(p, scratch_roots)) or (under(p, deny) and not under(p, allow)):
                raise PermissionError(f"the grader does not let a submission read {p}")

    def check_write(a):
        for p in forms(a):
            if not under(p, scratch_roots) and p != "/dev/null":
                raise PermissionError(f"the grader does not let a submission write outside its scratch folder ({p})")

    def hook(event, args):
        if event in blocked or event.startswith(prefixes):
            raise PermissionError(f"the grader does not let a submission do {event}")
        if event == "object.__setattr__" and len(args) > 1 and any(args[0] is f for f in mine):
            raise PermissionError(f"the grader does not let a submission change its guard ({args[1]})")
        if event == "open" and args and isinstance(args[0], path_types):
            mode = args[1] if len(args) > 1 else "r"
            flags = args[2] if len(args) > 2 and isinstance(args[2], int_) else 0
            if (isinstance(mode, str_) and any(c in mode for c in "wax+")) or flags & write_flags:
                check_write(args[0])
            check_read(args[0])
        elif event in writes:
            for a in args:
                if isinstance(a, path_types):
                    check_write(a)
        if event in reads and args and isinstance(args[0], path_types):
            check_read(args[0])

    mine = (hook, textual, forms, under, check_read, check_write)
    return hook


_SCRATCH = os.path.realpath(cfg["scratch"])
_lib_forms = (cfg["lib"], os.path.realpath(cfg["lib"]))
_prefix_forms = (sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix))
sys.addaudithook(_make_hook(_SCRATCH, tuple(cfg["deny"]), tuple(cfg.get("hard", ())),
                            tuple(cfg["allow"]) + (_SCRATCH,) + _lib_forms + _prefix_forms, str(os.getpid())))
del _make_hook, _lib_forms, _prefix_forms
sys.dont_write_bytecode = True
_send({"ready": True, "pid": os.getpid()})

# ---------------------------------------------------------------- the request loop
_module = None
_graphs = {}  # call id -> (outputs, inputs) kept for a later "backward"


def _wire(x, depth=0):
    """Plain data the parent can load with weights_only=True; anything else becomes a described marker."""
    if depth > 20:
        return {"__unsupported__": "too deeply nested", "repr": ""}
    if isinstance(x, torch.Tensor):
        return x.detach().clone() if x.requires_grad or not x.is_leaf else x.detach()
    if x is None or isinstance(x, (bool, int, float, str, complex, torch.dtype, torch.Size, torch.device)):
        return x
    if isinstance(x, (list, tuple)):
        items = [_wire(v, depth + 1) for v in x]
        return items if isinstance(x, list) else tuple(items)
    if isinstance(x, dict):
        return {k if isinstance(k, (str, int, float, bool, tuple)) else repr(k): _wire(v, depth + 1)
                for k, v in x.items()}
    if isinstance(x, _Callback):
        return {"__callback__": x.idx}
    if isinstance(x, torch.nn.Module):
        return {"__module_state__": {k: v.detach().clone() for k, v in x.state_dict().items()}}
    if type(x).__module__ == "numpy" and hasattr(x, "dtype"):
        import numpy as np

        if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
            wide = x.astype(np.float64 if x.dtype.kind == "f" else np.int64 if x.dtype.kind in "iu" else np.bool_)
            return {"__numpy__": torch.from_numpy(np.ascontiguousarray(wide)), "dtype": str(x.dtype)}
        if isinstance(x, np.generic) and x.dtype.kind in "biuf":
            return {"__npscalar__": x.item(), "dtype": str(x.dtype)}
    try:
        r = repr(x)[:200]
    except Exception:  # noqa: BLE001
        r = "?"
    return {"__unsupported__": type(x).__name__, "repr": r}


class _Callback:
    """A grader function passed as an argument: calling it sends the data to the grader and waits."""

    def __init__(self, idx):
        self.idx = idx

    def __call__(self, *args, **kwargs):
        _send({"callback": self.idx, "args": _wire(args), "kwargs": _wire(kwargs)})
        ans = _recv()
        if not ans.get("ok"):
            raise RuntimeError(f"the function passed as an argument raised {ans.get('type')}: {ans.get('message')}")
        return ans["value"]


def _callbacks_in(x):
    if isinstance(x, dict):
        if set(x) == {"__callback__"}:
            return _Callback(x["__callback__"])
        return {k: _callbacks_in(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_callbacks_in(v) for v in x]
    if type(x) is tuple:
        return tuple(_callbacks_in(v) for v in x)
    return x


def _where(exc, filename):
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    return f"line {frames[-1].lineno}: {(frames[-1].line or '').strip()}" if frames else ""


def _tensors_needing_grad(x, out):
    if isinstance(x, torch.Tensor):
        if x.requires_grad:
            out.append(x)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _tensors_needing_grad(v, out)
    elif isinstance(x, dict):
        for v in x.values():
            _tensors_needing_grad(v, out)
    return out


_path = os.path.join(_SCRATCH, cfg["file"])
while True:
    req = _recv()
    op = req["op"]
    if op == "bye":
        os._exit(0)
    if op == "load":
        import importlib.util

        try:
            spec = importlib.util.spec_from_file_location("submission", _path)
            _module = importlib.util.module_from_spec(spec)
            sys.modules["submission"] = _module
            sys.setprofile(_profile)
            spec.loader.exec_module(_module)
            sys.setprofile(None)
            names = {k: ("function" if callable(v) else "value") for k, v in vars(_module).items()
                     if not k.startswith("__")}
            _send({"ok": True, "names": names, "ref_calls": sorted(set(_REF_CALLS))})
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
            sys.setprofile(None)
            lineno = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
            _send({"ok": False, "type": type(exc).__name__, "message": str(exc)[:2000],
                   "lineno": lineno, "text": (getattr(exc, "text", None) or "") if lineno else "",
                   "where": _where(exc, _path), "ref_calls": sorted(set(_REF_CALLS))})
        continue
    if op == "call":
        _REF_CALLS.clear()
        target = getattr(_module, req["name"], None)
        args, kwargs = _callbacks_in(req["args"]), _callbacks_in(req["kwargs"])
        try:
            sys.setprofile(_profile)
            try:
                if callable(target):
                    with torch.enable_grad():
                        out = target(*args, **kwargs)
                else:
                    out = target
            finally:
                sys.setprofile(None)
            grads_for = _tensors_needing_grad((args, kwargs), [])
            outs = out if isinstance(out, tuple) else (out,)
            if grads_for and all(isinstance(o, torch.Tensor) for o in outs):
                _graphs.clear()
                _graphs[req["id"]] = (outs, grads_for)
            _send({"ok": True, "out": _wire(out), "args": _wire(args), "kwargs": _wire(kwargs),
                   "grad": [bool(isinstance(o, torch.Tensor) and o.requires_grad) for o in outs],
                   "ref_calls": sorted(set(_REF_CALLS))})
        except BaseException as exc:  # noqa: BLE001
            code = exc.code if isinstance(exc, SystemExit) else None
            _send({"ok": False, "type": type(exc).__name__, "message": str(exc)[:2000],
                   "where": _where(exc, _path), "exit_code": code if isinstance(code, (int, str)) else None,
                   "ref_calls": sorted(set(_REF_CALLS))})
        continue
    if op == "backward":
        try:
            outs, inputs = _graphs[req["call"]]
            pairs = [(o, g) for o, g in zip(outs, req["grads"]) if g is not None and o.requires_grad]
            grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
            _send({"ok": True, "grads": [None if g is None else g.detach() for g in grads]})
        except BaseException as exc:  # noqa: BLE001
            _send({"ok": False, "type": type(exc).__name__, "message": str(exc)[:2000]})
        continue
