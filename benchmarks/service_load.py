"""Loopback load on ``oscillink serve``: throughput and latency percentiles, against in-process `rerank`.

Usage:  python benchmarks/service_load.py [--duration 20] [--concurrency 1,8,32] [--states memory,redis]
                                          [--endpoints vector,text] [--out benchmarks/results/service_load.json]

Setup: N = 100 candidates, D = 384. ``vector``: ``POST /v1/settle`` with Y (100 x 384 float32 values as
JSON), psi, ``bundle_k = 10`` and the full receipt. ``text``: ``POST /v1/rerank`` with a query and 100
candidate passages (examples/data/demo_corpus.jsonl, cycled), embedded by the server with the packaged
all-MiniLM-L6-v2. Each state (``memory``: one process, nothing else; ``redis``: a redis-server started
here on a loopback port) runs one ``oscillink serve`` process with one uvicorn worker, a key with no
limits, and the bundle cache is not involved (/v1/settle is never cached). For each concurrency an
asyncio client (httpx) keeps that many requests in flight for ``--duration`` seconds, after a short
warm-up; the requests started inside that window count (the last may finish after it), throughput =
completed / (last finish - window start), percentiles over those requests.

Baseline, measured in the same run: ``rerank(psi, Y, k=10)`` in this process (the vector endpoint's
work: graph, solve, bundle, receipt) and ``embed(query + 100 texts)`` + ``rerank`` (the text
endpoint's work). ``overhead_ratio`` = p50 at concurrency 1 / the in-process median: what HTTP, JSON
and the service's bookkeeping cost. The client runs on the same machine as the server, so at high
concurrency they compete for the CPU; on a shared machine every figure is load-dependent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N, D, K = 100, 384, 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OSCILLINK_")}
    e.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "integrations"), e.get("PYTHONPATH", "")]),
             HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return e


def cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "oscillink_core.app.cli", *args], env=env(), capture_output=True,
                       text=True, timeout=300)
    if r.returncode:
        raise SystemExit(r.stderr)
    return r.stdout


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode})")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("server not ready")


def percentiles(lat: list[float]) -> dict:
    a = np.asarray(lat) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


async def load(url: str, path: str, body: bytes, key: str, conc: int, duration: float, warmup: float,
               min_requests: int = 0) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        t_start = time.perf_counter()
        t_measure, t_end = t_start + warmup, t_start + warmup + duration

        async def worker():
            while True:
                t0 = time.perf_counter()
                # stop at the window's end, but not before min_requests were started inside it (slow
                # endpoints on a loaded machine would otherwise measure nothing)
                if t0 >= t_end and len(done) + inflight[0] >= min_requests:
                    return
                if t0 >= t_measure:
                    inflight[0] += 1
                try:
                    r = await c.post(path, content=body, headers=headers)
                    code = r.status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                t1 = time.perf_counter()
                if t0 >= t_measure:  # started inside the window (finishing may run past it)
                    inflight[0] -= 1
                    done.append(t1)
                    if code == 200:
                        lat.append(t1 - t0)
                    else:
                        errors[str(code)] = errors.get(str(code), 0) + 1

        done: list[float] = []
        inflight = [0]
        await asyncio.gather(*(worker() for _ in range(conc)))
    span = max(max(done) - t_measure, duration) if done else duration
    return {"concurrency": conc, "completed": len(lat), "errors": errors, "span_s": round(span, 2),
            "throughput_rps": round(len(lat) / span, 3), **(percentiles(lat) if lat else {})}


def baselines(Y, psi, texts, query, repeats: int) -> dict:
    from oscillink_core import rerank, warmup
    from oscillink_core.app.embeddings import embed

    warmup()
    rerank(psi, Y, k=K)
    embed([query, *texts])
    vec = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rerank(psi, Y, k=K)
        vec.append(time.perf_counter() - t0)
    txt = []
    for _ in range(max(repeats // 20, 3)):
        t0 = time.perf_counter()
        V = embed([query, *texts])
        rerank(V[0], V[1:], k=K)
        txt.append(time.perf_counter() - t0)
    return {"vector": {"median_ms": round(1e3 * statistics.median(vec), 3), "repeats": len(vec)},
            "text": {"median_ms": round(1e3 * statistics.median(txt), 3), "repeats": len(txt)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--text-concurrency", default=None,
                    help="concurrency levels for the text endpoint (default: --concurrency)")
    ap.add_argument("--states", default="memory,redis")
    ap.add_argument("--endpoints", default="vector,text")
    ap.add_argument("--min-requests", type=int, default=1,
                    help="measured requests per point at least (a point runs past --duration until then)")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the measured (state, endpoint, concurrency) points in --out")
    ap.add_argument("--repeats", type=int, default=100, help="in-process baseline repeats")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "service_load.json"))
    a = ap.parse_args()
    concs = [int(c) for c in a.concurrency.split(",")]
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(N, D)).astype(np.float32)
    psi = (Y[0] + 0.3 * rng.normal(size=D)).astype(np.float32)
    rows = [json.loads(line) for line in (ROOT / "examples/data/demo_corpus.jsonl").read_text("utf-8").splitlines()]
    texts = [rows[i % len(rows)]["text"] + ("" if i < len(rows) else f" (copy {i // len(rows)})") for i in range(N)]
    query = "How do honeybees tell other bees where flowers are?"
    bodies = {
        "vector": ("/v1/settle", json.dumps({"Y": Y.tolist(), "psi": psi.tolist(),
                                             "options": {"bundle_k": K, "include_receipt": True}}).encode()),
        "text": ("/v1/rerank", json.dumps({"query": query, "candidates": texts, "k": K}).encode()),
    }
    base = baselines(Y, psi, texts, query, a.repeats)
    print(f"in-process: rerank {base['vector']['median_ms']} ms, embed+rerank {base['text']['median_ms']} ms")
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="oscillink-bench-"))
    redis_proc = None
    try:
        for state in a.states.split(","):
            if state == "redis":
                port = free_port()
                redis_proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port),
                                               "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                              stdout=subprocess.DEVNULL)
                time.sleep(0.5)
                sargs = ["--state", f"redis://127.0.0.1:{port}/0"]
            else:
                sargs = ["--keys-file", str(tmp / "keys.json")]
            key = cli("keys", "create", "--name", "bench", *sargs).strip()
            sport = free_port()
            url = f"http://127.0.0.1:{sport}"
            log = open(tmp / f"serve-{state}.log", "w")
            srv = subprocess.Popen([sys.executable, "-m", "oscillink_core.app.cli", "serve", "--port", str(sport),
                                    "--log-level", "warning", *sargs], env=env(), stdout=log,
                                   stderr=subprocess.STDOUT)
            try:
                wait_ready(url, srv)
                for ep in a.endpoints.split(","):
                    path, body = bodies[ep]
                    levels = [int(c) for c in a.text_concurrency.split(",")] \
                        if (ep == "text" and a.text_concurrency) else concs
                    for conc in levels:
                        r = asyncio.run(load(url, path, body, key, conc, a.duration, a.warmup, a.min_requests))
                        r = {"state": state, "endpoint": ep, "path": path, **r}
                        if conc == 1 and "p50_ms" in r:
                            r["overhead_ratio"] = round(r["p50_ms"] / base[ep]["median_ms"], 2)
                        results.append(r)
                        print(f"{state:6s} {ep:6s} c={conc:<3d} {r['throughput_rps']:8.1f} req/s  "
                              f"p50 {r.get('p50_ms', '-')} p95 {r.get('p95_ms', '-')} p99 {r.get('p99_ms', '-')} ms"
                              f"{'  errors ' + str(r['errors']) if r['errors'] else ''}", flush=True)
            finally:
                srv.terminate()
                srv.wait(30)
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(30)
                redis_proc = None
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"benchmark": "service_load", "N": N, "D": D, "k": K, "duration_s": a.duration, "warmup_s": a.warmup,
           "workers": 1, "in_process": base, "points": results,
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
           "command": "python benchmarks/service_load.py " + " ".join(sys.argv[1:])}
    if a.merge and Path(a.out).exists():
        old = json.loads(Path(a.out).read_text("utf-8"))
        new_keys = {(p["state"], p["endpoint"], p["concurrency"]) for p in results}
        kept = [p for p in old["points"] if (p["state"], p["endpoint"], p["concurrency"]) not in new_keys]
        out["points"] = kept + results
        out["runs"] = [*old.get("runs", [{"command": old.get("command"), "in_process": old.get("in_process"),
                                          "machine": old.get("machine")}]),
                       {"command": out["command"], "in_process": base, "machine": out["machine"]}]
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
