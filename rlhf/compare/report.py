"""The checkpoint comparison report: flags in words, a terminal table, and the HTML page (`rlhf.report`),
all read from a `CompareResult` by attribute.

`flags(result)` states what a reader must not miss: the reward-model win rate rose while agreement with
held-out human preferences fell (reward hacking), length drift (answers much longer or shorter than the
baseline's, or a win rate that shrinks once length is controlled), KL to the reference above the threshold,
and a best checkpoint whose rating CI overlaps the runner-up's ("no significant difference").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rlhf.compare.metrics import overlapping
from rlhf.compare.result import CheckpointResult, CompareResult, HumanAgreement, Rating
from rlhf.report import figure, page, svg, table


def flags(result: CompareResult, *, kl_threshold: float, length_ratio_limit: float = 1.5) -> list[str]:
    base = result.baseline
    out = []
    for name, c in result.checkpoints.items():
        if name == base:
            continue
        out += _hacking(result, name, c)
        ratio = c.length.mean_chars / max(1e-9, result.checkpoints[base].length.mean_chars)
        if ratio > length_ratio_limit or ratio < 1 / length_ratio_limit:
            out.append(f"Length drift: {name}'s answers are {ratio:.1f}x as long as {base}'s on average.")
        vb = c.vs_baseline
        if vb and vb.win_rate - vb.lc_win_rate > 0.1:
            out.append(
                f"{name}'s win rate over {base} falls from {vb.win_rate:.0%} to {vb.lc_win_rate:.0%} once length "
                "is controlled: much of its advantage is length."
            )
        if c.kl and c.kl.mean > kl_threshold:
            out.append(
                f"{name} is far from the reference: KL {c.kl.mean:.1f} nats per response > threshold {kl_threshold}."
            )
    board = result.bradley_terry.checkpoints if result.bradley_terry else []
    if len(board) >= 2 and overlapping(board[0].ci95, board[1].ci95):
        out.append(
            f"No significant difference between {board[0].checkpoint} and {board[1].checkpoint}: their rating "
            "CIs overlap — collect more votes (or compare on more prompts)."
        )
    return out


def _hacking(result: CompareResult, name: str, c: CheckpointResult) -> list[str]:
    """The reward-hacking flag: the reward model prefers `name` while held-out human agreement falls."""
    base = result.baseline
    h, h_base = result.human_agreement.get(name), result.human_agreement.get(base)
    # implicit rewards are measured against the reference, whose own agreement is 0.5 by construction;
    # plain log-prob agreement is compared with the baseline's
    against = []
    if h and h.implicit_reward.rate < 0.5 - 0.02:
        against.append(
            f"its implicit reward orders {h.implicit_reward.rate:.0%} of held-out human pairs like the humans (< 50 %)"
        )
    if h and h_base and h.logprob.rate < h_base.logprob.rate - 0.02:
        against.append(
            f"its log-prob agreement fell to {h.logprob.rate:.2f} from the baseline's {h_base.logprob.rate:.2f}"
        )
    wr = c.vs_baseline.win_rate if c.vs_baseline else None
    if wr is None or wr <= 0.5 or not against:
        return []
    return [
        f"Possible reward hacking: {name} beats {base} by the reward model ({wr:.0%} win rate) but "
        + " and ".join(against)
        + "."
    ]


def terminal_table(result: CompareResult) -> str:
    board = {r.checkpoint: r for r in result.bradley_terry.checkpoints} if result.bradley_terry else {}
    cols = [
        "checkpoint",
        "RM score",
        "95% CI",
        "Elo",
        "P(best)",
        "win vs base",
        "LC win",
        "KL",
        "len",
        "human",
    ]
    rows = []
    for name, c in result.checkpoints.items():
        rm, vb, b = c.reward, c.vs_baseline, board.get(name)
        h = result.human_agreement.get(name)
        rows.append(
            [
                name,
                _f(rm and rm.mean),
                f"{_f(rm.ci95[0])}..{_f(rm.ci95[1])}" if rm else "-",
                _f(b and b.rating, 0),
                _f(b and b.p_best, 2),
                _f(vb and vb.win_rate, 2),
                _f(vb and vb.lc_win_rate, 2),
                _f(c.kl and c.kl.mean, 2),
                _f(c.length.mean_tokens, 1),
                _f(h and h.implicit_reward.rate, 2),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) for r in [cols, *rows]]
    return "\n".join(lines)


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


# -- figures -------------------------------------------------------------------------------------------------


def plot_leaderboard(board: list[Rating], title: str) -> str:
    fig, ax = figure(6.0, 0.6 + 0.45 * len(board))
    names = [r.checkpoint for r in board][::-1]
    rating = np.array([r.rating for r in board][::-1])
    lo = rating - np.array([r.ci95[0] for r in board][::-1])
    hi = np.array([r.ci95[1] for r in board][::-1]) - rating
    ax.errorbar(rating, range(len(names)), xerr=[lo, hi], fmt="o", color="#1f77b4", capsize=4)
    ax.set_yticks(range(len(names)), names)
    ax.axvline(1000, color="#bbb", ls="--", lw=1)
    ax.set(xlabel="Bradley-Terry rating (Elo scale; bars: 95 % bootstrap CI)", title=title)
    return svg(fig)


def plot_heatmap(names: list[str], rate: list[list[float]]) -> str:
    fig, ax = figure(1.5 + 0.9 * len(names), 1.2 + 0.8 * len(names))
    im = ax.imshow(np.array(rate), vmin=0, vmax=1, cmap="RdYlGn")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{rate[i][j]:.2f}", ha="center", va="center", fontsize=9)
    ax.set(xlabel="opponent", ylabel="checkpoint", title="Win rate of row over column (reward model)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="win rate")
    return svg(fig)


def plot_reward_vs_kl(points: list[tuple[str, float, float]]) -> str:
    fig, ax = figure(5.0, 3.6)
    for name, kl, reward in points:
        ax.scatter(kl, reward, s=40)
        ax.annotate(name, (kl, reward), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set(
        xlabel="KL to the reference (nats per response)",
        ylabel="mean reward-model score",
        title="Reward vs KL",
    )
    return svg(fig)


def plot_lengths(lengths: dict[str, list[int]]) -> str:
    fig, ax = figure(6.0, 3.2)
    top = max(max(v) for v in lengths.values() if v) + 1
    bins = np.linspace(0, top, 21)
    for name, v in lengths.items():
        ax.hist(v, bins=bins, alpha=0.45, label=name)
    ax.set(xlabel="response length (tokens)", ylabel="responses", title="Response lengths")
    ax.legend(fontsize=8)
    return svg(fig)


def plot_agreement(human: dict[str, HumanAgreement]) -> str:
    names = list(human)
    fig, ax = figure(6.0, 3.2)
    x = np.arange(len(names))
    for k, (key, label) in enumerate(
        (("implicit_reward", "implicit reward β·log π/π_ref"), ("logprob", "sequence log-prob"))
    ):
        rci = [getattr(human[n], key) for n in names]
        rate = np.array([r.rate for r in rci])
        lo = rate - np.array([r.ci95[0] for r in rci])
        hi = np.array([r.ci95[1] for r in rci]) - rate
        ax.bar(x + (k - 0.5) * 0.38, rate, 0.38, yerr=[lo, hi], capsize=3, label=label)
    ax.axhline(0.5, color="#999", ls="--", lw=1)
    ax.set_xticks(x, names)
    ax.set(
        ylim=(0, 1),
        ylabel="share of held-out pairs ordered like the humans",
        title="Agreement with held-out human preferences",
    )
    ax.legend(fontsize=8)
    return svg(fig)


def write_html(result: CompareResult, path: Path) -> None:
    ck = result.checkpoints
    sections = [("Summary", "<pre>" + terminal_table(result).replace("<", "&lt;") + "</pre>")]
    if result.bradley_terry and result.bradley_terry.checkpoints:
        sections.append(
            (
                "Leaderboard (reward model)",
                plot_leaderboard(result.bradley_terry.checkpoints, "Bradley-Terry on reward-model battles"),
            )
        )
    if result.win_rates:
        sections.append(("Pairwise win rates", plot_heatmap(list(ck), result.win_rates.rate)))
    points = [(n, c.kl.mean, c.reward.mean) for n, c in ck.items() if c.kl and c.reward]
    if points:
        sections.append(("Reward vs KL", plot_reward_vs_kl(points)))
    sections.append(("Response lengths", plot_lengths({n: c.length.tokens for n, c in ck.items()})))
    if result.human_agreement:
        sections.append(("Agreement with held-out human preferences", plot_agreement(result.human_agreement)))
    vb = [(n, c.vs_baseline) for n, c in ck.items() if c.vs_baseline]
    if vb:
        rows = [
            (n, v.win_rate, str([round(x, 3) for x in v.win_rate_ci95]), v.lc_win_rate, v.length_coef)
            for n, v in vb
        ]
        sections.append(
            (
                f"Against the baseline ({result.baseline})",
                table(["checkpoint", "win rate", "95% CI", "LC win rate", "length coef"], rows),
            )
        )
    if result.judge:
        rows = [(n, j.win_rate, j.position_bias, j.order_disagreement) for n, j in result.judge.items()]
        sections.append(
            (
                "LLM judge (both orders)",
                table(["checkpoint", "win rate vs baseline", "picks first", "same side both orders"], rows),
            )
        )
    summary = (
        f"{len(ck)} checkpoints on {result.prompts} prompts; baseline {result.baseline}, "
        f"reference {result.reference}."
    )
    path.write_text(page("Checkpoint comparison", sections, flags=result.flags, summary=summary))


def write_outputs(
    out_dir: Path, result: CompareResult, ids: list[str], prompts: list, answers: dict[str, list[str]]
) -> dict:
    """answers.jsonl, compare.json (`result.to_dict()`) and report.html into `out_dir`; returns them as
    declared outputs."""
    with open(out_dir / "answers.jsonl", "w", encoding="utf-8") as f:
        for i, (pid, prompt) in enumerate(zip(ids, prompts, strict=True)):
            row = {"id": pid, "prompt": prompt, "answers": {n: a[i] for n, a in answers.items()}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out_dir / "compare.json").write_text(json.dumps(result.to_dict(), indent=2, default=float))
    write_html(result, out_dir / "report.html")
    return {
        "report": out_dir / "report.html",
        "compare_json": out_dir / "compare.json",
        "answers": out_dir / "answers.jsonl",
    }
