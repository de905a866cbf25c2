"""This checkout's ``rerank`` against an older checkout's, in one process, interleaved.

Usage:  git worktree add /tmp/before <commit>
        python benchmarks/compare_checkouts.py --before /tmp/before [--sizes 100,200,1000]

Timings on this VM drift by tens of percent from one minute to the next, so two benchmark
invocations minutes apart cannot tell a 10 % change from drift. Here both packages are loaded
into the same process (the older one under another module name) and called in alternating
rounds on the same inputs (`benchmarks/speed.py`'s generator, D = 384, k = 10, light receipt,
default backend), so drift hits both alike. Prints a table and writes
``benchmarks/results/compare_checkouts.json``: per size, the median call time of each and their
ratio, the stage medians, and minor page faults per call (each package's calls run while the
other's allocations come and go, an allocator state a real application also produces).
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import git_rev, machine_info, make_data, write_report  # noqa: E402

_STAGES = ("validate_ms", "graph_ms", "solve_ms", "bundle_ms", "receipt_ms")


def load_checkout(path: str, name: str = "oscillink_core_before"):
    """Import ``<path>/oscillink_core`` as the module ``name`` (beside the installed package)."""
    pkg = Path(path) / "oscillink_core"
    spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"no oscillink_core package under {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def compare(before, this, n: int, rounds: int, per_round: int) -> dict:
    Y, psi = make_data(n)
    mods = {"before": before, "this": this}
    backends = {}
    for label, mod in mods.items():
        for _ in range(3):  # imports, compiled kernels, caches
            res = mod.rerank(psi, Y, k=10, light_receipt=True)
        backends[label] = res.receipt["solver"]["backend"]
    times: dict[str, list[float]] = {label: [] for label in mods}
    stages: dict[str, list[dict]] = {label: [] for label in mods}
    faults = {label: 0 for label in mods}
    for r in range(rounds):
        order = ("before", "this") if r % 2 == 0 else ("this", "before")
        for label in order:
            mod = mods[label]
            for _ in range(per_round):
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                res = mod.rerank(psi, Y, k=10, light_receipt=True)
                times[label].append(1e3 * (time.perf_counter() - t0))
                faults[label] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
                stages[label].append(res.timings)
    out = {"n": n, "backend": backends, "calls_each": rounds * per_round}
    for label in mods:
        out[label] = {"median_ms": float(np.median(times[label])),
                      "minor_faults_per_call": faults[label] / len(times[label]),
                      "stage_ms": {s: float(np.median([t[s] for t in stages[label]])) for s in _STAGES}}
    out["this_over_before"] = out["this"]["median_ms"] / out["before"]["median_ms"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="directory of an older checkout (e.g. a git worktree)")
    ap.add_argument("--sizes", default="100,200,1000")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "compare_checkouts.json"))
    args = ap.parse_args(argv)

    before = load_checkout(args.before)
    import oscillink_core as this

    if Path(before.__file__).resolve().parent == Path(this.__file__).resolve().parent:
        raise SystemExit("--before points at this checkout")
    rev = git_rev(args.before) or args.before
    here = git_rev(Path(__file__).resolve().parent)
    rows = [compare(before, this, int(n), args.rounds, args.per_round) for n in args.sizes.split(",")]
    print(f"before = {rev}, this = {here} (plus uncommitted changes, if any); median ms per rerank")
    hdr = (f"{'N':>6} {'before':>8} {'this':>8} {'this/before':>11} {'faults/call':>14}   "
           f"stages this (validate/graph/solve/bundle/receipt)")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        st = "/".join(f"{r['this']['stage_ms'][s]:.2f}" for s in _STAGES)
        fl = f"{r['before']['minor_faults_per_call']:.0f} / {r['this']['minor_faults_per_call']:.0f}"
        print(f"{r['n']:>6} {r['before']['median_ms']:>8.2f} {r['this']['median_ms']:>8.2f} "
              f"{r['this_over_before']:>11.2f} {fl:>14}   {st}")
    report = {"benchmark": "oscillink-core checkout comparison",
              "command": "python benchmarks/compare_checkouts.py " + " ".join(argv or sys.argv[1:]),
              "before": rev, "this": here,
              "machine": machine_info(),
              "rows": rows}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
