"""The checkpoint comparison report: flags in words, a terminal table, and the HTML page (`rlhf.report`).

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
from rlhf.report import figure, page, svg, table


def flags(result: dict, *, kl_threshold: float, length_ratio_limit: float = 1.5) -> list[str]:
    out = []
    ck = result["checkpoints"]
    base = result["baseline"]
    human = result.get("human_agreement") or {}
    for name, c in ck.items():
        if name == base:
            continue
        wr = (c.get("vs_baseline") or {}).get("win_rate")
        h = human.get(name) or {}
        implicit, plain, plain_base = (
            h.get("implicit_reward"),
            h.get("logprob"),
            (human.get(base) or {}).get("logprob"),
        )
        # implicit rewards are measured against the reference, whose own agreement is 0.5 by construction;
        # plain log-prob agreement is compared with the baseline's
        against = []
        if implicit and implicit["rate"] < 0.5 - 0.02:
            against.append(
                f"its implicit reward orders {implicit['rate']:.0%} of held-out human pairs like the humans (< 50 %)"
            )
        if plain and plain_base and plain["rate"] < plain_base["rate"] - 0.02:
            against.append(
                f"its log-prob agreement fell to {plain['rate']:.2f} from the baseline's {plain_base['rate']:.2f}"
            )
        if wr is not None and wr > 0.5 and against:
            out.append(
                f"Possible reward hacking: {name} beats {base} by the reward model ({wr:.0%} win rate) but "
                + " and ".join(against)
                + "."
            )
        ratio = c["length"]["mean_chars"] / max(1e-9, ck[base]["length"]["mean_chars"])
        if ratio > length_ratio_limit or ratio < 1 / length_ratio_limit:
            out.append(f"Length drift: {name}'s answers are {ratio:.1f}x as long as {base}'s on average.")
        vb = c.get("vs_baseline") or {}
        if "lc_win_rate" in vb and vb["win_rate"] - vb["lc_win_rate"] > 0.1:
            out.append(
                f"{name}'s win rate over {base} falls from {vb['win_rate']:.0%} to {vb['lc_win_rate']:.0%} once length "
                "is controlled: much of its advantage is length."
            )
        kl = (c.get("kl") or {}).get("mean")
        if kl is not None and kl > kl_threshold:
            out.append(
                f"{name} is far from the reference: KL {kl:.1f} nats per response > threshold {kl_threshold}."
            )
    board = (result.get("bradley_terry") or {}).get("checkpoints") or []
    if len(board) >= 2 and overlapping(board[0]["ci95"], board[1]["ci95"]):
        out.append(
            f"No significant difference between {board[0]['checkpoint']} and {board[1]['checkpoint']}: their rating "
            "CIs overlap — collect more votes (or compare on more prompts)."
        )
    return out


def terminal_table(result: dict) -> str:
    board = {r["checkpoint"]: r for r in (result.get("bradley_terry") or {}).get("checkpoints", [])}
    human = result.get("human_agreement") or {}
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
    for name, c in result["checkpoints"].items():
        rm = c.get("reward") or {}
        vb = c.get("vs_baseline") or {}
        b = board.get(name, {})
        h = (human.get(name) or {}).get("implicit_reward") or {}
        rows.append(
            [
                name,
                _f(rm.get("mean")),
                f"{_f(rm['ci95'][0])}..{_f(rm['ci95'][1])}" if rm else "-",
                _f(b.get("rating"), 0),
                _f(b.get("p_best"), 2),
                _f(vb.get("win_rate"), 2),
                _f(vb.get("lc_win_rate"), 2),
                _f((c.get("kl") or {}).get("mean"), 2),
                _f(c["length"]["mean_tokens"], 1),
                _f(h.get("rate"), 2),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) for r in [cols, *rows]]
    return "\n".join(lines)


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


# -- figures -------------------------------------------------------------------------------------------------


def plot_leaderboard(board: list[dict], title: str) -> str:
    fig, ax = figure(6.0, 0.6 + 0.45 * len(board))
    names = [r["checkpoint"] for r in board][::-1]
    rating = np.array([r["rating"] for r in board][::-1])
    lo = rating - np.array([r["ci95"][0] for r in board][::-1])
    hi = np.array([r["ci95"][1] for r in board][::-1]) - rating
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


def plot_agreement(human: dict) -> str:
    names = list(human)
    fig, ax = figure(6.0, 3.2)
    x = np.arange(len(names))
    for k, (key, label) in enumerate(
        (("implicit_reward", "implicit reward β·log π/π_ref"), ("logprob", "sequence log-prob"))
    ):
        rate = np.array([human[n][key]["rate"] for n in names])
        lo = rate - np.array([human[n][key]["ci95"][0] for n in names])
        hi = np.array([human[n][key]["ci95"][1] for n in names]) - rate
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


def write_html(result: dict, path, *, flags_: list[str]) -> None:
    names = list(result["checkpoints"])
    sections = [("Summary", "<pre>" + terminal_table(result).replace("<", "&lt;") + "</pre>")]
    bt = result.get("bradley_terry")
    if bt and bt.get("checkpoints"):
        sections.append(
            (
                "Leaderboard (reward model)",
                plot_leaderboard(bt["checkpoints"], "Bradley-Terry on reward-model battles"),
            )
        )
    wins = result.get("win_rates")
    if wins:
        sections.append(("Pairwise win rates", plot_heatmap(names, wins["rate"])))
    points = [
        (n, c["kl"]["mean"], c["reward"]["mean"])
        for n, c in result["checkpoints"].items()
        if c.get("kl") and c.get("reward")
    ]
    if points:
        sections.append(("Reward vs KL", plot_reward_vs_kl(points)))
    sections.append(
        (
            "Response lengths",
            plot_lengths({n: c["length"]["tokens"] for n, c in result["checkpoints"].items()}),
        )
    )
    if result.get("human_agreement"):
        sections.append(
            ("Agreement with held-out human preferences", plot_agreement(result["human_agreement"]))
        )
    vb = [(n, c["vs_baseline"]) for n, c in result["checkpoints"].items() if c.get("vs_baseline")]
    if vb:
        rows = [
            (
                n,
                v["win_rate"],
                str([round(x, 3) for x in v.get("win_rate_ci95", [])]),
                v.get("lc_win_rate"),
                v.get("length_coef"),
            )
            for n, v in vb
        ]
        sections.append(
            (
                f"Against the baseline ({result['baseline']})",
                table(["checkpoint", "win rate", "95% CI", "LC win rate", "length coef"], rows),
            )
        )
    if result.get("judge"):
        rows = [
            (n, j["win_rate"], j["position_bias"], j["order_disagreement"])
            for n, j in result["judge"].items()
        ]
        sections.append(
            (
                "LLM judge (both orders)",
                table(["checkpoint", "win rate vs baseline", "picks first", "same side both orders"], rows),
            )
        )
    summary = f"{len(names)} checkpoints on {result['prompts']} prompts; baseline {result['baseline']}, reference {result['reference']}."
    path.write_text(page("Checkpoint comparison", sections, flags=flags_, summary=summary))


def write_outputs(
    out_dir: Path, result: dict, ids: list[str], prompts: list, answers: dict[str, list[str]]
) -> dict:
    """answers.jsonl, compare.json and report.html into `out_dir`; returns them as declared outputs."""
    with open(out_dir / "answers.jsonl", "w", encoding="utf-8") as f:
        for i, (pid, prompt) in enumerate(zip(ids, prompts, strict=True)):
            row = {"id": pid, "prompt": prompt, "answers": {n: a[i] for n, a in answers.items()}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2, default=float))
    write_html(result, out_dir / "report.html", flags_=result["flags"])
    return {
        "report": out_dir / "report.html",
        "compare_json": out_dir / "compare.json",
        "answers": out_dir / "answers.jsonl",
    }
