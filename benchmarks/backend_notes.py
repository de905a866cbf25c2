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
* ``blas_spin``: how much CPU the process burns (in cores) while its only Python thread sleeps,
  right after ``Y @ Y.T`` and after an idle second: OpenBLAS's worker threads spin-wait for new
  work after a call, which is why a second thread of ours gains nothing at N = 1,000.
* ``alternatives``: designs tried for the "2x Y Y^T" target at N = 1,000. The kNN step (product
  and compiled top-k) with the whole product (numpy runs ``A @ A.T`` as one symmetric rank-k
  update) against row panels whose top-k runs while the panel is in cache (same neighbours,
  checked; the similarities differ in the last bits, as the sums run in another order), in
  interleaved rounds; and the CG iterations to the default tolerance on the same system
  (float64, from the Jacobi guess the kernel uses) with the Jacobi, two-term Neumann (the
  kernel's) and symmetric Gauss-Seidel preconditioners.

* ``product_in_context``: the kNN product as ``rerank`` meets it, i.e. after the rest of the previous
  call's work, against the same product back to back (how the yardstick is timed). The package's
  blocked exact kNN is wrapped (not changed) to time, inside each call, the stretch from its entry
  to its top-k (the product of the unit rows) and the top-k itself; the yardstick ``Y @ Y.T``
  and a back-to-back product of the unit rows run in the same interleaved rounds.

``--only SECTION[,SECTION]`` runs just those sections and replaces them in the existing report
(each section so run records its commit and command under ``provenance``; sections without an
entry there come from the run named by the top-level ``command``).
Inputs come from `benchmarks/speed.py`'s generator. Each measurement is a median over repeats.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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


def product_in_context(n: int = 1000, rounds: int = 15, reps: int = 8) -> dict:
    import oscillink_core.graph as graph
    from oscillink_core import rerank

    Y, psi = make_data(n)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    inside: dict[str, list[float]] = {"product": [], "top-k": []}
    original = graph.exact_knn

    def timed_knn(Yn_, k, *, topk=None):
        t0 = time.perf_counter()
        mark = []

        def timed_topk(*a):
            t1 = time.perf_counter()
            mark.append(t1 - t0)
            topk(*a)
            inside["top-k"].append(1e3 * (time.perf_counter() - t1))

        out = original(Yn_, k, topk=timed_topk)
        if len(mark) != 1:  # one block: the whole product, then its top-k
            raise RuntimeError(f"expected one product block at N = {n}, got {len(mark)}")
        inside["product"].append(1e3 * mark[0])
        return out

    graph.exact_knn = timed_knn
    try:
        parts = {"rerank": lambda: rerank(psi, Y, k=10, light_receipt=True, backend="numba"),
                 "Y @ Y.T back to back (the yardstick)": lambda: Y @ Y.T,
                 "unit rows @ their transpose, back to back": lambda: Yn @ Yn.T}
        for fn in parts.values():
            fn()
        inside["product"].clear()
        inside["top-k"].clear()
        times: dict[str, list[float]] = {name: [] for name in parts}
        for _ in range(rounds):
            for name, fn in parts.items():
                times[name].append(median_ms(fn, reps)[0])
    finally:
        graph.exact_knn = original
    ms = {name: float(np.median(v)) for name, v in times.items()}
    ms["kNN product inside rerank"] = float(np.median(inside["product"]))
    ms["top-k inside rerank"] = float(np.median(inside["top-k"]))
    yard = ms["Y @ Y.T back to back (the yardstick)"]
    return {"n": n, "calls_inside": len(inside["product"]), "ms": ms,
            "ratio_to_yardstick": {name: v / yard for name, v in ms.items()}}


def _sha256_gb_per_s() -> float:
    Y, _ = make_data(1000)
    buf = memoryview(np.ascontiguousarray(Y)).cast("B")
    ms = median_ms(lambda: hashlib.sha256(buf).digest(), 50)[0]
    return len(buf) / (ms / 1e3) / 1e9


def _thread_handoff_ms() -> float:
    pool = ThreadPoolExecutor(max_workers=1)
    pool.submit(lambda: None).result()
    try:
        return median_ms(lambda: pool.submit(lambda: None).result(), 200)[0]
    finally:
        pool.shutdown()


def blas_spin(n: int = 1000, waits_ms: tuple = (10, 50, 200), repeats: int = 5, idle_s: float = 1.0) -> dict:
    """Cores' worth of CPU the process uses while the calling thread sleeps ``wait`` ms, right
    after ``Y @ Y.T`` and after ``idle_s`` seconds with no BLAS call (median of ``repeats``)."""
    Y, _ = make_data(n)
    Y @ Y.T
    out: dict = {}
    for label, call in (("right after Y @ Y.T", True), (f"after {idle_s:g} s idle", False)):
        row = {}
        for w in waits_ms:
            busy = []
            for _ in range(repeats):
                time.sleep(idle_s)
                if call:
                    Y @ Y.T
                c0, t0 = time.process_time(), time.perf_counter()
                time.sleep(w / 1e3)
                busy.append((time.process_time() - c0) / (time.perf_counter() - t0))
            row[f"{w} ms"] = float(np.median(busy))
        out[label] = row
    return {"n": n, "cores_busy_while_sleeping": out}


def _pcg_iterations(M, F: np.ndarray, pinv, X0: np.ndarray, rtol: float, maxiter: int = 200) -> list[float]:
    """Plain block PCG (shared step lengths over all columns, as the kernel) in float64; the
    relative residual after each iteration, starting with X0's."""
    R = F - M @ X0
    ff = float(np.sum(F * F))
    hist = [float(np.sqrt(np.sum(R * R) / ff))]
    Z = pinv(R)
    P = Z.copy()
    rz = float(np.sum(R * Z))
    while hist[-1] > rtol and len(hist) <= maxiter:
        Q = M @ P
        a = rz / float(np.sum(P * Q))
        R -= a * Q
        hist.append(float(np.sqrt(np.sum(R * R) / ff)))
        Z = pinv(R)
        rz_new = float(np.sum(R * Z))
        P = Z + (rz_new / rz) * P
        rz = rz_new
    return hist


def alternatives(n: int = 1000, rounds: int = 15, reps: int = 8) -> dict:
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve_triangular

    from oscillink_core import Oscillink, _backend, graph

    Y, psi = make_data(n)
    lat = Oscillink(Y, backend="numba")
    lat.set_query(psi)
    lat.settle()
    Yn = lat.unit_rows
    k = lat.params.kneighbors
    default = graph._BLOCK_BYTES
    layouts = {"whole product, then its top-k (default)": default,
               "panels of 500 rows, each then its top-k": 4 * n * 500,
               "panels of 250 rows, each then its top-k": 4 * n * 250}
    ref = None
    times: dict[str, list[float]] = {name: [] for name in layouts}
    try:
        for name, block in layouts.items():
            graph._BLOCK_BYTES = block
            got = graph.exact_knn(Yn, k, topk=_backend.compiled_topk)
            if ref is None:
                ref = got
            elif not np.array_equal(ref[0], got[0]):  # similarities differ in the last bits (sum order)
                raise AssertionError(f"{name}: neighbours differ from the whole product's")
        for _ in range(rounds):
            for name, block in layouts.items():
                graph._BLOCK_BYTES = block
                times[name].append(median_ms(lambda: graph.exact_knn(Yn, k, topk=_backend.compiled_topk), reps)[0])
    finally:
        graph._BLOCK_BYTES = default
    knn_ms = {name: float(np.median(v)) for name, v in times.items()}

    M, diag = lat.system()
    M = sp.csr_array(M, dtype=np.float64)
    F = lat.rhs().astype(np.float64)
    dinv = (1.0 / diag)[:, None]
    off = M - sp.diags_array(M.diagonal())
    lower = sp.csr_array(sp.tril(M, format="csr"))
    upper = sp.csr_array(sp.triu(M, format="csr"))
    dmat = sp.diags_array(M.diagonal())

    def sgs(R):
        return spsolve_triangular(upper, dmat @ spsolve_triangular(lower, R, lower=True), lower=False)

    pre = {"Jacobi": lambda R: dinv * R,
           "two-term Neumann (the kernel's)": lambda R: dinv * R - dinv * (off @ (dinv * R)),
           "symmetric Gauss-Seidel": sgs}
    rtol = lat.params.rtol
    cg = {}
    for name, fn in pre.items():
        hist = _pcg_iterations(M, F, fn, dinv * F, rtol)
        cg[name] = {"iterations": len(hist) - 1, "relative_residuals": hist}
    return {"n": n, "knn_step_ms": knn_ms, "cg_to_rtol": {"rtol": rtol, "start": "Jacobi guess F / diag(M)",
                                                           "preconditioners": cg}}


_SECTIONS = ("first_call", "sha256_gb_per_s", "thread_handoff_ms", "helper_thread", "allocation", "budget",
             "blas_spin", "alternatives", "product_in_context")


def _print_sections(report: dict, names) -> None:
    if "first_call" in names:
        fc = report["first_call"]
        print(f"first call, empty numba cache: import {fc['empty_cache']['import_s']:.2f} s, "
              f"first rerank {fc['empty_cache']['first_rerank_s']:.2f} s")
        print(f"first call, filled cache:      import {fc['filled_cache']['import_s']:.2f} s, "
              f"first rerank {fc['filled_cache']['first_rerank_s']:.2f} s")
    if "sha256_gb_per_s" in names:
        print(f"SHA-256: {report['sha256_gb_per_s']:.2f} GB/s")
    if "thread_handoff_ms" in names:
        print(f"thread hand-off: {report['thread_handoff_ms']:.3f} ms")
    if "helper_thread" in names:
        for n, rows in report["helper_thread"].items():
            for label, r in rows.items():
                print(f"N = {n:>6} {label:<20} total {r['total_ms']:9.2f} ms  solve {r['solve_ms']:8.2f} ms")
    if "allocation" in names:
        for label, r in report["allocation"].items():
            print(f"N =   1000 {label:<40} {r['median_ms']:7.2f} ms  "
                  f"{r['minor_faults_per_call']:7.0f} page faults/call")
    if "budget" in names:
        b = report["budget"]
        print(f"where the time goes at N = {b['n']} (medians of interleaved rounds):")
        for name, v in b["ms"].items():
            print(f"  {name:<44} {v:7.3f} ms  {b['ratio_to_yardstick'][name]:5.2f}x Y @ Y.T")
        print(f"  everything but the kNN product: {b['all_but_the_product_ms']:.3f} ms = "
              f"{b['all_but_the_product_over_yardstick']:.2f}x Y @ Y.T (2x overall needs <= 1x)")
    if "blas_spin" in names:
        print("cores busy while the calling thread sleeps:")
        for label, row in report["blas_spin"]["cores_busy_while_sleeping"].items():
            print(f"  {label:<22} " + "  ".join(f"{w}: {v:4.2f}" for w, v in row.items()))
    if "alternatives" in names:
        a = report["alternatives"]
        print(f"kNN step (product + top-k) at N = {a['n']}:")
        for name, v in a["knn_step_ms"].items():
            print(f"  {name:<44} {v:7.3f} ms")
        print(f"CG iterations to rtol {a['cg_to_rtol']['rtol']:g}:")
        for name, r in a["cg_to_rtol"]["preconditioners"].items():
            print(f"  {name:<32} {r['iterations']:3d}")
    if "product_in_context" in names:
        c = report["product_in_context"]
        print(f"the kNN product as rerank meets it, N = {c['n']} ({c['calls_inside']} calls timed inside):")
        for name, v in c["ms"].items():
            print(f"  {name:<44} {v:7.3f} ms  {c['ratio_to_yardstick'][name]:5.2f}x Y @ Y.T")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "backend_notes.json"))
    ap.add_argument("--before", help="an older checkout to time beside this one (e.g. a git worktree)")
    ap.add_argument("--only", help="comma-separated sections to run and replace in the existing report: "
                    + ", ".join(_SECTIONS))
    args = ap.parse_args(argv)
    names = _SECTIONS if not args.only else tuple(x.strip() for x in args.only.split(","))
    unknown = sorted(set(names) - set(_SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {', '.join(_SECTIONS)}")

    command = "python benchmarks/backend_notes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report: dict = {"benchmark": "oscillink-core backend notes", "command": command, "machine": machine_info()}
    if args.only and Path(args.out).exists():
        report = json.loads(Path(args.out).read_text())
    prov = report.setdefault("provenance", {})
    rev = git_rev(Path(__file__).parent)
    runners = {
        "first_call": first_call,
        "sha256_gb_per_s": _sha256_gb_per_s,
        "thread_handoff_ms": _thread_handoff_ms,
        "helper_thread": lambda: {str(n): helper_thread(n, reps) for n, reps in ((1000, 40), (20000, 5))},
        "allocation": lambda: allocation_effect(before=args.before),
        "budget": budget,
        "blas_spin": blas_spin,
        "alternatives": alternatives,
        "product_in_context": product_in_context,
    }
    for name in names:
        report[name] = runners[name]()
        prov[name] = {"commit": rev, "command": command}
    _print_sections(report, names)
    write_report(args.out, report)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
