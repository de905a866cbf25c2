"""The first call of a fresh process: import, first rerank, the calls after it.

Usage:  python benchmarks/first_call.py [--repeats 3] [--cold-numba-repeats 1]
                                        [--out benchmarks/results/first_call.json]

Every measurement runs in a fresh subprocess with its own ``NUMBA_CACHE_DIR``: an empty
temporary folder ("cold": what a new container, CI job or virtualenv sees) or one filled by an
earlier process ("warm"). Inputs: N = 200 candidates, D = 384, k = 10, light receipts. Each
process times ``import oscillink_core``, the first `rerank`, the next 20 calls (recording which
backend answered each), then waits for the compiled kernels and times 5 more calls.

Modes:
* ``auto``: the default backend; it never waits for compilation (numpy answers while numba's
  kernels load or compile on a background thread).
* ``numba``: ``backend="numba"`` asked explicitly: the first call waits for the kernels (what
  every first call did before the default stopped waiting); the baseline, measured in the same run.

Prints a table and writes JSON; nothing here is asserted (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N, D, K = 200, 384, 10

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import oscillink_core
from oscillink_core import rerank
from oscillink_core import _kernels
t_import = time.perf_counter() - t0
mode, n, d, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
Y = rng.normal(size=(n, d)).astype(np.float32)
Y /= np.linalg.norm(Y, axis=1, keepdims=True)
psi = Y[:5].mean(axis=0)
backend = None if mode == "auto" else mode

def call(q):
    t = time.perf_counter()
    res = rerank(q, Y, k=k, light_receipt=True, backend=backend)
    return 1e3 * (time.perf_counter() - t), res.receipt["solver"]["backend"]

first_ms, first_backend = call(psi)
nxt = [call(Y[i]) for i in range(1, 21)]
t = time.perf_counter()
th = _kernels._COMPILER
if th is not None:
    th.join()
wait_s = time.perf_counter() - t
since_start_s = time.perf_counter() - t0
after = [call(Y[i]) for i in range(21, 26)]
print(json.dumps({"import_ms": 1e3 * t_import, "first_ms": first_ms, "first_backend": first_backend,
                  "next_ms": [m for m, _ in nxt], "next_backends": [b for _, b in nxt],
                  "compiled_ready": _kernels.compiled_ready(), "background_wait_s": wait_s,
                  "ready_after_s": since_start_s if th is not None else None,
                  "after_ms": [m for m, _ in after], "after_backends": [b for _, b in after]}))
"""


def run_child(mode: str, cache_dir: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("OSCILLINK_BACKEND", None)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(N), str(D), str(K)], env=env,
                         capture_output=True, text=True, cwd=str(ROOT))
    if out.returncode != 0:
        raise RuntimeError(f"the {mode} child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - t
    return row


def _median(v: list[float]) -> float:
    s = sorted(v)
    m = len(s) // 2
    return s[m] if len(s) % 2 else 0.5 * (s[m - 1] + s[m])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="processes per (mode, cache) cell")
    ap.add_argument("--cold-numba-repeats", type=int, default=1,
                    help="processes for explicit numba with a cold cache (each compiles for ~15-40 s)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "first_call.json"))
    args = ap.parse_args(argv)

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="osc-numba-warm-") as warm:
        # fill the warm cache once (a process that compiles every kernel and exits)
        env = {**os.environ, "NUMBA_CACHE_DIR": warm, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-c", "import oscillink_core; oscillink_core.warmup('numba')"],
                       env=env, check=True, cwd=str(ROOT))
        plan = [("auto", "cold")] * args.repeats + [("auto", "warm")] * args.repeats + \
               [("numba", "warm")] * args.repeats + [("numba", "cold")] * args.cold_numba_repeats
        for mode, cache in plan:
            if cache == "cold":
                with tempfile.TemporaryDirectory(prefix="osc-numba-cold-") as cold:
                    row = run_child(mode, cold)
            else:
                row = run_child(mode, warm)
            row.update(mode=mode, cache=cache)
            runs.append(row)
            print(f"  {mode:>5} {cache:>4}: first {row['first_ms']:9.1f} ms on {row['first_backend']}", flush=True)

    cells = []
    for mode, cache in dict.fromkeys((r["mode"], r["cache"]) for r in runs):
        rs = [r for r in runs if (r["mode"], r["cache"]) == (mode, cache)]
        nxt = [m for r in rs for m in r["next_ms"]]
        aft = [m for r in rs for m in r["after_ms"]]
        ready = [r["ready_after_s"] for r in rs if r["ready_after_s"] is not None]
        cells.append({
            "mode": mode, "cache": cache, "processes": len(rs),
            "import_ms": _median([r["import_ms"] for r in rs]),
            "first_ms": _median([r["first_ms"] for r in rs]),
            "first_ms_max": max(r["first_ms"] for r in rs),
            "first_backend": sorted({r["first_backend"] for r in rs}),
            "next_ms_median": _median(nxt), "next_ms_max": max(nxt),
            "next_numba_share": sum(b == "numba" for r in rs for b in r["next_backends"]) / len(nxt),
            "compiled_after_s": _median(ready) if ready else None,
            "after_ready_ms_median": _median(aft),
            "after_ready_backend": sorted({b for r in rs for b in r["after_backends"]}),
        })
    base = {c["cache"]: c["first_ms"] for c in cells if c["mode"] == "numba"}
    for c in cells:
        c["first_call_ratio_to_explicit_numba"] = (c["first_ms"] / base[c["cache"]]) if c["cache"] in base else None

    hdr = (f"{'mode':>5} {'cache':>5} {'procs':>5} {'import ms':>9} {'first ms':>9} {'(max)':>8} {'first on':>9} "
           f"{'next ms':>8} {'(max)':>8} {'next on numba':>13} {'numba ready s':>13} {'then ms':>8}")
    print(hdr)
    for c in cells:
        ready = f"{c['compiled_after_s']:.1f}" if c["compiled_after_s"] is not None else "-"
        print(f"{c['mode']:>5} {c['cache']:>5} {c['processes']:>5} {c['import_ms']:>9.1f} {c['first_ms']:>9.1f} "
              f"{c['first_ms_max']:>8.1f} {'/'.join(c['first_backend']):>9} {c['next_ms_median']:>8.2f} "
              f"{c['next_ms_max']:>8.1f} {c['next_numba_share']:>13.0%} {ready:>13} {c['after_ready_ms_median']:>8.2f}")
    out = {"n": N, "d": D, "k": K, "light_receipt": True, "machine": {
        "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "cells": cells, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
