"""Markdown table and PNG chart from benchmarks/results/quality.json.

    .venv/bin/python benchmarks/quality/report.py [benchmarks/results/quality.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABELS = {
    "cosine": "cosine (first stage)",
    "mmr_0.5": "MMR, lambda 0.5",
    "mmr_tuned": "MMR, lambda tuned",
    "lattice_default": "lattice, core defaults",
    "lattice_recommended": "lattice, recommended",
    "lattice_tuned": "lattice, tuned per dataset",
    "proto_twin_reorder": "prototype: twin reorder",
    "proto_twin_push5": "prototype: twin reorder + push",
    "control_twin_push5_no_lattice": "control: twin push, no lattice",
}
DS_LABELS = {"scifact": "SciFact", "halueval": "HaluEval QA", "halueval_traps": "HaluEval + traps"}


def _cell(entry: dict, digits: int = 3) -> str:
    s = f"{entry['mean']:.{digits}f}"
    if "ci95" in entry:
        lo, hi = entry["ci95"]
        s += f" ({entry['diff_vs_cosine']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}])"
    return s


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        "## Retrieval quality (test splits)",
        "",
        f"Command: `{doc['command']}` ({doc['runtime_s']:.0f} s on {m['cpu_count']} CPUs, {m['platform']}, "
        f"Python {m['python']}, oscillink-core {m['oscillink_core']}; {doc['date']}).",
        f"First stage: {doc['model']} + FAISS inner product, top {doc['candidates_per_query']} candidates per query; "
        f"every method reranks the same candidates. Cells: test mean (difference to cosine "
        f"[paired bootstrap 95% CI, {doc['n_boot']} resamples]). Parameters were chosen on train queries only.",
        "",
    ]
    for name, r in doc["results"].items():
        has_traps = "trap_share@5" in r["methods"]["cosine"]["metrics"]
        lines.append(f"### {DS_LABELS.get(name, name)} ({r['n_test']} test queries; "
                     f"first-stage recall@100 {r['first_stage_recall@100']:.3f})")
        lines.append("")
        head = ["method", "nDCG@10", "MRR@10", "P@1", "Recall@10"]
        if has_traps:
            head += ["trap share@5", "any trap@5", "trap share@10"]
        head += [f"near-dup@10 (cos>={doc['near_duplicate_threshold']})", "ms p50 / p95"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for meth, res in r["methods"].items():
            mm = res["metrics"]
            row = [LABELS.get(meth, meth), _cell(mm["ndcg@10"]), _cell(mm["mrr@10"]), _cell(mm["p@1"]),
                   _cell(mm["recall@10"])]
            if has_traps:
                row += [_cell(mm["trap_share@5"]), _cell(mm["any_trap@5"]), _cell(mm["trap_share@10"])]
            row += [_cell(mm["near_dup@10"]),
                    f"{res['latency_ms']['p50']:.2f} / {res['latency_ms']['p95']:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        params = r["params"]
        lines.append(f"MMR tuned lambda = {params['mmr_tuned']['mmr_lambda']}; lattice tuned = "
                     f"`{_short(params['lattice_tuned'])}`.")
        lines.append("")
    rec = doc["recommended"]
    lines.append(f"Recommended (one setting for all datasets, best worst-case train gain): "
                 f"`{_short(rec['params'])}`; train objective gain per dataset "
                 + ", ".join(f"{DS_LABELS.get(k, k)} {v:+.4f}" for k, v in rec["per_dataset_train_gain"].items())
                 + "; core defaults: "
                 + ", ".join(f"{DS_LABELS.get(k, k)} {v:+.4f}"
                             for k, v in rec["default_per_dataset_train_gain"].items())
                 + ".")
    lines.append("")
    return "\n".join(lines)


def _short(p: dict) -> str:
    from oscillink_core import LatticeParams

    d = LatticeParams().to_dict()
    diff = {k: v for k, v in p.items() if k in d and d[k] != v}
    extra = {k: v for k, v in p.items() if k not in d}
    diff.update(extra)
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "core defaults"


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["results"])
    trap_ds = [n for n in names if "trap_share@5" in doc["results"][n]["methods"]["cosine"]["metrics"]]
    ncols = len(names) + len(trap_ds)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 4.2), squeeze=False)
    axes = axes[0]

    def bars(ax, name, metric, title):
        meths = list(doc["results"][name]["methods"])
        means, lo, hi = [], [], []
        for mth in meths:
            e = doc["results"][name]["methods"][mth]["metrics"][metric]
            means.append(e["mean"])
            if "ci95" in e:
                base = e["mean"] - e["diff_vs_cosine"]
                lo.append(e["mean"] - (base + e["ci95"][0]))
                hi.append((base + e["ci95"][1]) - e["mean"])
            else:
                lo.append(0.0)
                hi.append(0.0)
        def color(m: str) -> str:
            if m == "cosine":
                return "#777777"
            if m.startswith("mmr"):
                return "#4c72b0"
            if m.startswith("proto"):
                return "#55a868"
            if m.startswith("control"):
                return "#bbbbbb"
            return "#dd8452"

        colors = [color(m) for m in meths]
        ax.bar(range(len(meths)), means, yerr=[lo, hi], color=colors, capsize=3)
        ax.axhline(means[0], color="#333333", lw=0.8, ls="--")
        ax.set_xticks(range(len(meths)))
        ax.set_xticklabels([LABELS.get(m, m) for m in meths], rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        lo_y = min(m - lv for m, lv in zip(means, lo, strict=True))
        hi_y = max(m + hv for m, hv in zip(means, hi, strict=True))
        pad = 0.1 * (hi_y - lo_y + 1e-3)
        ax.set_ylim(max(0.0, lo_y - pad), hi_y + pad)

    col = 0
    for name in names:
        bars(axes[col], name, "ndcg@10", f"{DS_LABELS.get(name, name)}: nDCG@10 (test)")
        col += 1
    for name in trap_ds:
        bars(axes[col], name, "trap_share@5", f"{DS_LABELS.get(name, name)}: trap share of top 5")
        col += 1
    fig.suptitle("Error bars: paired bootstrap 95% CI of the difference to cosine (dashed line)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_report(doc: dict, md_path: Path, png_path: Path) -> None:
    md_path.write_text(markdown(doc), encoding="utf-8")
    chart(doc, png_path)


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "results" / "quality.json"
    d = json.loads(src.read_text())
    write_report(d, src.with_suffix(".md"), src.with_suffix(".png"))
    print(f"wrote {src.with_suffix('.md')} and {src.with_suffix('.png')}")
