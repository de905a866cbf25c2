"""The measurements behind the compiled backend's design choices, on this machine.

Usage:  python benchmarks/backend_notes.py [--out benchmarks/results/backend_notes.json]

* ``first_call``: a fresh process with an empty numba cache (``NUMBA_CACHE_DIR`` set to a new
  directory): seconds for ``import oscillink_core`` and for the first ``rerank`` (N = 200, which
  compiles every kernel); then the same again with the cache now filled.
* ``sha256_gb_per_s``: hashlib SHA-256 throughput on the bytes of Y at N = 1,000, D = 384 (float32),
  the input every receipt binds.
* ``thread_handoff_ms``: submitting a no-op to a one-worker thread pool and waiting for it.
* ``helper_thread``: median ``rerank`` time (and its solve stage) with the second thread allowed
  and forced off, at N = 1,000 (where the default runs on one thread: the thread and the column
  split are forced on for the comparison) and N = 20,000 (where the default uses it).
Inputs come from `benchmarks/speed.py`'s generator. Each measurement is a median over repeats.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_data, write_report  # noqa: E402

_FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np
from oscillink_core import rerank
t1 = time.perf_counter()
Y = np.random.default_rng(0).normal(size=(200, 384)).astype("float32")
res = rerank(Y[0], Y, k=5)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, res.receipt["solver"]["backend"])
"""


def first_call() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "OSCILLINK_BACKEND": "numba"}
        out = {}
        for label in ("empty_cache", "filled_cache"):
            proc = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True,
                                  check=True)
            imp, first, backend = proc.stdout.split()
            out[label] = {"import_s": float(imp), "first_rerank_s": float(first), "backend": backend}
    return out


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times))


def helper_thread(n: int, repeats: int) -> dict:
    from oscillink_core import _backend, rerank

    Y, psi = make_data(n)
    defaults = (_backend._PARALLEL_MIN, _backend._SPLIT_MIN)
    out = {}
    settings = {"default": defaults}
    if n * Y.shape[1] < defaults[0]:
        settings["split, two threads"] = (0, 0)
        settings["split, one thread"] = (1 << 60, 0)
    else:
        settings["one thread"] = (1 << 60, defaults[1])
    for label, (par, split) in settings.items():
        _backend._PARALLEL_MIN, _backend._SPLIT_MIN = par, split
        rerank(psi, Y, k=10, light_receipt=True, backend="numba")
        total, solve = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = rerank(psi, Y, k=10, light_receipt=True, backend="numba")
            total.append(1e3 * (time.perf_counter() - t0))
            solve.append(res.timings["solve_ms"])
        out[label] = {"total_ms": float(np.median(total)), "solve_ms": float(np.median(solve))}
    _backend._PARALLEL_MIN, _backend._SPLIT_MIN = defaults
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "backend_notes.json"))
    args = ap.parse_args(argv)

    report: dict = {"benchmark": "oscillink-core backend notes",
                    "command": "python benchmarks/backend_notes.py " + " ".join(argv or sys.argv[1:]),
                    "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                "cpus": os.cpu_count()}}
    report["first_call"] = first_call()
    Y, _ = make_data(1000)
    buf = memoryview(np.ascontiguousarray(Y)).cast("B")
    ms = median_ms(lambda: hashlib.sha256(buf).digest(), 50)
    report["sha256_gb_per_s"] = len(buf) / (ms / 1e3) / 1e9
    pool = ThreadPoolExecutor(max_workers=1)
    pool.submit(lambda: None).result()
    report["thread_handoff_ms"] = median_ms(lambda: pool.submit(lambda: None).result(), 200)
    report["helper_thread"] = {str(n): helper_thread(n, reps) for n, reps in ((1000, 40), (20000, 5))}

    print(f"first call, empty numba cache: import {report['first_call']['empty_cache']['import_s']:.2f} s, "
          f"first rerank {report['first_call']['empty_cache']['first_rerank_s']:.2f} s")
    print(f"first call, filled cache:      import {report['first_call']['filled_cache']['import_s']:.2f} s, "
          f"first rerank {report['first_call']['filled_cache']['first_rerank_s']:.2f} s")
    print(f"SHA-256: {report['sha256_gb_per_s']:.2f} GB/s; thread hand-off: {report['thread_handoff_ms']:.3f} ms")
    for n, rows in report["helper_thread"].items():
        for label, r in rows.items():
            print(f"N = {n:>6} {label:<20} total {r['total_ms']:9.2f} ms  solve {r['solve_ms']:8.2f} ms")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
