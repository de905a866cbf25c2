"""The measurements behind the compiled backend's design choices, on this machine.

Usage:  python benchmarks/backend_notes.py [--out benchmarks/results/backend_notes.json] [--before DIR]

* ``first_call``: a fresh process with an empty numba cache (``NUMBA_CACHE_DIR`` set to a new
  directory): seconds for ``import oscillink_core`` and for the first ``rerank`` (N = 200, which
  compiles every kernel); then the same again with the cache now filled.
* ``sha256_gb_per_s``: hashlib SHA-256 throughput on the bytes of Y at N = 1,000, D = 384 (float32),
  the input every receipt binds.
* ``thread_handoff_ms``: submitting a no-op to a one-worker thread pool and waiting for it.
* ``helper_thread``: median ``rerank`` time (and its solve stage) with the second thread allowed
  and forced off, at N = 1,000 (where the default runs on one thread: the thread and the column
  split are forced on for the comparison) and N = 20,000 (where the default uses it).
* ``allocation``: median ``rerank`` time and minor page faults per call at N = 1,000, back to
  back and with another settled lattice alive in the process, each in fresh processes.
  ``--before DIR`` adds an older checkout (``git worktree add DIR 4dfed7a``, whose kernels
  allocated their large temporaries inside numba) in the same two states.
* ``budget``: where the time of one ``rerank`` at N = 1,000 goes, against the dense product
  ``Y @ Y.T`` (the yardstick of the "2x Y Y^T" target): the full call and, timed alone on the
  same input, the product of the unit rows behind the exact kNN, SHA-256 of Y, the compiled
  top-k on that product, the mutual graph and the compiled CG solve. All are measured in
  interleaved rounds in one process, so drift hits them alike.
Inputs come from `benchmarks/speed.py`'s generator. Each measurement is a median over repeats.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import git_rev, machine_info, make_data, median_ms, write_report  # noqa: E402

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


_ALLOC_RUN = """
import resource, sys, time
sys.path.insert(0, {bench!r})
import numpy as np
from speed import make_data
from oscillink_core import Oscillink, rerank
Y, psi = make_data({n})
if {alive}:
    keep = Oscillink(Y, backend="numba")
    keep.set_query(psi)
    keep.settle()
for _ in range(3):
    rerank(psi, Y, k=10, light_receipt=True, backend="numba")
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for _ in range({repeats}):
    t0 = time.perf_counter()
    rerank(psi, Y, k=10, light_receipt=True, backend="numba")
    times.append(1e3 * (time.perf_counter() - t0))
print(float(np.median(times)), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / {repeats})
"""


def allocation_effect(n: int = 1000, repeats: int = 60, runs: int = 3, before: str | None = None) -> dict:
    """Each setting in fresh processes (the allocator's state is the point), ``runs`` of each,
    interleaved; the median of their medians. ``before``: also time an older checkout of the
    package (a directory holding ``oscillink_core``)."""
    bench = str(Path(__file__).resolve().parent)
    settings = [(tree, alive) for tree in ([None, before] if before else [None]) for alive in (False, True)]
    got: dict = {s: [] for s in settings}
    for _ in range(runs):
        for tree, alive in settings:
            code = _ALLOC_RUN.format(bench=bench, alive=alive, n=n, repeats=repeats)
            env = {**os.environ, "OSCILLINK_BACKEND": "numba"}
            if tree:
                env["PYTHONPATH"] = tree
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  env=env, cwd=tree or None)
            ms, faults = proc.stdout.split()
            got[(tree, alive)].append((float(ms), float(faults)))
    out = {}
    for (tree, alive), rs in got.items():
        state = "another lattice alive" if alive else "back to back"
        if tree:
            label = f"before (checkout {git_rev(tree) or tree}), {state}"
        else:
            label = f"this checkout, {state}"
        out[label] = {"median_ms": float(np.median([r[0] for r in rs])),
                      "run_medians_ms": [r[0] for r in rs],
                      "minor_faults_per_call": float(np.median([r[1] for r in rs]))}
    return out


def budget(n: int = 1000, rounds: int = 15, reps: int = 8) -> dict:
    from oscillink_core import Oscillink, _backend, rerank

    J = _backend._jit()
    Y, psi = make_data(n)
    lat = Oscillink(Y, backend="numba")
    lat.set_query(psi)
    lat.settle()
    Yn = lat.unit_rows
    S = Yn @ Yn.T
    S[np.arange(n), np.arange(n)] = -np.inf
    idx = np.empty((n, 6), np.int64)
    sim = np.empty((n, 6), np.float32)
    p = lat.params
    dvals = p.lamG + p.lamQ * np.ones(n)
    mp, mc, md, diag = J.system_arrays(*lat._csr, lat._deg, lat._scale, dvals, float(p.lamC))
    F = J.rhs(Yn, lat._psi, np.ones(n, np.float32), float(p.lamG), float(p.lamQ), np.empty_like(Yn))
    buf = memoryview(np.ascontiguousarray(Y)).cast("B")
    parts = {
        "rerank (the whole call)": lambda: rerank(psi, Y, k=10, light_receipt=True, backend="numba"),
        "Y @ Y.T (the yardstick)": lambda: Y @ Y.T,
        "unit rows @ their transpose (kNN product)": lambda: Yn @ Yn.T,
        "SHA-256 of Y": lambda: hashlib.sha256(buf).digest(),
        "top-6 of each row of the product": lambda: J.topk_rows(S, 6, 0, n, idx, sim),
        "mutual graph": lambda: J.mutual_graph(idx, Yn, 0.0),
        "CG solve (4 iterations, 384 columns)": lambda: _backend.block_cg(mp, mc, md, diag, F, rtol=p.rtol,
                                                                          maxiter=p.maxiter),
    }
    for fn in parts.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(rounds):
        for name, fn in parts.items():
            times[name].append(median_ms(fn, reps)[0])
    ms = {name: float(np.median(v)) for name, v in times.items()}
    yard = ms["Y @ Y.T (the yardstick)"]
    product = ms["unit rows @ their transpose (kNN product)"]
    rest = ms["rerank (the whole call)"] - product
    return {"n": n, "ms": ms, "ratio_to_yardstick": {name: v / yard for name, v in ms.items()},
            "all_but_the_product_ms": rest, "all_but_the_product_over_yardstick": rest / yard}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "backend_notes.json"))
    ap.add_argument("--before", help="an older checkout to time beside this one (e.g. a git worktree)")
    args = ap.parse_args(argv)

    report: dict = {"benchmark": "oscillink-core backend notes",
                    "command": "python benchmarks/backend_notes.py " + " ".join(argv or sys.argv[1:]),
                    "machine": machine_info()}
    report["first_call"] = first_call()
    Y, _ = make_data(1000)
    buf = memoryview(np.ascontiguousarray(Y)).cast("B")
    ms = median_ms(lambda: hashlib.sha256(buf).digest(), 50)[0]
    report["sha256_gb_per_s"] = len(buf) / (ms / 1e3) / 1e9
    pool = ThreadPoolExecutor(max_workers=1)
    pool.submit(lambda: None).result()
    report["thread_handoff_ms"] = median_ms(lambda: pool.submit(lambda: None).result(), 200)[0]
    report["helper_thread"] = {str(n): helper_thread(n, reps) for n, reps in ((1000, 40), (20000, 5))}
    report["allocation"] = allocation_effect(before=args.before)
    report["budget"] = budget()

    print(f"first call, empty numba cache: import {report['first_call']['empty_cache']['import_s']:.2f} s, "
          f"first rerank {report['first_call']['empty_cache']['first_rerank_s']:.2f} s")
    print(f"first call, filled cache:      import {report['first_call']['filled_cache']['import_s']:.2f} s, "
          f"first rerank {report['first_call']['filled_cache']['first_rerank_s']:.2f} s")
    print(f"SHA-256: {report['sha256_gb_per_s']:.2f} GB/s; thread hand-off: {report['thread_handoff_ms']:.3f} ms")
    for n, rows in report["helper_thread"].items():
        for label, r in rows.items():
            print(f"N = {n:>6} {label:<20} total {r['total_ms']:9.2f} ms  solve {r['solve_ms']:8.2f} ms")
    for label, r in report["allocation"].items():
        print(f"N =   1000 {label:<40} {r['median_ms']:7.2f} ms  {r['minor_faults_per_call']:7.0f} page faults/call")
    b = report["budget"]
    print(f"where the time goes at N = {b['n']} (medians of interleaved rounds):")
    for name, v in b["ms"].items():
        print(f"  {name:<44} {v:7.3f} ms  {b['ratio_to_yardstick'][name]:5.2f}x Y @ Y.T")
    print(f"  everything but the kNN product: {b['all_but_the_product_ms']:.3f} ms = "
          f"{b['all_but_the_product_over_yardstick']:.2f}x Y @ Y.T (2x overall needs <= 1x)")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
