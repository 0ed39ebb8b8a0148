"""`rlhf score`: score (prompt, response) rows with a reward model, or measure its accuracy on preferences.

    rlhf score --model runs/reward-demo --input pairs.jsonl            # chosen/rejected -> accuracy
    rlhf score --model runs/reward-demo --input responses.jsonl --output scored.jsonl [--normalize]

Rows with `chosen`/`rejected` (TRL format or HH-RLHF) are validated like imports (rejections reported) and
the held accuracy is printed with its bootstrap 95 % CI. Rows with `prompt`/`response` get a `reward`
column (normalized with the RM's saved statistics when --normalize).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rlhf.data import load_rows, validate_rows
from rlhf.errors import DataError, ModelError, RlhfError
from rlhf.models import resolve_model_path
from rlhf.preferences import normalize_preference_row
from rlhf.reward import META_FILE, RewardScorer, accuracy, accuracy_ci


def check_args(args) -> str:
    """Everything about the command line that can be wrong, before any model loads; returns the RM dir."""
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.output and Path(args.output).is_dir():
        raise DataError(f"--output '{args.output}' is a directory; pass a file path (e.g. scored.jsonl).")
    hint = "pass an `rlhf reward` run (e.g. runs/reward-demo) or its model/ directory"
    try:
        path = Path(resolve_model_path(args.model))
    except RlhfError as e:
        raise ModelError(f"--model: {e} To score, {hint}.") from None
    if not path.is_dir():
        raise ModelError(f"--model '{args.model}': no such directory; {hint}.")
    if not (path / META_FILE).is_file():
        raise ModelError(
            f"--model '{args.model}' is not a reward model trained by rlhf (no {META_FILE} beside its weights, "
            f"so its score head would be untrained or unknown): {hint}."
        )
    return str(path)


def main(args) -> int:
    model_dir = check_args(args)
    rows = load_rows(args.input, what="--input")
    scorer = RewardScorer(model_dir, batch_size=args.batch_size)
    columns = {k for r in rows.rows for k in r}
    if {"chosen", "rejected"} <= columns:
        pairs, acct = validate_rows(rows, lambda r: normalize_preference_row(r), what="--input")
        rc = scorer.score(
            [p["prompt"] for p in pairs], [p["chosen"] for p in pairs], normalize=args.normalize
        )
        rr = scorer.score(
            [p["prompt"] for p in pairs], [p["rejected"] for p in pairs], normalize=args.normalize
        )
        lo, hi = accuracy_ci(rc, rr)
        s = acct.summary()
        print(
            f"{len(pairs)} pairs scored ({s['rows_rejected']} rows rejected {s['rejected_by_reason'] or ''}); "
            f"accuracy {accuracy(rc, rr):.3f} (95 % CI {lo:.3f} - {hi:.3f})"
        )
        out_rows = [
            {**p, "reward_chosen": c, "reward_rejected": r} for p, c, r in zip(pairs, rc, rr, strict=True)
        ]
    elif {"prompt", "response"} <= columns:
        bad = [
            rid
            for rid, r in zip(rows.ids, rows.rows, strict=True)
            if not r.get("response") or not r.get("prompt")
        ]
        if bad or rows.unreadable:
            raise DataError(
                f"--input: {len(bad) + len(rows.unreadable)} rows lack a prompt or response "
                f"(first: {(bad or [rows.unreadable[0].id])[0]}); fix them before scoring."
            )
        rewards = scorer.score(
            [r["prompt"] for r in rows.rows], [r["response"] for r in rows.rows], normalize=args.normalize
        )
        out_rows = [{**r, "reward": v} for r, v in zip(rows.rows, rewards, strict=True)]
        print(
            f"{len(out_rows)} responses scored; mean reward {sum(rewards) / len(rewards):.3f}",
            file=sys.stderr,
        )
    else:
        raise DataError(
            f"--input: need 'chosen' and 'rejected' columns (accuracy) or 'prompt' and 'response' "
            f"(scores); found {', '.join(sorted(columns)) or 'none'}."
        )
    if args.output:
        with open(args.output, "w") as f:
            for r in out_rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif "reward" in out_rows[0]:
        for r in out_rows:
            print(json.dumps(r, ensure_ascii=False))
    return 0
