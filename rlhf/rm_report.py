"""The reward-model QA report: metrics from `rlhf.rm_metrics` gathered into rm_report.json, and an HTML
page with inline SVG plots (no plotting dependency): the reliability diagram and reward histograms."""

from __future__ import annotations

import html
from pathlib import Path

from rlhf import rm_metrics as m


def _text(x) -> str:
    return x if isinstance(x, str) else x[-1]["content"]


def build_report(
    eval_rows: list[dict],
    r_c: list[float],
    r_r: list[float],
    *,
    rows_all: list[dict],
    bootstrap: int,
    bins: int,
    seed: int,
    swapped_accuracy: float | None,
) -> dict:
    correct = [m.pair_correct(c, r) for c, r in zip(r_c, r_r, strict=True)]
    len_c = [len(_text(r["chosen"])) for r in eval_rows]
    len_r = [len(_text(r["rejected"])) for r in eval_rows]
    report = {
        "pairs": len(eval_rows),
        "accuracy": {
            "value": sum(correct) / len(correct),
            "ci95": list(m.bootstrap_ci(correct, n=bootstrap, seed=seed)),
            "bootstrap_resamples": bootstrap,
        },
        "calibration": m.calibration(r_c, r_r, bins=bins),
        "length": {
            "baseline_accuracy": m.length_baseline(len_c, len_r),
            "reward_length_correlation": m.pearson(len_c + len_r, r_c + r_r),
            "unit": "characters",
        },
        "rewards": {"chosen": r_c, "rejected": r_r},
        "per_assessor": m.grouped_accuracy([r.get("assessor") for r in eval_rows], correct),
        "per_slice": m.grouped_accuracy([r.get("slice") for r in eval_rows], correct),
    }
    # per-vote rows of the same item (export with aggregate=per_vote): each vote's preferred response
    votes = [
        (r["item_id"], r["assessor"], _text(r["chosen"]))
        for r in rows_all
        if r.get("item_id") is not None and r.get("assessor") is not None
    ]
    report["human_ceiling"] = m.human_ceiling(votes)
    if swapped_accuracy is not None:
        report["swap_check"] = {"swapped_label_accuracy": swapped_accuracy, "passed": swapped_accuracy < 0.5}
    return report


def _svg_reliability(cal: dict, size: int = 260) -> str:
    pad = 30
    inner = size - 2 * pad

    def xy(p, f):
        return pad + p * inner, size - pad - f * inner

    parts = [
        f'<svg width="{size}" height="{size}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#999"/>',
        f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#bbb" stroke-dasharray="4"/>',
    ]
    pts = [xy(b["mean_p"], b["freq"]) for b in cal["bins"]]
    if pts:
        parts.append(
            '<polyline fill="none" stroke="#d62728" stroke-width="2" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            + '"/>'
        )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#d62728"/>' for x, y in pts]
    parts.append(
        f'<text x="{size / 2}" y="{size - 6}" font-size="11" text-anchor="middle">predicted σ(r_a − r_b)</text>'
    )
    parts.append(
        f'<text x="10" y="{size / 2}" font-size="11" transform="rotate(-90 10 {size / 2})" '
        'text-anchor="middle">observed frequency</text></svg>'
    )
    return "".join(parts)


def _svg_histogram(
    chosen: list[float], rejected: list[float], width: int = 420, height: int = 200, bins: int = 20
) -> str:
    values = chosen + rejected
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0

    def counts(xs):
        c = [0] * bins
        for x in xs:
            c[min(bins - 1, int((x - lo) / span * bins))] += 1
        return c

    cc, cr = counts(chosen), counts(rejected)
    top = max(cc + cr) or 1
    bw = (width - 20) / bins
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(bins):
        for c, color, off in ((cc[i], "#2ca02c", 0), (cr[i], "#d62728", bw / 2)):
            h = c / top * (height - 40)
            parts.append(
                f'<rect x="{10 + i * bw + off:.1f}" y="{height - 25 - h:.1f}" width="{bw / 2 - 1:.1f}" '
                f'height="{h:.1f}" fill="{color}" opacity="0.8"/>'
            )
    parts.append(
        f'<text x="10" y="{height - 8}" font-size="11">{lo:.2f}</text>'
        f'<text x="{width - 10}" y="{height - 8}" font-size="11" text-anchor="end">{hi:.2f}</text>'
        f'<text x="{width / 2}" y="14" font-size="11" text-anchor="middle">reward: chosen (green) vs '
        "rejected (red)</text></svg>"
    )
    return "".join(parts)


def write_html(report: dict, path: Path, *, title: str) -> None:
    acc = report["accuracy"]
    length = report["length"]
    rows = [
        ("Held-out pairs", report["pairs"]),
        ("Pairwise accuracy", f"{acc['value']:.3f}  (95 % CI {acc['ci95'][0]:.3f} – {acc['ci95'][1]:.3f})"),
        ("“Longer answer wins” baseline", f"{length['baseline_accuracy']:.3f}"),
        (
            "Correlation of reward with length",
            "n/a"
            if length["reward_length_correlation"] is None
            else f"{length['reward_length_correlation']:.3f}",
        ),
        ("Expected calibration error", f"{report['calibration']['ece']:.3f}"),
    ]
    if report.get("swap_check"):
        sc = report["swap_check"]
        rows.append(
            (
                "Swap check (accuracy when trained on swapped labels)",
                f"{sc['swapped_label_accuracy']:.3f} — {'passed' if sc['passed'] else 'FAILED: accuracy does not depend on the labels'}",
            )
        )
    hc = report.get("human_ceiling")
    ceiling = (
        f"{hc['agreement']:.3f} over {hc['votes_compared']} votes"
        if hc
        else "n/a: no item was judged by several assessors (export with aggregate=per_vote to keep them)"
    )
    rows.append(("Human–human agreement ceiling", ceiling))

    def table(title_: str, groups: dict) -> str:
        if not groups:
            return f"<h2>{title_}</h2><p>The data carries no such column.</p>"
        body = "".join(
            f"<tr><td>{html.escape(str(g))}</td><td>{v['pairs']}</td><td>{v['accuracy']:.3f}</td></tr>"
            for g, v in groups.items()
        )
        return f"<h2>{title_}</h2><table><tr><th>group</th><th>pairs</th><th>accuracy</th></tr>{body}</table>"

    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}</style>
</head><body><h1>{html.escape(title)}</h1>
<table>{"".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)}</table>
<h2>Calibration (reliability diagram)</h2>{_svg_reliability(report["calibration"])}
<h2>Reward distributions</h2>{_svg_histogram(report["rewards"]["chosen"], report["rewards"]["rejected"])}
{table("Accuracy per assessor", report["per_assessor"])}
{table("Accuracy per slice", report["per_slice"])}
</body></html>"""
    Path(path).write_text(page)
