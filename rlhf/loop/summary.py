"""The closing table of `rlhf loop` / `rlhf demo`: one line per step — what it did, its wall time and its
key figure, in words."""

from __future__ import annotations

import json

from rlhf.compare import read_result
from rlhf.loop.steps import StepRecord
from rlhf.runs import MANIFEST


def key_figure(rec: StepRecord) -> str:
    r = rec.result or {}
    if rec.stage in ("sft", "dpo", "ppo", "kto") and r.get("train_loss") is not None:
        return f"{r.get('global_step')} steps, train loss {r['train_loss']:.3f}"
    if rec.stage == "generate" and "items_added" in r:
        return f"{r['items_added']} prompts x {r['candidates'] // max(1, r['items_added'])} candidates, {r['tokens_per_s']} tok/s"
    if rec.stage == "collect":
        agree = r.get("agreement")
        return (
            f"{r.get('judgements', 0)} judgements, {r.get('complete', 0)}/{r.get('items', 0)} items complete"
            + (f", {agree:.0%} agreement" if agree is not None else "")
        )
    if rec.stage == "arena" and r.get("n"):
        lo, hi = r["ci95"]
        return f"{r['n']} votes, new wins {r['rate']:.0%} [{lo:.0%}, {hi:.0%}]"
    if rec.stage == "export":
        acct = _manifest(rec).get("accounting") or {}
        if "balance" in acct:  # unpaired (KTO) rows
            b = acct["balance"]
            return f"{acct.get('rows_out', '?')} rows ({b.get('desirable')} good, {b.get('undesirable')} bad)"
        return f"{acct.get('pairs_out', '?')} preference pairs from {acct.get('items_exported', '?')} items"
    if rec.stage == "reward" and "eval_accuracy" in r:
        return f"held-out accuracy {r['eval_accuracy']:.2f}"
    if rec.stage == "compare":
        out = (_manifest(rec).get("outputs") or {}).get("compare_json")
        if out:
            res = read_result(rec.run / out["path"])
            new = res.names[-1]  # the round's new policy (start and best come first)
            vs, kl = res.checkpoints[new].vs_baseline, res.checkpoints[new].kl
            text = (
                f"{new} beats {res.baseline} in {vs.win_rate:.0%} (RM)" if vs else f"{new} vs {res.baseline}"
            )
            return text + (f", KL {kl.mean:.2f}" if kl else "")
    return ""


def _manifest(rec: StepRecord) -> dict:
    try:
        return json.loads((rec.run / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def table(records: list[StepRecord]) -> str:
    rows = [("step", "done", "time", "key figure")]
    rows += [(r.key, r.action, f"{r.seconds:.0f} s", key_figure(r)) for r in records]
    total = sum(r.seconds for r in records)
    rows.append(("total", "", f"{total:.0f} s", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
