"""How long Ctrl-C takes to end ``oscillink ingest`` in the middle of embedding.

Starts the real console script on a 1,800-chunk corpus (the demo corpus repeated), waits until it
has read its sources (the ``read 1 file(s)`` log line) plus ``--settle`` seconds, sends SIGINT and
measures (a) until ``oscillink: interrupted`` appears on stderr and (b) until the process is gone.
With ``--tree OTHER`` the same is measured for another checkout in the same run, and the ratio is
printed. Writes ``benchmarks/results/ingest_interrupt.json``.

    python benchmarks/ingest_interrupt.py --trials 3 --tree /path/to/other/checkout
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OSCILLINK = Path(sys.executable).with_name("oscillink")


def corpus(d: Path) -> Path:
    rows = [json.loads(line) for line in (ROOT / "examples/data/demo_corpus.jsonl").read_text("utf-8").splitlines()]
    f = d / "big.jsonl"
    with f.open("w", encoding="utf-8") as out:
        for i in range(20):
            for r in rows:
                out.write(json.dumps({"id": f"{r['id']}-{i}", "text": r["text"] * 3}) + "\n")
    return f


def trial(tree: Path, src: Path, work: Path, settle: float) -> tuple[float, float, int]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    d = work / "idx"
    shutil.rmtree(d, ignore_errors=True)
    p = subprocess.Popen([str(OSCILLINK), "ingest", str(src), "--index", str(d)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    for line in p.stderr:
        if b"read 1 file" in line:
            break
    time.sleep(settle)  # well inside embedding: 1,800 chunks take minutes
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    msg = float("nan")
    for line in p.stderr:
        if b"interrupted" in line:
            msg = time.perf_counter() - t0
            break
    p.wait()
    return msg, time.perf_counter() - t0, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of embedding before SIGINT")
    ap.add_argument("--tree", type=Path, help="another checkout to measure in the same run")
    a = ap.parse_args()
    trees = [("this", ROOT)] + ([("other", a.tree.resolve())] if a.tree else [])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = corpus(Path(tmp))
        for name, tree in trees:
            runs = [trial(tree, src, Path(tmp), a.settle) for _ in range(a.trials)]
            results[name] = {"tree": str(tree), "runs": [{"to_message_s": round(m, 3), "to_exit_s": round(e, 3),
                                                          "exit_code": c} for m, e, c in runs],
                             "median_to_exit_s": round(statistics.median(e for _, e, _ in runs), 3)}
    print(f"{'tree':<8} {'exit codes':<14} {'to message (s)':<22} {'to exit (s)':<22}")
    for name, r in results.items():
        codes = ",".join(str(x["exit_code"]) for x in r["runs"])
        msgs = ", ".join(f"{x['to_message_s']:.2f}" for x in r["runs"])
        exits = ", ".join(f"{x['to_exit_s']:.2f}" for x in r["runs"])
        print(f"{name:<8} {codes:<14} {msgs:<22} {exits:<22}")
    if "other" in results:
        ratio = results["other"]["median_to_exit_s"] / max(results["this"]["median_to_exit_s"], 1e-9)
        print(f"median time to exit: other / this = {ratio:.1f}x")
        results["ratio_other_over_this"] = round(ratio, 2)
    out = ROOT / "benchmarks" / "results" / "ingest_interrupt.json"
    out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
