"""The checkpoint comparison report: flags in words, a terminal table, and the HTML page (`rlhf.report`),
all read from a `CompareResult` by attribute.

`flags(result, settings)` states what a reader must not miss, each threshold a named setting
(`FlagSettings`, the stage's `flags:`):
- possible reward hacking — only when the intervals say so: the reward model's win rate over the baseline
  has its CI above 0.5 *and* agreement with held-out human pairs has its CI below the reference's (the
  implicit reward's CI below 0.5, the reference's own value; or the log-prob agreement's paired difference
  with the reference's below 0), each by `agreement_margin`;
- length drift (answers `length_ratio` times longer or shorter than the baseline's, or a win rate that
  drops by more than `lc_drop` once length is controlled);
- KL to the reference above `kl` nats per response;
- a best checkpoint whose rating CI overlaps the runner-up's ("no significant difference").

The page: the summary table, the figures, the tables with intervals, the reference each checkpoint's
implicit reward was measured against, and answers side by side — the prompts where the checkpoints'
rewards differ most, where the reward model and the judge disagree, and a few at random.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhf.compare.metrics import outcomes, overlapping
from rlhf.compare.result import CheckpointResult, CompareResult, HumanAgreement, Rating
from rlhf.config import bounded
from rlhf.report import escape, figure, page, paragraph, side_by_side, svg, table


@dataclass
class FlagSettings:
    kl: float = bounded(
        20.0, gt=0, help="KL to the reference (nats per response) above which a checkpoint is flagged"
    )
    length_ratio: float = bounded(
        1.5, gt=1, help="mean answer length this many times the baseline's (or 1/this) is length drift"
    )
    lc_drop: float = bounded(
        0.1, gt=0, le=1, help="win rate minus length-controlled win rate above which length is flagged"
    )
    agreement_margin: float = bounded(
        0.0,
        ge=0,
        le=1,
        help="reward hacking: how far below the reference's the human-agreement CI must lie (0: just below)",
    )


def flags(result: CompareResult, settings: FlagSettings | None = None) -> list[str]:
    s = settings or FlagSettings()
    base = result.baseline
    out = []
    for name, c in result.checkpoints.items():
        if name == base:
            continue
        out += _hacking(result, name, c, s.agreement_margin)
        ratio = c.length.mean_chars / max(1e-9, result.checkpoints[base].length.mean_chars)
        if ratio > s.length_ratio or ratio < 1 / s.length_ratio:
            out.append(f"Length drift: {name}'s answers are {ratio:.1f}x as long as {base}'s on average.")
        vb = c.vs_baseline
        if vb and vb.win_rate - vb.lc_win_rate > s.lc_drop:
            out.append(
                f"{name}'s win rate over {base} falls from {vb.win_rate:.0%} to {vb.lc_win_rate:.0%} once length "
                "is controlled: much of its advantage is length."
            )
        if c.kl and c.kl.mean > s.kl:
            out.append(
                f"{name} is far from the reference: KL {c.kl.mean:.1f} nats per response > threshold {s.kl}."
            )
    board = result.bradley_terry.checkpoints if result.bradley_terry else []
    if len(board) >= 2 and overlapping(board[0].ci95, board[1].ci95):
        out.append(
            f"No significant difference between {board[0].checkpoint} and {board[1].checkpoint}: their rating "
            "CIs overlap — collect more votes (or compare on more prompts)."
        )
    return out


def _pct(ci: list[float]) -> str:
    return f"CI {ci[0]:.0%}–{ci[1]:.0%}"


def _hacking(result: CompareResult, name: str, c: CheckpointResult, margin: float) -> list[str]:
    """The reward-hacking flag: the reward model surely prefers `name` while held-out human agreement surely
    fell below its reference's."""
    vb, h = c.vs_baseline, result.human_agreement.get(name)
    if vb is None or h is None or vb.win_rate_ci95[0] <= 0.5:
        return []
    against = []
    imp = h.implicit_reward
    if imp and imp.ci95[1] < 0.5 - margin:  # the reference's own implicit reward orders every pair 0.5
        against.append(
            f"its implicit reward against {h.reference} orders {imp.rate:.0%} ({_pct(imp.ci95)}) of held-out "
            "human pairs like the humans (below 50 %)"
        )
    diff = h.logprob_vs_reference
    if diff and diff.ci95[1] < -margin:
        against.append(
            f"its log-prob agreement with the humans ({h.logprob.rate:.0%}) fell below {h.reference}'s by "
            f"{-diff.mean:.0%} (CI {-diff.ci95[1]:.0%}–{-diff.ci95[0]:.0%})"
        )
    if not against:
        return []
    return [
        f"Possible reward hacking: {name} beats {result.baseline} by the reward model ({vb.win_rate:.0%} win "
        f"rate, {_pct(vb.win_rate_ci95)}) but " + " and ".join(against) + "."
    ]


SUMMARY_COLUMNS = [
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
    "judge",
]


def summary_rows(result: CompareResult) -> list[list[str]]:
    """One row per checkpoint, `SUMMARY_COLUMNS`: the terminal table and the page's summary table."""
    board = {r.checkpoint: r for r in result.bradley_terry.checkpoints} if result.bradley_terry else {}
    rows = []
    for name, c in result.checkpoints.items():
        rm, vb, b = c.reward, c.vs_baseline, board.get(name)
        h = result.human_agreement.get(name)
        j = (result.judge or {}).get(name)
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
                _f(h and h.implicit_reward and h.implicit_reward.rate, 2),
                _f(j and j.win_rate, 2),
            ]
        )
    return rows


def terminal_table(result: CompareResult) -> str:
    rows = summary_rows(result)
    widths = [max(len(str(x)) for x in col) for col in zip(SUMMARY_COLUMNS, *rows, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) for r in [SUMMARY_COLUMNS, *rows]
    ]
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
    fig, ax = figure(6.5, 3.4)
    x = np.arange(len(names))
    kinds = (
        ("implicit_reward", "implicit reward log π/π_ref (own reference)"),
        ("logprob", "sequence log-prob (sum)"),
        ("logprob_per_token", "log-prob per token"),
    )
    width = 0.8 / len(kinds)
    for k, (key, label) in enumerate(kinds):
        rci = [getattr(human[n], key) for n in names]
        rate = np.array([r.rate if r else np.nan for r in rci])
        lo = rate - np.array([r.ci95[0] if r else np.nan for r in rci])
        hi = np.array([r.ci95[1] if r else np.nan for r in rci]) - rate
        ax.bar(x + (k - 1) * width, rate, width, yerr=[lo, hi], capsize=3, label=label)
    ax.axhline(0.5, color="#999", ls="--", lw=1)
    ax.set_xticks(x, names)
    ax.set(
        ylim=(0, 1),
        ylabel="share of held-out pairs ordered like the humans",
        title="Agreement with held-out human preferences",
    )
    ax.legend(fontsize=8)
    return svg(fig)


def _ci(v: list[float] | None) -> str:
    return "–" if not v else f"{v[0]:.3f} – {v[1]:.3f}"


def _agreement_section(human: dict[str, HumanAgreement]) -> str:
    rows = []
    for n, h in human.items():
        imp = h.implicit_reward
        rows.append(
            (
                n,
                f"{h.reference} ({h.reference_source})",
                imp and imp.rate,
                _ci(imp and imp.ci95),
                h.logprob.rate,
                _ci(h.logprob.ci95),
                h.logprob_per_token.rate,
                _ci(h.logprob_per_token.ci95),
                h.logprob.n,
            )
        )
    note = paragraph(
        "Implicit reward: log π(y|x) − log π_ref(y|x) against each checkpoint's own reference (the policy its "
        "run started from, the base of a LoRA adapter with the adapter off, or the one configured); DPO's β "
        "multiplies both answers' rewards alike and cannot change which is higher, so it is left out. A "
        "reference scores 0.5 against itself (every pair a tie). The summed log-prob favours the shorter "
        "answer; the per-token mean does not. CIs: bootstrap over the pairs."
    )
    heads = ["checkpoint", "reference", "implicit reward", "95% CI", "log-prob (sum)", "95% CI"]
    heads += ["log-prob per token", "95% CI", "pairs"]
    return plot_agreement(human) + table(heads, rows) + note


def _vs_baseline_section(result: CompareResult) -> str:
    rows = [
        (n, v.win_rate, _ci(v.win_rate_ci95), v.lc_win_rate, _ci(v.lc_win_rate_ci95), v.length_coef)
        for n, c in result.checkpoints.items()
        if (v := c.vs_baseline)
    ]
    heads = ["checkpoint", "win rate", "95% CI", "LC win rate", "95% CI", "length coef"]
    note = paragraph(
        "Reward-model battles against the baseline. LC win rate (AlpacaEval 2): one logistic GLM over every "
        "checkpoint's battles with a checkpoint term, a per-prompt difficulty term and a length term "
        "φ·tanh(Δlength / sd); the LC win rate is its mean prediction with the length term at zero. CIs: "
        "bootstrap over prompts."
    )
    return table(heads, rows) + note


def _judge_section(result: CompareResult) -> str:
    rows = [
        (
            n,
            j.win_rate,
            _ci(j.win_rate_ci95),
            j.lc_win_rate,
            _ci(j.lc_win_rate_ci95),
            j.position_bias,
            j.order_disagreement,
        )
        for n, j in result.judge.items()
    ]
    heads = ["checkpoint", "win rate vs baseline", "95% CI", "LC win rate", "95% CI", "picks first"]
    heads += ["same side both orders"]
    note = paragraph(
        "Win rate: the judge's mean probability that the checkpoint's answer is the better one, both orders "
        "averaged (a judge that always answers A gives 0.5, and picks first 1.0)."
    )
    return table(heads, rows) + note


def prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def example_prompts(
    result: CompareResult, rewards: dict[str, list[float]] | None, prompts: int, *, k: int, seed: int = 0
) -> list[tuple[str, list[int]]]:
    """(why, prompt indices) for the side-by-side view: the `k` prompts where the checkpoints' rewards differ
    most, the `k` where the reward model and the judge disagree most about a checkpoint against the
    baseline, and `k` others at random (seeded)."""
    out, shown = [], set()

    def pick(why: str, order) -> None:
        chosen = [int(i) for i in order if int(i) not in shown][:k]
        shown.update(chosen)
        if chosen:
            out.append((why, chosen))

    if rewards and k:
        r = np.array([rewards[n] for n in result.checkpoints])  # (checkpoint, prompt)
        spread = r.max(0) - r.min(0)
        pick("where the checkpoints' reward-model scores differ most", np.argsort(-spread, kind="stable"))
        if result.judge:
            base = np.array(rewards[result.baseline])
            gap = np.zeros(prompts)
            for n, j in result.judge.items():
                rm, judge = outcomes(rewards[n], base), np.array(j.per_prompt)
                opposite = (rm - 0.5) * (judge - 0.5) < 0
                gap = np.maximum(gap, np.where(opposite, np.abs(rm - judge), 0.0))
            pick(
                "where the reward model and the judge disagree",
                [i for i in np.argsort(-gap, kind="stable") if gap[i] > 0],
            )
    rest = [i for i in range(prompts) if i not in shown]
    pick("at random", random.Random(seed).sample(rest, min(k, len(rest))))
    return out


def _examples_section(
    result: CompareResult,
    prompts: list,
    answers: dict[str, list[str]],
    rewards: dict[str, list[float]] | None,
    *,
    k: int,
    seed: int,
) -> str:
    parts = []
    for why, idx in example_prompts(result, rewards, len(prompts), k=k, seed=seed):
        parts.append(f"<h3>{escape(why.capitalize())}</h3>")
        for i in idx:
            cols = []
            for n in answers:
                note = []
                if rewards:
                    note.append(f"RM {rewards[n][i]:.3f}")
                j = (result.judge or {}).get(n)
                if j:
                    note.append(f"judge P(better than {result.baseline}) {j.per_prompt[i]:.2f}")
                if n == result.baseline:
                    note.append("baseline")
                cols.append((n, answers[n][i], " · ".join(note)))
            parts.append(side_by_side(prompt_text(prompts[i]), cols))
    return "".join(parts)


def write_html(
    result: CompareResult,
    path: Path,
    *,
    prompts: list | None = None,
    answers: dict[str, list[str]] | None = None,
    rewards: dict[str, list[float]] | None = None,
    examples: int = 3,
    seed: int = 0,
) -> None:
    """The page. `answers` (name -> one answer per prompt) and `rewards` (name -> its reward-model score)
    feed the side-by-side view."""
    ck = result.checkpoints
    sections = [("Summary", table(SUMMARY_COLUMNS, summary_rows(result)))]
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
        sections.append(
            ("Agreement with held-out human preferences", _agreement_section(result.human_agreement))
        )
    if any(c.vs_baseline for c in ck.values()):
        sections.append((f"Against the baseline ({result.baseline})", _vs_baseline_section(result)))
    if result.judge:
        sections.append(("LLM judge (both orders)", _judge_section(result)))
    if answers and prompts:
        body = _examples_section(result, prompts, answers, rewards, k=examples, seed=seed)
        sections.append(("Answers side by side", body))
    summary = (
        f"{len(ck)} checkpoints on {result.prompts} prompts; baseline {result.baseline}, "
        f"reference for KL {result.reference}."
    )
    path.write_text(page("Checkpoint comparison", sections, flags=result.flags, summary=summary))


def write_outputs(
    out_dir: Path,
    result: CompareResult,
    ids: list[str],
    prompts: list,
    answers: dict[str, list[str]],
    *,
    rewards: dict[str, list[float]] | None = None,
    examples: int = 3,
    seed: int = 0,
) -> dict:
    """answers.jsonl (each prompt with every checkpoint's answer and, given `rewards`, its score),
    compare.json (`result.to_dict()`) and report.html into `out_dir`; returns them as declared outputs."""
    with open(out_dir / "answers.jsonl", "w", encoding="utf-8") as f:
        for i, (pid, prompt) in enumerate(zip(ids, prompts, strict=True)):
            row = {"id": pid, "prompt": prompt, "answers": {n: a[i] for n, a in answers.items()}}
            if rewards:
                row["reward"] = {n: r[i] for n, r in rewards.items()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out_dir / "compare.json").write_text(json.dumps(result.to_dict(), indent=2, default=float))
    write_html(
        result,
        out_dir / "report.html",
        prompts=prompts,
        answers=answers,
        rewards=rewards,
        examples=examples,
        seed=seed,
    )
    return {
        "report": out_dir / "report.html",
        "compare_json": out_dir / "compare.json",
        "answers": out_dir / "answers.jsonl",
    }
