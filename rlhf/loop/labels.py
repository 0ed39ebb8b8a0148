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
  human-slice prompt (`rlhf.clean.prompt_index`: an exact normalized copy, or half of its word 13-grams;
  prompts written from one template share shorter n-grams without being copies) are dropped from
  training and counted.
- **Unpaired rows (KTO rounds: good / bad on each answer).** The slice is drawn by *prompt* (every answer
  to a prompt on the same side); KTO trains on the rest (this round's rows plus the replay share of
  earlier rounds'); there is no reward model. The held-out rows become preference pairs within each prompt
  (a good answer over a bad one: `slice_pairs`), so the same human-agreement evidence judges promotion.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from rlhf.clean import EvalIndex, contamination, prompt_index
from rlhf.runs import RunDir, RunSettings


def held_out(item_id: str, share: float, seed: int) -> bool:
    """Whether an item belongs to the human slice: a stable pseudo-random draw from (seed, item id)."""
    digest = hashlib.sha256(f"{seed}|{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_by_item(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): every pair of an item goes to the side its item was drawn to; an
    unpaired row (KTO) goes to the side of its prompt, so all answers to a prompt stay together."""
    train, slice_ = [], []
    for r in rows:
        unit = _text(r["prompt"]) if "label" in r else str(r.get("item_id", r.get("id")))
        (slice_ if held_out(unit, share, seed) else train).append(r)
    return train, slice_


def _text(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def pair_key(row: dict) -> str:
    """What makes a row the same row: (prompt, chosen, rejected), or (prompt, completion, label) unpaired."""
    if "label" in row:
        return _text([row["prompt"], row["completion"], row["label"]])
    return _text([row["prompt"], row["chosen"], row["rejected"]])


def slice_pairs(rows: list[dict]) -> list[dict]:
    """Held-out unpaired rows -> preference pairs within each prompt: every good answer over every bad one
    (answers with both labels across rows are skipped). Pure."""
    by_prompt: dict[str, dict[bool, list[dict]]] = {}
    for r in rows:
        by_prompt.setdefault(_text(r["prompt"]), {True: [], False: []})[bool(r["label"])].append(r)
    out = []
    for groups in by_prompt.values():
        bad_texts = {_text(b["completion"]) for b in groups[False]}
        for good in groups[True]:
            if _text(good["completion"]) in bad_texts:
                continue
            for bad in groups[False]:
                out.append(
                    {
                        "id": f"{good.get('item_id')}>{bad.get('item_id')}",
                        "item_id": good.get("item_id"),
                        "prompt": good["prompt"],
                        "chosen": good["completion"],
                        "rejected": bad["completion"],
                        "round": good.get("round"),
                    }
                )
    return out


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


def binary_items(items: list[dict]) -> list[dict]:
    """A KTO round's items: each of a prompt's k candidates as its own one-answer (binary) item. Pure."""
    return [
        {
            **it,
            "external_id": f"{it['external_id']}#{j}",
            "candidates": [cand],
            "meta": {**(it.get("meta") or {}), "answer": j},
        }
        for it in items
        for j, cand in enumerate(it["candidates"])
    ]


def shortfall(counts: dict, r: int) -> str | None:
    """Why round r cannot train (None when it can): the policy needs this round's rows, DPO's reward
    model its pairs."""
    policy = "kto_train" if "kto_train" in counts else "dpo_train"
    if not counts[policy].get(f"r{r}"):
        return "no labeled rows of this round left to train the policy on"
    if policy == "dpo_train" and not counts["reward_train"]:
        return "no preference pairs left to train the reward model on"
    return None


def describe(counts: dict) -> str:
    """The labels run in one line: what trains on what, the slice, the contamination dropped."""

    def n(key: str) -> int:
        return sum(counts[key].values())

    held = f"human slice {n('human_slice')} pairs held out"
    if "kto_train" in counts:
        head = f"KTO trains on {n('kto_train')} good/bad rows {counts['kto_train']}"
        held += f" (from {n('human_slice_rows')} held-out rows, paired within their prompts)"
    else:
        head = (
            f"reward model trains on {n('reward_train')} pairs {counts['reward_train']}, "
            f"DPO on {n('dpo_train')} {counts['dpo_train']}"
        )
    return f"{head}; {held}; dropped as contaminated by evaluation texts: {counts['decontaminated']}"


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
    unpaired: bool = False  # the exports hold unpaired (KTO) rows, not pairs


@dataclass
class RoundData:
    reward_train: Path | None  # None for unpaired (KTO) rounds: no reward model
    policy_train: Path  # DPO's pairs, or KTO's rows
    human_slice: Path | None  # preference pairs; None while the slice is empty
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
        index = prompt_index([r["prompt"] for r in evals + slice_rows])
        policy = "kto_train" if cfg.unpaired else "dpo_train"
        dpo_rows, cut_dpo = _clean(dpo_rows, index)
        outputs = {policy: _write(run.path / f"{policy}.jsonl", dpo_rows)}
        counts: dict = {policy: counts_by_round(dpo_rows)}
        if cfg.unpaired:
            counts["human_slice_rows"] = counts_by_round(slice_rows)
            slice_rows = slice_pairs(slice_rows)
            counts["decontaminated"] = {policy: cut_dpo}
        else:
            reward_rows, cut_reward = _clean(reward_rows, index)
            outputs["reward_train"] = _write(run.path / "reward_train.jsonl", reward_rows)
            counts["reward_train"] = counts_by_round(reward_rows)
            counts["decontaminated"] = {"reward_train": cut_reward, policy: cut_dpo}
        if slice_rows:
            outputs["human_slice"] = _write(run.path / "human_slice.jsonl", slice_rows)
        counts["human_slice"] = counts_by_round(slice_rows)
        run.finish(outputs=outputs, result=counts)
        return RoundData(outputs.get("reward_train"), outputs[policy], outputs.get("human_slice"), counts)


def _clean(rows: list[dict], index: EvalIndex) -> tuple[list[dict], int]:
    """Rows without those that contain evaluation texts, and how many were dropped."""
    bad = set(contamination(rows, index).contaminated)
    return [r for i, r in enumerate(rows) if i not in bad], len(bad)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
