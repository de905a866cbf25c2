"""Speed and memory of the core: graph + solve + bundle + light receipt, one query.

Usage:  python benchmarks/speed.py [--sizes 100,1000,20000,200000] [--backends numba,numpy]
                                  [--repeats N] [--out benchmarks/results/speed.json]

Each size runs in a fresh subprocess so peak RSS (ru_maxrss) is that size's own. Inputs are
unit-norm clustered embeddings, D = 384, k = 6. For each size we report the median of
repeated runs of `rerank(..., light_receipt=True)`, the CG iteration count, and reference
timings measured in the same process: the dense product Y @ Y.T (N <= 20,000) and, for
context, plain cosine top-k (Y @ psi + argpartition). Every size runs on each backend
(the compiled numba one, the default, and the numpy one as the baseline measured in the same
run; the numpy baseline is skipped above N = 20,000, where it takes minutes); the table gives
the numpy / numba time ratio. Timings on a shared virtual machine drift noticeably from one
minute to the next, so sizes up to 1,000 are measured in ``--runs`` separate processes (default
3, interleaved across backends): the table reports the median of the runs' medians and the
range across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TARGETS_MS = {100: 1.0, 1000: 10.0, 20000: 2000.0, 200000: 60000.0}
TARGETS_MB = {20000: 1024.0, 200000: 4096.0}


def make_data(n: int, d: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_centres = max(4, n // 50)
    centres = rng.normal(size=(n_centres, d)).astype(np.float32)
    Y = centres[rng.integers(0, n_centres, size=n)] + 0.8 * rng.normal(size=(n, d)).astype(np.float32)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    psi = Y[:5].mean(axis=0)
    return np.ascontiguousarray(Y, dtype=np.float32), psi


def write_report(path: str | Path, report: dict) -> None:
    """Write a benchmark's JSON report (creating its folder) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def machine_info(**extra) -> dict:
    """The machine block of a benchmark's JSON report."""
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), **extra}


def git_rev(path: str | Path) -> str:
    """Short commit of the checkout holding ``path`` ("" when git cannot tell)."""
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times)), times


def run_one(n: int, repeats: int, backend: str) -> dict:
    from oscillink_core import rerank

    Y, psi = make_data(n)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = rerank(psi, Y, k=10, light_receipt=True, backend=backend)  # warm-up (imports, compiled kernels)
    stages: list[dict] = []

    def call():
        stages.append(rerank(psi, Y, k=10, light_receipt=True, backend=backend).timings)

    med, times = median_ms(call, repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"n": n, "backend": res.receipt["solver"]["backend"], "d": Y.shape[1], "k": 6, "repeats": repeats,
           "median_ms": med,
           "min_ms": float(min(times)), "cg_iterations": res.timings["cg_iterations"],
           "knn": res.receipt["graph"]["method"], "edges": res.receipt["graph"]["edges"],
           "stage_ms": {k: float(np.median([t[k] for t in stages])) for k in res.timings
                        if k.endswith("_ms") and k != "total_ms"},
           "peak_rss_mb": peak_mb, "rss_before_mb": rss_before}
    if n <= 20000:
        dense_med, _ = median_ms(lambda: Y @ Y.T, max(3, min(repeats, 20)))
        out["dense_YYt_ms"] = dense_med
        out["ratio_to_dense"] = med / dense_med
    cos_med, _ = median_ms(lambda: np.argpartition(-(Y @ psi), 10)[:10], max(3, repeats))
    out["cosine_topk_ms"] = cos_med
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,20000,200000")
    ap.add_argument("--backends", default="numba,numpy", help="backends to time (numpy skipped above N = 20,000)")
    ap.add_argument("--repeats", type=int, default=0, help="0: automatic per size")
    ap.add_argument("--runs", type=int, default=5, help="processes per size up to N = 1,000 (larger: 1)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed.json"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        reps = args.repeats or {100: 200, 1000: 50, 20000: 5}.get(args.one, 3)
        print(json.dumps(run_one(args.one, reps, args.backend)))
        return 0
    from oscillink_core._backend import available_backends

    backends = [b for b in args.backends.split(",") if b in available_backends()]
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        runs: dict[str, list[dict]] = {}
        for _ in range(args.runs if n <= 1000 else 1):
            for b in backends:
                if b == "numpy" and n > 20000 and len(backends) > 1:
                    continue
                cmd = [sys.executable, __file__, "--one", str(n), "--backend", b] + (
                    ["--repeats", str(args.repeats)] if args.repeats else [])
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs.setdefault(b, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
        for rs in runs.values():
            meds = [r["median_ms"] for r in rs]
            row = sorted(rs, key=lambda r: r["median_ms"])[len(rs) // 2]  # the median run
            row = {**row, "run_medians_ms": meds, "median_ms": float(np.median(meds))}
            if "dense_YYt_ms" in row:
                row["ratio_to_dense"] = row["median_ms"] / row["dense_YYt_ms"]
            rows.append(row)
    numpy_ms = {r["n"]: r["median_ms"] for r in rows if r["backend"] == "numpy"}
    for r in rows:
        if r["backend"] != "numpy" and r["n"] in numpy_ms:
            r["numpy_over_this"] = numpy_ms[r["n"]] / r["median_ms"]
    hdr = (f"{'N':>8} {'backend':>8} {'median ms':>10} {'runs':>13} {'target ms':>10} {'YY^T ms':>9} {'ratio':>6} "
           f"{'np/this':>7} {'CG it':>5} {'kNN':>9} {'peak MB':>8} {'target MB':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        n = r["n"]
        span = f"{min(r['run_medians_ms']):.3g}-{max(r['run_medians_ms']):.3g}"
        print(f"{n:>8} {r['backend']:>8} {r['median_ms']:>10.2f} {span:>13} {TARGETS_MS.get(n, float('nan')):>10.0f} "
              f"{r.get('dense_YYt_ms', float('nan')):>9.2f} {r.get('ratio_to_dense', float('nan')):>6.2f} "
              f"{r.get('numpy_over_this', float('nan')):>7.2f} "
              f"{r['cg_iterations']:>5} {r['knn']:>9} {r['peak_rss_mb']:>8.0f} {TARGETS_MB.get(n, float('nan')):>9.0f}")
    report = {"benchmark": "oscillink-core speed",
              "command": "python benchmarks/speed.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine_info(processor=platform.processor()),
              "numpy": np.__version__, "targets_ms": TARGETS_MS, "targets_mb": TARGETS_MB, "rows": rows}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
