"""Speed and memory of the core: graph + solve + bundle + light receipt, one query.

Usage:  python benchmarks/speed.py [--sizes 100,1000,20000,200000] [--backends numba,numpy]
                                  [--texts-sizes 25,100,400] [--blas-threads 1]
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

The texts case (``--texts-sizes``, default 25,100,400; "" skips it) times the same call with the
text screening on: ``rerank(..., texts=, query_text=)`` against the vectors-only call on the same
inputs, the two calls interleaved (alternating which goes first) in one process so machine load hits
both alike. Inputs (`make_texts_case`): a question ending in "?", passages of 60-150 words from a
seeded pseudo-word vocabulary (Zipf-Mandelbrot frequencies, English function words mixed in), random unit
embeddings at a spread of cosines to the query, and planted in the screening pool: three passages
that restate the question (query_echo), a pair whose copy edits one clause toward the question
and asserts a value there (twin_conflict), a pair of template siblings (one year swapped), a pair
with a neutral edit and a triple of one passage and two edited copies (a tight group), the copies
at cosine ~0.96 to their original. For each case the table gives the median and p90 over every timed call of every run,
and the texts / vectors ratio of the medians of each run (median and range over the runs); the
issue's goal is a ratio of at most 2 at N = 100 (``TEXTS_TARGET_RATIO``). The JSON also holds the
CPU time of the calls (process time, all threads), which a loaded machine disturbs less. The texts
case runs with one BLAS thread by default (``--blas-threads``, as benchmarks/compare_published.py:
on a small shared machine multi-threaded BLAS waits on descheduled threads and adds tens of
milliseconds to a call of a few).
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
TEXTS_TARGET_RATIO = {100: 2.0}  # texts / vectors-only median time
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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


_FUNCTION_WORDS = ("the of and in to was a is for on by with as at from that which its were an it had this their "
                   "after into has also but").split()


def _pseudo_words(rng: np.random.Generator, size: int, exclude: frozenset) -> list[str]:
    onsets = "b c d f g h k l m n p r s t v w z br ch dr gr kl pr sh st th tr".split()
    vowels = "a e i o u ai ea io ou".split()
    codas = ["", "", "n", "r", "s", "l", "th", "nd", "st"]
    words: set[str] = set()
    while len(words) < size:
        w = "".join(str(rng.choice(onsets)) + str(rng.choice(vowels)) for _ in range(int(rng.integers(1, 4))))
        w += str(rng.choice(codas))
        if len(w) >= 3 and w not in exclude:
            words.add(w)
    out = sorted(words)
    rng.shuffle(out)  # the Zipf rank of each word
    return out


class _Writer:
    """Passages as word lists with sentence ends (``marks``: index -> "." or "?") and commas."""

    def __init__(self, rng: np.random.Generator, vocab: list[str], banned: set[str]):
        self.rng = rng
        self.vocab = [w for w in vocab if w not in banned]  # filler never holds a question word
        p = 1.0 / (np.arange(len(self.vocab)) + 8.0) ** 1.07  # Zipf-Mandelbrot: no content word dominates
        self.p = p / p.sum()

    def words(self, n: int) -> list[str]:
        content = self.rng.choice(len(self.vocab), size=n, p=self.p)
        func = self.rng.integers(0, len(_FUNCTION_WORDS), size=n)
        use_func = self.rng.random(n) < 0.42
        return [_FUNCTION_WORDS[f] if u else self.vocab[c] for c, f, u in zip(content, func, use_func, strict=True)]

    def value(self) -> str:
        """One content word (never a function word): the value an edited copy asserts."""
        return self.vocab[int(self.rng.choice(len(self.vocab), p=self.p))]

    def passage(self, length: int, sentences: tuple[tuple[list[str], str, int], ...] = ()) -> dict:
        """``length`` words of filler sentences (8-18 words), with the given ``(words, end mark,
        position)`` sentences placed at sentence boundaries (position: 0 first, -1 last, 1 middle)."""
        body = [self.words(int(self.rng.integers(8, 19))) for _ in range(length // 8 + 2)]
        out: list[tuple[list[str], str]] = []
        total = length - sum(len(w) for w, _, _ in sentences)
        for sent in body:
            if total <= 0:
                break
            out.append((sent[:total], "."))
            total -= len(sent)
        for w, mark, pos in sentences:
            out.insert({0: 0, -1: len(out)}.get(pos, len(out) // 2), (list(w), mark))
        words, marks = [], {}
        for w, mark in out:
            words.extend(w)
            marks[len(words) - 1] = mark
        commas = {i for i in range(len(words)) if i not in marks and self.rng.random() < 0.06}
        return {"words": words, "marks": marks, "commas": commas}

    def place(self, p: dict, terms: list[str]) -> list[int]:
        """Write ``terms`` over filler words at evenly spread positions (returned)."""
        n = len(p["words"])
        pos = [int(x) for x in np.linspace(2, n - 3, len(terms))] if terms else []
        for i, t in zip(pos, terms, strict=True):
            p["words"][i] = t
        return pos


def _render(p: dict) -> str:
    out, cap = [], True
    for i, w in enumerate(p["words"]):
        out.append((w.capitalize() if cap else w) + p["marks"].get(i, "," if i in p["commas"] else ""))
        cap = i in p["marks"]
    return " ".join(out)


def _edited(p: dict, start: int, new: list[str]) -> dict:
    """A copy of passage ``p`` with the words from ``start`` replaced by ``new`` (one clause changed)."""
    words = list(p["words"])
    words[start:start + len(new)] = new
    return {**p, "words": words}


def _free_stretch(rng: np.random.Generator, n: int, taken: list[int], width: int) -> int:
    """Start of ``width`` words in [n/4, 3n/4) that hold none of the ``taken`` positions."""
    while True:
        s = int(rng.integers(n // 4, 3 * n // 4 - width))
        if not any(s <= t < s + width for t in taken):
            return s


def _near(rng: np.random.Generator, v: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector at cosine ``cos`` to the unit vector ``v``."""
    u = rng.normal(size=v.shape[0])
    u -= (u @ v) * v
    u /= np.linalg.norm(u)
    return cos * v + np.sqrt(1.0 - cos * cos) * u


def make_texts_case(n: int, d: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], str, dict]:
    """Candidates (N, D), the query vector, the passages, the question and the planted passages'
    indices by kind (see the module docstring). Needs N >= 20; every planted passage sits among
    the 20 most query-similar candidates (the screening pool)."""
    from oscillink_core.textsignals import STOP_WORDS

    if n < 20:
        raise ValueError("the texts case needs N >= 20")
    rng = np.random.default_rng(seed)
    vocab = _pseudo_words(rng, 3000, STOP_WORDS)
    topic = [str(w) for w in rng.choice(vocab[200:1500], size=4, replace=False)]
    year, other_year = "1926", "1976"
    question = f"When did the {topic[0]} {topic[1]} of {topic[2]} first reach {topic[3]} in {year}?"
    q_words = question[:-1].lower().split()
    terms = [*topic[:3], "reach", topic[3], year]  # textsignals.content_terms(question)
    w = _Writer(rng, vocab, set(terms) | {other_year})

    def length() -> int:
        return int(rng.integers(60, 151))

    docs: list[dict] = []
    kinds: dict[str, list[int]] = {}
    vecs: list[np.ndarray] = []
    psi = rng.normal(size=d)
    psi /= np.linalg.norm(psi)

    def add(kind: str, doc: dict, v: np.ndarray) -> None:
        kinds.setdefault(kind, []).append(len(docs))
        docs.append(doc)
        vecs.append(v)

    # passages that restate the question: PoisonedRAG's prefix, a statement, keyword stuffing
    for sent, mark, pos in ((q_words, "?", 0),
                            (["the", *topic[:2], "of", topic[2], "did", "first", "reach", topic[3], "in", year],
                             ".", 1),
                            ([*topic[:3], "reach", topic[3], year], ".", -1)):
        add("restates_question", w.passage(length(), ((sent, mark, pos),)), _near(rng, psi, rng.uniform(0.72, 0.78)))
    # near-copy families: an on-topic original holding every question word, spread out, and its copies
    for kind in ("edit_toward_question", "template_siblings", "neutral_edit", "edit_toward_question_triple"):
        orig = w.passage(length())
        pos = w.place(orig, terms)
        v0 = _near(rng, psi, rng.uniform(0.6, 0.7))
        add(kind, orig, v0)
        if kind == "template_siblings":  # the same page for another year
            copies = [_edited(orig, pos[-1], [other_year])]
        elif kind == "neutral_edit":
            copies = [_edited(orig, _free_stretch(rng, len(orig["words"]), pos, 3), w.words(3))]
        else:
            # the question's words where a clause stood, with the value the copy asserts (a counterfactual
            # edit; a copy whose only change is the question's own words asserts nothing: a template sibling)
            news = [[topic[0], "reach", topic[3], year, w.value()], [topic[1], topic[2], "reach", year, w.value()]]
            copies = [_edited(orig, _free_stretch(rng, len(orig["words"]), pos, 4), new)
                      for new in news[:2 if kind.endswith("triple") else 1]]
        for c in copies:
            add(kind, c, _near(rng, v0, 0.96))
    # genuine passages: on topic (0-3 question words spread out), less query-similar than the planted ones
    for _ in range(n - len(docs)):
        doc = w.passage(length())
        w.place(doc, [str(t) for t in rng.choice(terms, size=int(rng.integers(0, 4)), replace=False)])
        add("genuine", doc, _near(rng, psi, rng.uniform(0.1, 0.55)))
    perm = rng.permutation(n)  # planted passages at random positions
    where = np.argsort(perm)
    Y = np.asarray(vecs)[perm].astype(np.float32)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    texts = [_render(docs[i]) for i in perm.tolist()]
    planted = {k: [int(where[i]) for i in v] for k, v in kinds.items() if k != "genuine"}  # originals first
    return np.ascontiguousarray(Y), psi.astype(np.float32), texts, question, planted


def _percentile(times: list[float], q: float) -> float:
    return float(np.percentile(times, q))


def run_texts(n: int, repeats: int, backend: str) -> dict:
    """The vectors-only and the texts call on one `make_texts_case`, interleaved ``repeats`` times each."""
    from oscillink_core import rerank

    Y, psi, texts, question, planted = make_texts_case(n)
    cases = {"vectors": {}, "texts": {"texts": texts, "query_text": question}}

    def call(name: str, k: int = 10):
        return rerank(psi, Y, k=k, light_receipt=True, backend=backend, **cases[name])

    for _ in range(5):  # warm-up (imports, compiled kernels, regex and difflib caches)
        call("vectors")
        call("texts")
    times: dict[str, list[float]] = {c: [] for c in cases}
    cpu: dict[str, list[float]] = {c: [] for c in cases}
    stages: dict[str, list[dict]] = {c: [] for c in cases}
    for r in range(repeats):
        for name in (("vectors", "texts") if r % 2 == 0 else ("texts", "vectors")):
            c0, t0 = time.process_time(), time.perf_counter()
            res = call(name)
            times[name].append(1e3 * (time.perf_counter() - t0))
            cpu[name].append(1e3 * (time.process_time() - c0))
            stages[name].append(res.timings)
    out = {"n": n, "d": Y.shape[1], "k": 6, "repeats": repeats, "question": question,
           "words_per_passage": float(np.mean([len(t.split()) for t in texts])), "planted": planted}
    for name in cases:
        full = call(name, k=n)  # every candidate's flags
        flags: dict[str, int] = {}
        for it in full.items:
            for f in it.flags:
                flags[f] = flags.get(f, 0) + 1
        t = times[name]
        keys = [key for key in stages[name][0] if key.endswith("_ms") and key != "total_ms"]
        out[name] = {"median_ms": float(np.median(t)), "p90_ms": _percentile(t, 90), "min_ms": float(min(t)),
                     "cpu_median_ms": float(np.median(cpu[name])),
                     "stage_ms": {key: float(np.median([s[key] for s in stages[name]])) for key in keys},
                     "ranking": full.receipt["screen"]["ranking"], "flags": dict(sorted(flags.items())),
                     "flags_by_kind": {kind: sorted({f for i in idx for f in full.items[full.indices.index(i)].flags})
                                       for kind, idx in planted.items()},
                     "times_ms": t, "cpu_ms": cpu[name]}
        out["backend"] = full.receipt["solver"]["backend"]
    out["ratio_of_medians"] = out["texts"]["median_ms"] / out["vectors"]["median_ms"]
    out["paired_ratio_median"] = float(np.median(np.divide(times["texts"], times["vectors"])))
    out["cpu_ratio_of_medians"] = out["texts"]["cpu_median_ms"] / out["vectors"]["cpu_median_ms"]
    return out


def texts_row(runs: list[dict]) -> dict:
    """One size and backend over its runs: medians and p90 of every timed call, the per-run ratios."""
    row = {key: runs[0][key] for key in ("n", "backend", "d", "k", "repeats", "question", "words_per_passage",
                                         "planted")}
    row["runs"] = len(runs)
    for name in ("vectors", "texts"):
        pooled = [x for r in runs for x in r[name]["times_ms"]]
        mid = sorted(runs, key=lambda r: r[name]["median_ms"])[len(runs) // 2]  # the median run
        row[name] = {"median_ms": float(np.median(pooled)), "p90_ms": _percentile(pooled, 90),
                     "min_ms": float(min(pooled)),
                     "cpu_median_ms": float(np.median([x for r in runs for x in r[name]["cpu_ms"]])),
                     "run_medians_ms": [r[name]["median_ms"] for r in runs],
                     "run_p90_ms": [r[name]["p90_ms"] for r in runs],
                     **{key: mid[name][key] for key in ("stage_ms", "ranking", "flags", "flags_by_kind")}}
    ratios = [r["ratio_of_medians"] for r in runs]
    row["run_ratios"] = ratios
    row["ratio"] = float(np.median(ratios))
    row["paired_ratio_median"] = float(np.median([r["paired_ratio_median"] for r in runs]))
    row["cpu_run_ratios"] = [r["cpu_ratio_of_medians"] for r in runs]
    row["cpu_ratio"] = float(np.median(row["cpu_run_ratios"]))
    row["target_ratio"] = TEXTS_TARGET_RATIO.get(row["n"])
    return row


def measure_texts(sizes: list[int], backends: list[str], runs: int, repeats: int, env: dict | None = None
                  ) -> list[dict]:
    """The texts case for each size and backend: ``runs`` fresh processes each (environment ``env``),
    interleaved across backends."""
    out = []
    for n in sizes:
        got: dict[str, list[dict]] = {}
        for _ in range(runs):
            for b in backends:
                cmd = [sys.executable, __file__, "--one-texts", str(n), "--backend", b] + (
                    ["--repeats", str(repeats)] if repeats else [])
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                got.setdefault(b, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
        out.extend(texts_row(rs) for rs in got.values())
    return out


def print_texts_table(rows: list[dict]) -> None:
    if not rows:
        return
    hdr = (f"{'N':>6} {'backend':>8} {'vectors med':>11} {'p90':>6} {'texts med':>9} {'p90':>6} {'texts/vec':>9} "
           f"{'runs':>11} {'target':>6} {'cpu ratio':>9} {'flags (texts case)'}")
    print("\ntexts case: rerank(..., texts=, query_text=) vs vectors only, interleaved (times in ms)")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        v, t = r["vectors"], r["texts"]
        span = f"{min(r['run_ratios']):.2f}-{max(r['run_ratios']):.2f}"
        flags = " ".join(f"{f}:{c}" for f, c in t["flags"].items())
        target = r["target_ratio"] if r["target_ratio"] is not None else float("nan")
        print(f"{r['n']:>6} {r['backend']:>8} {v['median_ms']:>11.2f} {v['p90_ms']:>6.2f} {t['median_ms']:>9.2f} "
              f"{t['p90_ms']:>6.2f} {r['ratio']:>9.2f} {span:>11} {target:>6.1f} {r['cpu_ratio']:>9.2f} "
              f"{flags}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,20000,200000", help='"" skips the vectors-only table')
    ap.add_argument("--texts-sizes", default="25,100,400",
                    help='sizes of the texts case (vectors only vs texts= and query_text=; "" skips it)')
    ap.add_argument("--backends", default="numba,numpy", help="backends to time (numpy skipped above N = 20,000)")
    ap.add_argument("--repeats", type=int, default=0, help="0: automatic per size")
    ap.add_argument("--runs", type=int, default=5, help="processes per size up to N = 1,000 (larger: 1)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS/OpenMP threads in the texts case's workers (default 1; 0 = the libraries' defaults)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed.json"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--one-texts", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        reps = args.repeats or {100: 200, 1000: 50, 20000: 5}.get(args.one, 3)
        print(json.dumps(run_one(args.one, reps, args.backend)))
        return 0
    if args.one_texts:
        reps = args.repeats or {25: 300, 100: 200, 400: 100}.get(args.one_texts, 50)
        print(json.dumps(run_texts(args.one_texts, reps, args.backend)))
        return 0
    from oscillink_core._backend import available_backends

    backends = [b for b in args.backends.split(",") if b in available_backends()]
    rows = []
    for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
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
    if rows:
        print(hdr)
        print("-" * len(hdr))
    for r in rows:
        n = r["n"]
        span = f"{min(r['run_medians_ms']):.3g}-{max(r['run_medians_ms']):.3g}"
        print(f"{n:>8} {r['backend']:>8} {r['median_ms']:>10.2f} {span:>13} {TARGETS_MS.get(n, float('nan')):>10.0f} "
              f"{r.get('dense_YYt_ms', float('nan')):>9.2f} {r.get('ratio_to_dense', float('nan')):>6.2f} "
              f"{r.get('numpy_over_this', float('nan')):>7.2f} "
              f"{r['cg_iterations']:>5} {r['knn']:>9} {r['peak_rss_mb']:>8.0f} {TARGETS_MB.get(n, float('nan')):>9.0f}")
    t_env = {**os.environ}
    if args.blas_threads > 0:
        t_env.update({v: str(args.blas_threads) for v in THREAD_VARS})
    t_rows = measure_texts([int(x) for x in args.texts_sizes.split(",") if x.strip()], backends, args.runs,
                           args.repeats, t_env)
    print_texts_table(t_rows)
    report = {"benchmark": "oscillink-core speed",
              "command": "python benchmarks/speed.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine_info(processor=platform.processor()),
              "numpy": np.__version__, "targets_ms": TARGETS_MS, "targets_mb": TARGETS_MB, "rows": rows,
              "texts_case": {"data": "make_texts_case: seeded pseudo-word passages of 60-150 words, a question ending "
                                     "in '?', random unit embeddings, planted restatements and near-copy families "
                                     "(cosine ~0.96) in the screening pool; D = 384, k = 10, light receipt",
                             "target_ratio": TEXTS_TARGET_RATIO,
                             "blas_threads": args.blas_threads or "library defaults",
                             "thread_env": {v: t_env.get(v) for v in THREAD_VARS}, "rows": t_rows}}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
