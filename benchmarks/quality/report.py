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
    "lattice_default_text": "oscillink defaults, with texts (what the adapters run)",
    "lattice_default": "oscillink defaults, vectors only",
    "lattice_default_noscreen": "oscillink defaults, screen off",
    "lattice_default_text_always": "oscillink with texts, lattice on every query (coh_scope always)",
    "lattice_recommended": "lattice, recommended",
    "lattice_tuned": "lattice, tuned per dataset",
    "proto_twin_reorder": "prototype: twin reorder",
    "proto_twin_push5": "prototype: twin reorder + push",
    "control_twin_push5_no_lattice": "control: twin reorder + push, no lattice",
    "control_dup_reorder_no_lattice": "control: near-dup reorder, no lattice",
}
DS_LABELS = {"scifact": "SciFact", "halueval": "HaluEval QA", "halueval_traps": "HaluEval + traps",
             "halueval_poison": "HaluEval + poisoning", "two_hop": "Two-hop (HotpotQA paragraphs)"}


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
    lines += summary_table(doc)
    for name, r in doc["results"].items():
        has_traps = "trap_share@5" in r["methods"]["cosine"]["metrics"]
        lines.append(f"### {DS_LABELS.get(name, name)} ({r['n_test']} test queries; "
                     f"first-stage recall@100 {r['first_stage_recall@100']:.3f})")
        lines.append("")
        head = ["method", "nDCG@10", "MRR@10", "P@1", "Recall@10"]
        has_both = "both@5" in r["methods"]["cosine"]["metrics"]
        if has_both:
            head += ["both@5", "both@10"]
        if has_traps:
            head += ["trap share@5", "any trap@5", "trap share@10"]
        head += [f"near-dup@10 (cos>={doc['near_duplicate_threshold']})", "ms p50 / p95"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for meth, res in r["methods"].items():
            mm = res["metrics"]
            row = [LABELS.get(meth, meth), _cell(mm["ndcg@10"]), _cell(mm["mrr@10"]), _cell(mm["p@1"]),
                   _cell(mm["recall@10"])]
            if has_both:
                row += [_cell(mm["both@5"]), _cell(mm["both@10"])]
            if has_traps:
                row += [_cell(mm["trap_share@5"]), _cell(mm["any_trap@5"]), _cell(mm["trap_share@10"])]
            row += [_cell(mm["near_dup@10"]),
                    f"{res['latency_ms']['p50']:.2f} / {res['latency_ms']['p95']:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        params = r["params"]
        lines.append(f"MMR tuned lambda = {params['mmr_tuned']['mmr_lambda']}; lattice tuned = "
                     f"`{_short(params['lattice_tuned'], params['lattice_default'])}`.")
        lines.append("")
    rec = doc["recommended"]
    core_defaults = next(iter(doc["results"].values()))["params"]["lattice_default"]
    lines.append(f"Recommended (one setting for all datasets, best worst-case train gain): "
                 f"`{_short(rec['params'], core_defaults)}`; train selection score (objective gain over cosine "
                 f"- 10 x any nDCG@10 loss) per dataset "
                 + ", ".join(f"{DS_LABELS.get(k, k)} {v:+.4f}" for k, v in rec["per_dataset_train_gain"].items())
                 + "; core defaults: "
                 + ", ".join(f"{DS_LABELS.get(k, k)} {v:+.4f}"
                             for k, v in rec["default_per_dataset_train_gain"].items())
                 + ".")
    lines.append("")
    return "\n".join(lines)


def summary_table(doc: dict) -> list[str]:
    """One row per method: nDCG@10 per dataset and the trap metrics, difference to cosine with its CI."""
    res = doc["results"]
    names = list(res)
    trap_ds = [n for n in names if "trap_share@5" in res[n]["methods"]["cosine"]["metrics"]]
    head = ["method"] + [f"{DS_LABELS.get(n, n)} nDCG@10" for n in names]
    for n in trap_ds:
        head += [f"{DS_LABELS.get(n, n)} trap share@5", f"{DS_LABELS.get(n, n)} any trap@5"]
    head.append("ms/query p50 (SciFact)" if "scifact" in res else "ms/query p50")
    out = ["### Summary (test)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for meth in res[names[0]]["methods"]:
        row = [LABELS.get(meth, meth)]
        for n in names:
            row.append(_cell(res[n]["methods"][meth]["metrics"]["ndcg@10"]))
        for n in trap_ds:
            mm = res[n]["methods"][meth]["metrics"]
            row += [_cell(mm["trap_share@5"]), _cell(mm["any_trap@5"])]
        row.append(f"{res[names[0]]['methods'][meth]['latency_ms']['p50']:.2f}")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    return out


def _short(p: dict, d: dict) -> str:
    """The parameters of ``p`` that differ from the defaults ``d`` (the core defaults of the run)."""
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


def _sel(r: dict, b: dict) -> float:
    """harness.selection_gain from the mean metrics stored in a sweep row."""
    d_ndcg = r["ndcg@10"] - b["ndcg@10"]
    return r["objective"] - b["objective"] - 10.0 * max(0.0, -d_ndcg)


def sweep_markdown(sweep: dict) -> str:
    """Summary of explore.py's train sweep: per dataset, the best train gain of each knob family."""
    from oscillink_core import LatticeParams

    default = LatticeParams()
    fam_rows: dict[str, dict[str, dict]] = {}
    base: dict[str, dict] = {}
    for r in sweep["rows"]:
        ds = r["dataset"]
        if r["method"] == "cosine":
            base[ds] = r
            continue
        if r["method"] == "mmr":
            fams = [f"MMR lambda {r['mmr_lambda']}"]
        else:
            e, k = r["energy"], r["rank"]
            p = LatticeParams(**e, **k)
            fams = ["any lattice setting (best of the grid)"]
            if p == default:
                fams.append("core defaults")
            if k["coh_weight"] > 0:
                fams.append("coh_weight > 0 (best of 1, 3)")
            plain = k["dedup_threshold"] is None and k["mmr_lambda"] == 1.0
            if plain and k["coh_weight"] == 0.0:
                fams.append("rank by align (coh_weight 0), energy varied")
            if plain and k["coh_weight"] < 0:
                fams.append("align/cosine blend (coh_weight < 0), energy varied")
            if k["dedup_threshold"] is not None and k["dup_keep"] == "consensus":
                fams.append("near-duplicate rule, dup_keep=consensus")
            if k["dedup_threshold"] is not None and k["dup_keep"] == "best":
                fams.append("near-duplicate rule, dup_keep=best")
            if k["mmr_lambda"] < 1.0:
                fams.append("lattice + MMR 0.9")
            if e.get("gating") == "diffusion":
                fams.append("gating=diffusion")
            if e.get("edge_floor", 0) > 0:
                fams.append("edge_floor > 0")
            if e.get("degree_reg", 0) > 0:
                fams.append("degree_reg > 0")
        for f in fams:
            cur = fam_rows.setdefault(ds, {}).get(f)
            if cur is None or _sel(r, base[ds]) > _sel(cur, base[ds]):
                fam_rows[ds][f] = r
    lines = ["## Train sweep (explore.py): best train gain over cosine per knob family", "",
             f"Command: `{sweep['command']}` ({sweep['runtime_s']:.0f} s; first {sweep['limit']} train queries "
             "per dataset). Objective = nDCG@10 - trap share@5; the best setting of a family maximises the "
             "objective gain minus 10 x any nDCG@10 loss. Each cell: objective gain (nDCG@10 gain; "
             "trap share@5 change where traps exist) of that setting. A best-of-grid "
             "train number is optimistic (it is selected on the same queries); test numbers are in quality.md.",
             ""]
    names = list(fam_rows)
    lines.append("| knob family | " + " | ".join(DS_LABELS.get(n, n) for n in names) + " |")
    lines.append("|---|" + "---|" * len(names))
    fams = []
    for n in names:
        fams += [f for f in fam_rows[n] if f not in fams]
    for f in fams:
        cells = []
        for n in names:
            r = fam_rows[n].get(f)
            if r is None:
                cells.append("")
                continue
            b = base[n]
            c = f"{r['objective'] - b['objective']:+.4f} ({r['ndcg@10'] - b['ndcg@10']:+.4f}"
            if "trap_share@5" in r:
                c += f"; trap {r['trap_share@5'] - b['trap_share@5']:+.4f}"
            cells.append(c + ")")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in names:
        r = fam_rows[n]["any lattice setting (best of the grid)"]
        lines.append(f"Best on {DS_LABELS.get(n, n)}: energy `{r['energy']}`, ranking `{r['rank']}`.")
    lines.append("")
    return "\n".join(lines)


def write_report(doc: dict, md_path: Path, png_path: Path) -> None:
    md_path.write_text(markdown(doc), encoding="utf-8")
    chart(doc, png_path)
    sweep_path = md_path.with_name("quality_sweep.json")
    if sweep_path.exists():
        md_path.with_name("quality_sweep.md").write_text(sweep_markdown(json.loads(sweep_path.read_text())),
                                                         encoding="utf-8")


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "results" / "quality.json"
    d = json.loads(src.read_text())
    write_report(d, src.with_suffix(".md"), src.with_suffix(".png"))
    print(f"wrote {src.with_suffix('.md')} and {src.with_suffix('.png')}")
