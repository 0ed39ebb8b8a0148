"""How a round's labels become training data (pure functions; the loop writes their results as the
`r<N>-labels` run, whose manifest records which exports went in — so lineage follows it):

- **The human slice.** A share of every round's labeled *items* (all pairs of an item on the same side) is
  held out of all training; the side of an item is fixed by a hash of (seed, item id), so re-runs and
  later rounds agree. The slice grows round by round and judges promotion (human agreement) — evidence no
  model was trained on.
- **Labels accumulate.** The reward model trains on every round's pairs so far (de-duplicated on
  (prompt, chosen, rejected); earlier policies' answers remain valid preferences), each row tagged with
  its round in `slice`, so the reward model's report gives per-round accuracy.
- **DPO** trains on this round's pairs plus a replay share of earlier rounds' (seeded sample): votes about
  another policy's answers enter only through replay, and the manifest counts them.
- **Decontamination**: training pairs whose prompt or answers contain a held-out evaluation prompt or a
  human-slice prompt (`rlhf.clean.contamination`: exact for short texts, 8-gram share above) are
  dropped from training and counted.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from rlhf.clean import EvalIndex, contamination, eval_texts_of
from rlhf.runs import RunDir, RunSettings


def held_out(item_id: str, share: float, seed: int) -> bool:
    """Whether an item belongs to the human slice: a stable pseudo-random draw from (seed, item id)."""
    digest = hashlib.sha256(f"{seed}|{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_by_item(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): every pair of an item goes to the side its item was drawn to."""
    train, slice_ = [], []
    for r in rows:
        (slice_ if held_out(str(r.get("item_id", r.get("id"))), share, seed) else train).append(r)
    return train, slice_


def pair_key(row: dict) -> str:
    return json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True, ensure_ascii=False)


def deduplicated(rows: list[dict]) -> list[dict]:
    """The first row of each (prompt, chosen, rejected), in order."""
    seen, out = set(), []
    for r in rows:
        k = pair_key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def tagged(rows: list[dict], round_: int) -> list[dict]:
    """Rows with their round in `slice` (the reward-model report's per-slice accuracy) and `round`."""
    return [{**r, "slice": f"r{round_}", "round": round_} for r in rows]


def replay(earlier: list[dict], share: float, n_current: int, seed: int) -> list[dict]:
    """A seeded sample of earlier rounds' rows, `share` x the current round's count at most."""
    k = min(len(earlier), round(share * n_current))
    return random.Random(seed).sample(earlier, k) if k else []


def counts_by_round(rows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        key = f"r{r.get('round', '?')}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


# -- the r<N>-labels run (I/O) ------------------------------------------------------------------------------


@dataclass
class LabelsRun:
    """The config of a labels run (what its resolved_config.yaml records)."""

    run: RunSettings
    exports: list[str]  # the preference files of rounds 1..N's exports, in round order
    eval_prompts: str  # the loop's held-out evaluation prompts (a JSON-lines file)
    holdout_share: float
    accumulate: bool
    dpo_replay: float


@dataclass
class RoundData:
    reward_train: Path
    dpo_train: Path
    human_slice: Path | None  # None while the slice is empty
    counts: dict


def assemble(cfg: LabelsRun, seed: int) -> RoundData:
    """Read every round's exported pairs, split off the human slice, and write the reward model's and
    DPO's training files and the slice, as a run whose manifest records the exports that went in."""
    with RunDir.prepare(cfg.run, "labels", cfg, overwrite=True) as run:
        per_round = []
        for r, path in enumerate(cfg.exports, start=1):
            run.record_input(f"export[r{r}]", path, path)
            rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
            per_round.append(split_by_item(tagged(rows, r), cfg.holdout_share, seed))
        current_train = per_round[-1][0]
        earlier = deduplicated([row for train, _ in per_round[:-1] for row in train])
        reward_rows = (
            deduplicated([row for train, _ in per_round for row in train])
            if cfg.accumulate
            else current_train
        )
        dpo_rows = current_train + replay(
            earlier, cfg.dpo_replay, len(current_train), seed + len(cfg.exports)
        )
        slice_rows = [row for _, held in per_round for row in held]
        run.record_input("eval_prompts", cfg.eval_prompts, cfg.eval_prompts)
        evals = [json.loads(x) for x in Path(cfg.eval_prompts).read_text().splitlines() if x.strip()]
        # the evaluation units are prompts: the held-out ones and the slice's (their answers are the policy's
        # own candidates, which other items can share word for word without leaking a judgement)
        index = EvalIndex(eval_texts_of([{"prompt": r["prompt"]} for r in evals + slice_rows]))
        reward_rows, cut_reward = _clean(reward_rows, index)
        dpo_rows, cut_dpo = _clean(dpo_rows, index)
        outputs = {
            "reward_train": _write(run.path / "reward_train.jsonl", reward_rows),
            "dpo_train": _write(run.path / "dpo_train.jsonl", dpo_rows),
        }
        if slice_rows:
            outputs["human_slice"] = _write(run.path / "human_slice.jsonl", slice_rows)
        counts = {
            "reward_train": counts_by_round(reward_rows),
            "dpo_train": counts_by_round(dpo_rows),
            "human_slice": counts_by_round(slice_rows),
            "decontaminated": {"reward_train": cut_reward, "dpo_train": cut_dpo},
        }
        run.finish(outputs=outputs, result=counts)
        return RoundData(outputs["reward_train"], outputs["dpo_train"], outputs.get("human_slice"), counts)


def _clean(rows: list[dict], index: EvalIndex) -> tuple[list[dict], int]:
    """Rows without those that contain evaluation texts, and how many were dropped."""
    bad = set(contamination(rows, index).contaminated)
    return [r for i, r in enumerate(rows) if i not in bad], len(bad)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
