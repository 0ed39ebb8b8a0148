"""The reward-model QA report: metrics from `rlhf.reward.metrics` gathered into rm_report.json, and a
self-contained HTML page (`rlhf.report`: matplotlib figures as inline SVG) with the reliability diagram,
the reward histograms of chosen vs rejected, and flags in words (chance-level accuracy, a failed swap check,
no better than "longer wins")."""

from __future__ import annotations

from pathlib import Path

from rlhf.report import figure, page, svg, table
from rlhf.reward import metrics as m


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
            "ci95": list(m.accuracy_ci(r_c, r_r, resamples=bootstrap, seed=seed)),
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


def plot_reliability(cal: dict) -> str:
    fig, ax = figure(4.2, 4.0)
    ax.plot([0, 1], [0, 1], ls="--", color="#999", label="perfect calibration")
    pts = [(b["mean_p"], b["freq"], b.get("count", 0)) for b in cal["bins"]]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="#d62728", label="this reward model")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="predicted P(first preferred) = σ(r_a − r_b)",
        ylabel="observed frequency",
    )
    ax.set_title(f"Reliability diagram (ECE {cal['ece']:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    return svg(fig)


def plot_rewards(chosen: list[float], rejected: list[float]) -> str:
    fig, ax = figure(6.0, 3.2)
    lo, hi = min(chosen + rejected), max(chosen + rejected)
    bins = [lo + (hi - lo) * k / 20 for k in range(21)] if hi > lo else 10
    ax.hist(chosen, bins=bins, alpha=0.6, color="#2ca02c", label=f"chosen (n={len(chosen)})")
    ax.hist(rejected, bins=bins, alpha=0.6, color="#d62728", label=f"rejected (n={len(rejected)})")
    ax.set(xlabel="reward (raw score)", ylabel="held-out responses")
    ax.set_title("Rewards of held-out chosen vs rejected responses")
    ax.legend(fontsize=8)
    return svg(fig)


def write_html(report: dict, path: Path, *, title: str) -> None:
    acc = report["accuracy"]
    length = report["length"]
    corr = length["reward_length_correlation"]
    rows = [
        ("Held-out pairs", report["pairs"]),
        ("Pairwise accuracy", f"{acc['value']:.3f}  (95 % CI {acc['ci95'][0]:.3f} – {acc['ci95'][1]:.3f})"),
        ("“Longer answer wins” baseline", f"{length['baseline_accuracy']:.3f}"),
        ("Correlation of reward with length", "n/a" if corr is None else f"{corr:.3f}"),
        ("Expected calibration error", f"{report['calibration']['ece']:.3f}"),
    ]
    flags = []
    if report.get("swap_check"):
        sc = report["swap_check"]
        verdict = "passed" if sc["passed"] else "FAILED: accuracy does not depend on the labels"
        rows.append(
            (
                "Swap check (accuracy when trained on swapped labels)",
                f"{sc['swapped_label_accuracy']:.3f} — {verdict}",
            )
        )
        if not sc["passed"]:
            flags.append("The swap check failed: a model trained on swapped labels still scores >= 0.5.")
    if acc["ci95"][0] <= 0.5:
        flags.append(
            "The accuracy's 95 % CI includes 0.5: on these pairs the model is not shown to beat chance."
        )
    if acc["value"] <= length["baseline_accuracy"]:
        flags.append("The model is no more accurate than always preferring the longer answer.")
    hc = report.get("human_ceiling")
    ceiling = (
        f"{hc['agreement']:.3f} over {hc['votes_compared']} votes"
        if hc
        else "n/a: no item was judged by several assessors (export with aggregate=per_vote to keep them)"
    )
    rows.append(("Human–human agreement ceiling", ceiling))

    def groups(heading: str, g: dict) -> tuple[str, str]:
        if not g:
            return heading, "<p>The data carries no such column.</p>"
        return heading, table(
            ["group", "pairs", "accuracy"], [(k, v["pairs"], v["accuracy"]) for k, v in g.items()]
        )

    sections = [
        ("Summary", table(["", ""], rows)),
        ("Calibration (reliability diagram)", plot_reliability(report["calibration"])),
        ("Reward distributions", plot_rewards(report["rewards"]["chosen"], report["rewards"]["rejected"])),
        groups("Accuracy per assessor", report["per_assessor"]),
        groups("Accuracy per slice", report["per_slice"]),
    ]
    Path(path).write_text(page(title, sections, flags=flags))
