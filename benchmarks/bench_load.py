"""Cold against warm load of the embedded model.

Cold: a fresh, empty cache, so the GGUF is dequantised and rebuilt as safetensors (what a newcomer's first
`make lab` pays once).  Warm: the cached safetensors load (every later call).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

CODE = ("import time; t0=time.perf_counter(); from lessonlib.models import load_model; import transformers; "
        "t=time.perf_counter(); load_model(device='cpu'); print(t-t0, time.perf_counter()-t)")


def timed(env: dict) -> tuple[float, float]:
    """(seconds to import lessonlib + transformers, seconds in load_model) in a fresh process."""
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    imp, load = out.stdout.strip().splitlines()[-1].split()
    return float(imp), float(load)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "LESSONLIB_CACHE": d, "LESSONLIB_QUIET": "1"}
        t0 = time.perf_counter()
        imp, cold = timed(env)
        cold_wall = time.perf_counter() - t0
        warm = sorted(timed(env)[1] for _ in range(3))
    print(json.dumps({"import_s": round(imp, 2), "cold_load_s": round(cold, 2), "cold_process_s": round(cold_wall, 2),
                      "warm_load_s_median": round(warm[1], 2)}, indent=1))


if __name__ == "__main__":
    main()
