"""The published ``oscillink`` 0.1.x package against this one: same inputs, same run, interleaved.

Usage:  python benchmarks/compare_published.py [--sizes 100,200,1000] [--rounds 15] [--per-round 4]
                                               [--version 0.1.13] [--published-venv DIR]
                                               [--published-src DIR] [--out benchmarks/results/compare_published.json]

What is timed, per size N (D = 384, unit-norm clustered embeddings from ``speed.make_data``,
kNN k = 6, a bundle of 10, light receipts, each package with its own default energy parameters):

* published: ``lat = OscillinkLattice(Y, kneighbors=6); lat.set_receipt_detail("light");
  lat.set_query(psi); lat.settle(); lat.bundle(k=10); lat.receipt()`` (the sequence of its README);
* this package: ``rerank(psi, Y, k=10, light_receipt=True)`` (default backend, after ``warmup()``).

Each package runs in its own worker process with its own interpreter (the published one in an
isolated virtualenv), both started before timing begins and fed the same arrays from one file.
The driver alternates them in rounds (``--per-round`` calls each, the order swapped every round),
so both meet the same machine load; the report gives each side's median wall time over all
calls, the ratio of the medians, the median and range of the per-round ratios, and the ratio of
the median CPU times (process time of the worker, all its threads), which a loaded machine
disturbs less than wall time. Both workers run with one BLAS thread by default
(``--blas-threads``): on a small shared machine, multi-threaded BLAS waits on descheduled
threads and adds tens of milliseconds per call to both sides.

The published package is installed from the package index into ``.cache/published_oscillink/``
(git-ignored), or taken from ``--published-venv``. Its wheels (0.1.7 to 0.1.13 at the time of
writing) ship ``oscillink/__init__.py`` and ``cli.py`` without the ``oscillink/core`` package they
import, so ``import oscillink`` fails. In that case the worker runs the same release from its
source tree (``--published-src DIR``: a checkout of the project named in the wheel's
``Project-URL: Source`` at tag ``v<version>``; by default ``.cache/published_oscillink/src-<version>``;
the script downloads nothing but the wheel), placed ahead of the wheel on ``PYTHONPATH``; the files the wheel
does ship are checked to be identical to the source tree's (line ends aside: the wheels carry
CRLF), and the source tree's digest is recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / ".cache" / "published_oscillink"
BUNDLE_K = 10
KNEIGHBORS = 6
D = 384
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------------------------------- worker
def _published_call(Y: np.ndarray, psi: np.ndarray):
    from oscillink import OscillinkLattice

    def call():
        lat = OscillinkLattice(Y, kneighbors=KNEIGHBORS)
        lat.set_receipt_detail("light")
        lat.set_query(psi)
        lat.settle()
        bundle = lat.bundle(k=BUNDLE_K)
        rec = lat.receipt()
        return [int(b["id"]) for b in bundle], {"settle_iters": lat.last.get("iters"),
                                                 "ustar_iters": lat.last_ustar.get("iters"),
                                                 "deltaH_total": float(rec["deltaH_total"])}
    return call


def _this_call(Y: np.ndarray, psi: np.ndarray):
    from oscillink_core import rerank, warmup

    warmup()  # the default backend answers on numpy until numba's kernels are loaded: time the loaded state

    def call():
        res = rerank(psi, Y, k=BUNDLE_K, light_receipt=True)
        return [int(i) for i in res.indices], {"cg_iterations": res.receipt["solver"]["iterations"],
                                               "backend": res.receipt["solver"]["backend"],
                                               "deltaH": res.receipt["energy"]["deltaH"]}
    return call


def worker(kind: str, data: str) -> int:
    """Load the arrays, make one call (imports, compilation) and answer ``N`` lines with N timed calls."""
    arrays = np.load(data)
    Y, psi = arrays["Y"], arrays["psi"]
    call = _published_call(Y, psi) if kind == "published" else _this_call(Y, psi)
    if kind == "published":
        import oscillink as pkg
        version = pkg.__version__
    else:
        import oscillink_core as pkg
        version = pkg.__version__
    t0 = time.perf_counter()
    ids, info = call()
    first_ms = 1e3 * (time.perf_counter() - t0)
    hello = {"kind": kind, "package": pkg.__name__, "version": version, "file": pkg.__file__,
             "python": sys.version.split()[0], "numpy": np.__version__, "first_call_ms": first_ms,
             "top_ids": ids, "info": info}
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        n = int(line)
        times, cpu = [], []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            call()
            times.append(1e3 * (time.perf_counter() - t0))
            cpu.append(1e3 * (time.process_time() - c0))
        print(json.dumps({"ms": times, "cpu_ms": cpu,
                          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
    return 0


class Worker:
    """A worker process answering timing requests over its stdin/stdout."""

    def __init__(self, python: str, kind: str, data: Path, env: dict):
        self.kind = kind
        self.proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--worker", kind, "--data", str(data)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the {self.kind} worker exited (code {code}) before answering; see its stderr above")
        return json.loads(line)

    def time(self, n: int) -> dict:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ------------------------------------------------------------------------------ the published venv
def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_published_venv(version: str, venv: Path | None) -> Path:
    """An isolated virtualenv with ``oscillink==version`` installed (created under .cache/ if needed)."""
    if venv is not None:
        if not _venv_python(venv).exists():
            raise SystemExit(f"--published-venv {venv}: no bin/python in it")
        return venv
    venv = CACHE / f"venv-{version}"
    py = _venv_python(venv)
    installed = py.exists() and _run([str(py), "-c", "import importlib.metadata as m; "
                                      f"assert m.version('oscillink') == {version!r}"]).returncode == 0
    if not installed:
        print(f"installing oscillink=={version} into {venv} ...", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"oscillink=={version}"], check=True)
    return venv


def _site_file(py: Path, rel: str) -> Path | None:
    out = _run([str(py), "-c", "import importlib.metadata as m, sys; d = m.distribution('oscillink'); "
                f"print(d.locate_file({rel!r}))"])
    p = Path(out.stdout.strip()) if out.returncode == 0 else None
    return p if p is not None and p.is_file() else None


def _metadata(py: Path) -> dict:
    out = _run([str(py), "-c", "import importlib.metadata as m, json; d = m.distribution('oscillink'); "
                "print(json.dumps({'version': d.version, 'urls': d.metadata.get_all('Project-URL') or [], "
                "'files': [str(f) for f in d.files or []]}))"], check=True)
    return json.loads(out.stdout)


def _text(path: Path) -> bytes:
    """File bytes with CRLF line ends as LF (the published wheels were built from a CRLF checkout)."""
    return path.read_bytes().replace(b"\r\n", b"\n")


def _tree_digest(src: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((src / "oscillink").rglob("*.py")):
        h.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def check_source_tree(src: Path, installed: dict[str, Path | None], version: str) -> None:
    """Exit unless ``src`` holds ``oscillink/core/`` and every file the wheel installed, with the same text."""
    if not (src / "oscillink" / "core").is_dir():
        raise SystemExit(f"--published-src {src}: no oscillink/core/ in it")
    mismatched = [rel for rel, path in installed.items()
                  if path is None or not (src / rel).is_file() or _text(path) != _text(src / rel)]
    if mismatched:
        raise SystemExit(f"{src} is not the source of the installed oscillink {version}: {mismatched} differ")


def published_environment(version: str, venv: Path | None, src: Path | None) -> tuple[str, dict, dict]:
    """(python, env, provenance) for the published worker."""
    venv = ensure_published_venv(version, venv)
    py = _venv_python(venv)
    meta = _metadata(py)
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    prov: dict = {"venv": str(venv), "installed_version": meta["version"],
                  "wheel_files": sorted(f for f in meta["files"] if f.startswith("oscillink/") and f.endswith(".py"))}
    probe = _run([str(py), "-c", "import oscillink; oscillink.OscillinkLattice"], env=env)
    if probe.returncode == 0:
        prov["runs_from"] = "the installed wheel"
        return str(py), env, prov
    prov["wheel_import_error"] = (probe.stderr.strip().splitlines() or ["?"])[-1]
    print(f"the installed oscillink {meta['version']} does not import ({prov['wheel_import_error']}); "
          "running the same release from its source tree", flush=True)
    if src is None:
        src = CACHE / f"src-{version}"
        if not (src / "oscillink").is_dir():
            url = next((u.split(",", 1)[1].strip() for u in meta["urls"] if u.lower().startswith("source")), None)
            raise SystemExit(f"pass --published-src DIR: a checkout of the release's source "
                             f"({url or 'the wheel names none'}) at tag v{version}, or put one at {src}; "
                             "this script downloads nothing but the wheel")
    src = src.resolve()
    check_source_tree(src, {rel: _site_file(py, rel) for rel in prov["wheel_files"]}, meta["version"])
    env["PYTHONPATH"] = str(src)
    prov.update(runs_from="source tree of the same release, ahead of the wheel on PYTHONPATH", source_tree=str(src),
                source_files_identical_to_wheel_modulo_crlf=prov["wheel_files"], source_tree_sha256=_tree_digest(src))
    return str(py), env, prov


# ---------------------------------------------------------------------------------------- driver
def compare_size(n: int, published: tuple[str, dict], this: tuple[str, dict], rounds: int, per_round: int,
                 tmp: Path) -> dict:
    sys.path.insert(0, str(HERE))
    from speed import make_data

    Y, psi = make_data(n, D)
    data = tmp / f"data_{n}.npz"
    np.savez(data, Y=Y, psi=psi)
    workers = {"published": Worker(published[0], "published", data, published[1]),
               "this": Worker(this[0], "this", data, this[1])}
    ms: dict[str, list[float]] = {"published": [], "this": []}
    cpu: dict[str, list[float]] = {"published": [], "this": []}
    round_ratios = []
    peak = {}
    try:
        for r in range(rounds):
            order = ("published", "this") if r % 2 == 0 else ("this", "published")
            got = {}
            for kind in order:
                ans = workers[kind].time(per_round)
                got[kind] = ans["ms"]
                ms[kind] += ans["ms"]
                cpu[kind] += ans["cpu_ms"]
                peak[kind] = ans["peak_rss_mb"]
            round_ratios.append(float(np.median(got["published"]) / np.median(got["this"])))
    finally:
        for w in workers.values():
            w.close()
    med = {k: float(np.median(v)) for k, v in ms.items()}
    cpu_med = {k: float(np.median(v)) for k, v in cpu.items()}
    hello = {k: w.hello for k, w in workers.items()}
    overlap = len(set(hello["published"]["top_ids"]) & set(hello["this"]["top_ids"]))
    return {"n": n, "d": D, "kneighbors": KNEIGHBORS, "bundle_k": BUNDLE_K, "rounds": rounds, "per_round": per_round,
            "calls_each": rounds * per_round,
            "published": {"median_ms": med["published"], "p10_ms": float(np.percentile(ms["published"], 10)),
                          "p90_ms": float(np.percentile(ms["published"], 90)), "cpu_median_ms": cpu_med["published"],
                          "peak_rss_mb": peak["published"],
                          **{k: hello["published"][k] for k in ("version", "file", "python", "numpy", "first_call_ms",
                                                                "info")}},
            "this": {"median_ms": med["this"], "p10_ms": float(np.percentile(ms["this"], 10)),
                     "p90_ms": float(np.percentile(ms["this"], 90)), "cpu_median_ms": cpu_med["this"],
                          "peak_rss_mb": peak["this"],
                     **{k: hello["this"][k] for k in ("version", "file", "python", "numpy", "first_call_ms", "info")}},
            "ratio_of_medians": med["published"] / med["this"],
            "cpu_ratio_of_medians": cpu_med["published"] / cpu_med["this"],
            "median_round_ratio": float(np.median(round_ratios)),
            "round_ratio_range": [min(round_ratios), max(round_ratios)],
            "top10_overlap": overlap}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,200,1000")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=4)
    ap.add_argument("--version", default="0.1.13", help="published oscillink version (default 0.1.13)")
    ap.add_argument("--published-venv", type=Path, help="an existing virtualenv with oscillink installed")
    ap.add_argument("--published-src", type=Path, help="source tree of that release (when its wheel does not import)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS/OpenMP threads in both workers (default 1; 0 = the libraries' defaults)")
    ap.add_argument("--out", default=str(HERE / "results" / "compare_published.json"))
    ap.add_argument("--worker", choices=("published", "this"), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.data)
    if args.rounds < 1 or args.per_round < 1:
        ap.error("--rounds and --per-round must be >= 1")
    sys.path.insert(0, str(HERE))
    from speed import git_rev, machine_info, write_report

    py, env, prov = published_environment(args.version, args.published_venv, args.published_src)
    this_env = {**os.environ}
    if args.blas_threads > 0:
        for e in (env, this_env):
            e.update({v: str(args.blas_threads) for v in THREAD_VARS})
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare_published_") as tmp:
        for n in [int(x) for x in args.sizes.split(",")]:
            print(f"N = {n}: {args.rounds} rounds x {args.per_round} calls each, interleaved ...", flush=True)
            rows.append(compare_size(n, (py, env), (sys.executable, this_env), args.rounds, args.per_round, Path(tmp)))
    hdr = (f"{'N':>6} {'published ms':>13} {'p10-p90':>15} {'this ms':>9} {'p10-p90':>13} {'ratio':>6} "
           f"{'round ratios':>14} {'CPU ratio':>9} {'top-10 shared':>13}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        p, t = r["published"], r["this"]
        print(f"{r['n']:>6} {p['median_ms']:>13.2f} {p['p10_ms']:>7.1f}-{p['p90_ms']:<7.1f} {t['median_ms']:>9.2f} "
              f"{t['p10_ms']:>6.2f}-{t['p90_ms']:<6.2f} {r['ratio_of_medians']:>6.1f} "
              f"{r['round_ratio_range'][0]:>6.1f}-{r['round_ratio_range'][1]:<7.1f} {r['cpu_ratio_of_medians']:>9.1f} "
              f"{r['top10_overlap']:>13}")
    load = os.getloadavg()
    cli_args = argv if argv is not None else sys.argv[1:]
    report = {"benchmark": "published oscillink vs oscillink-core, interleaved in one run",
              "command": "python benchmarks/compare_published.py " + " ".join(cli_args),
              "machine": machine_info(loadavg_at_end=list(load)), "git_commit": git_rev(ROOT),
              "calls": {"published": "OscillinkLattice(Y, kneighbors=6); set_receipt_detail('light'); set_query(psi); "
                                     "settle(); bundle(k=10); receipt()",
                        "this": "rerank(psi, Y, k=10, light_receipt=True)"},
              "data": "unit-norm clustered synthetic embeddings (benchmarks/speed.py make_data), D = 384",
              "blas_threads": args.blas_threads or "library defaults",
              "thread_env": {v: this_env.get(v) for v in THREAD_VARS},
              "published": prov, "rows": rows}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
