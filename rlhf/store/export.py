"""Annotations -> TRL training rows. Pure: items and annotations in, rows and accounting out.

format=pairs (`export_rows`): TRL preference rows (prompt, chosen, rejected). Each judgement becomes
(better, worse) candidate pairs (`judgements.preferences`): a pairwise choice gives one pair (tie / both
bad give none), a k-wise ranking all C(k,2) pairs or best-vs-others, Likert scores every pair with
different scores. Then, per item:
  aggregate=majority  one row per candidate pair that a strict majority of the votes on it prefers one
                      way; `margin` = (for - against) / votes on the pair when asked (vote strength)
  aggregate=per_vote  one row per vote's pair (the same pair may appear several times)
An edit-to-improve adds the pair (edited text > the candidate it was edited from).

format=unpaired (`export_unpaired`): TRL's KTO rows (prompt, completion, label: true = desirable), one per
answer, with the desirable / undesirable balance in the accounting:
  binary    the majority label of an answer's votes (aggregate=majority; a tie is dropped and counted) or
            one row per vote (aggregate=per_vote)
  likert    an answer's mean score: >= likert_desirable_at is desirable, <= likert_undesirable_at is
            undesirable, in between is dropped (counted)
  pairwise / ranking (only with unpaired_from_pairs: true)  the majority pairs, as above: an answer that
            is only ever chosen is desirable, one only ever rejected undesirable, one both (the middle of a
            ranking) is dropped (counted); pairs=best_vs_others makes every answer but the top undesirable
  an improved response an assessor wrote (edit-to-improve) is desirable.

Assessors can be excluded (e.g. those who failed gold items). Gold items are left out unless asked.
Accounting: items_in = items_exported + sum(items_dropped by reason); pairs (or answers) dropped are
counted too. `export_project` is the glue both `rlhf export` and the app's Export button use: it reads the
project from a store, leaves out failing assessors, and calls `export_rows` or `export_unpaired`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Literal

from rlhf.config import bounded, documented
from rlhf.errors import ConfigError
from rlhf.store import judgements
from rlhf.store.quality import gold_failures


@dataclass
class ExportSettings:
    format: Literal["pairs", "unpaired"] = documented(
        "pairs",
        help="pairs: TRL preference rows (reward, DPO); unpaired: TRL's KTO rows (prompt, completion, label)",
    )
    aggregate: Literal["majority", "per_vote"] = "majority"
    pairs: Literal["all_pairs", "best_vs_others"] = documented("all_pairs", help="for k-wise rankings")
    margin: bool = documented(False, help="add a `margin` column from the vote split")
    include_gold: bool = False
    include_flagged: bool = documented(
        False, help="items an assessor flagged unsafe are left out (counted) unless true"
    )
    exclude_assessors: list[str] = field(default_factory=list)
    min_seconds: float | None = bounded(None, ge=0, help="judgements faster than this are left out (counted)")
    exclude_gold_below: float | None = bounded(
        None, ge=0, le=1, help="e.g. 0.7: drop assessors under 70 % gold accuracy"
    )
    likert_desirable_at: float = bounded(
        5.0,
        ge=1,
        le=7,
        help="unpaired, Likert projects: an answer whose mean score is at least this is desirable",
    )
    likert_undesirable_at: float = bounded(
        3.0, ge=1, le=7, help="unpaired, Likert projects: at most this is undesirable (in between: dropped)"
    )
    unpaired_from_pairs: bool = documented(
        False, help="unpaired, pairwise/ranking projects: chosen answers desirable, rejected ones undesirable"
    )

    def __post_init__(self):
        if self.likert_undesirable_at >= self.likert_desirable_at:
            raise ConfigError(
                f"'likert_undesirable_at' ({self.likert_undesirable_at}) must be below 'likert_desirable_at' "
                f"({self.likert_desirable_at}): a score cannot be both desirable and undesirable."
            )


def export_project(store, project: str, settings: ExportSettings) -> tuple[list[dict], dict]:
    """A store's project -> (preference rows, or KTO rows with `format: unpaired`; accounting with the
    excluded assessors and why)."""
    task = store.project(project).task
    check_exportable(project, task, settings)
    items, anns = store.items(project), store.annotations(project)
    excluded = dict.fromkeys(settings.exclude_assessors, "listed in exclude_assessors")
    if settings.exclude_gold_below is not None:
        for who, acc in gold_failures(items, anns, settings.exclude_gold_below).items():
            excluded[who] = f"gold accuracy {acc:.2f} < {settings.exclude_gold_below}"
    effective = replace(settings, exclude_assessors=sorted(excluded))
    export = export_unpaired if settings.format == "unpaired" else export_rows
    rows, accounting = export(items, anns, task, effective)
    accounting["excluded_assessors"] = excluded
    return rows, accounting


def check_exportable(project: str, task: str, settings: ExportSettings) -> None:
    """A ConfigError that says what to do when the project's task cannot give the rows asked for."""
    if task == "review":
        raise ConfigError(
            f"project '{project}' is a review project (keep/drop decisions on flagged rows, not preferences); "
            f"apply its decisions with `rlhf clean --config ... --apply-review {project}`."
        )
    if task == "binary" and settings.format == "pairs":
        raise ConfigError(
            f"project '{project}' is a binary project (one answer judged good or bad): it holds no pairs. "
            "Export it with format: unpaired (TRL's KTO rows, for `rlhf kto`)."
        )
    if task in ("pairwise", "ranking") and settings.format == "unpaired" and not settings.unpaired_from_pairs:
        raise ConfigError(
            f"project '{project}' is a {task} project: its judgements are pairs. Set unpaired_from_pairs: true "
            "to export chosen answers as desirable and rejected ones as undesirable, or use format: pairs."
        )


def _as_messages(prompt, text: str):
    if isinstance(prompt, list):
        return [{"role": "assistant", "content": text}]
    return text


def export_rows(
    items: list[dict], annotations: list[dict], task: str, settings: ExportSettings
) -> tuple[list[dict], dict]:
    """Rows in TRL's preference format (conversational when the prompt is messages), and the accounting."""
    by_item, vote_counts = _votes_by_item(annotations, settings)
    rows: list[dict] = []
    items_dropped: Counter = Counter()
    pairs_dropped: Counter = Counter()
    items_exported = 0
    for item, votes in _judged_items(items, by_item, settings, items_dropped):
        texts = {c["id"]: c["text"] for c in item["candidates"]}
        item_rows = _item_rows(item, votes, task, settings, texts, pairs_dropped)
        if item_rows:
            rows.extend(item_rows)
            items_exported += 1
        else:
            items_dropped[_why_empty(votes, task, settings)] += 1
    accounting = {
        "items_in": len(items),
        "items_exported": items_exported,
        "items_dropped": {k: v for k, v in items_dropped.items() if v},
        "pairs_out": len(rows),
        "pairs_dropped": dict(pairs_dropped),
        "votes_in": len(annotations),
        **vote_counts,
        "settings": _settings_record(settings),
    }
    return rows, accounting


def _settings_record(settings: ExportSettings) -> dict:
    return {
        "aggregate": settings.aggregate,
        "pairs": settings.pairs,
        "margin": settings.margin,
        "include_gold": settings.include_gold,
        "include_flagged": settings.include_flagged,
        "min_seconds": settings.min_seconds,
        "exclude_assessors": sorted(settings.exclude_assessors),
    }


def _votes_by_item(annotations: list[dict], settings: ExportSettings) -> tuple[dict[int, list[dict]], dict]:
    """The votes that count, by item (excluded assessors and too-fast votes left out), and those counts."""
    excluded = set(settings.exclude_assessors)
    by_item: dict[int, list[dict]] = defaultdict(list)
    votes_excluded = votes_too_fast = 0
    for a in annotations:
        if a["assessor"] in excluded:
            votes_excluded += 1
            continue
        if (
            settings.min_seconds is not None
            and a.get("seconds") is not None
            and a["seconds"] < settings.min_seconds
        ):
            votes_too_fast += 1
            continue
        by_item[a["item_id"]].append(a)
    return by_item, {"votes_excluded_assessors": votes_excluded, "votes_too_fast": votes_too_fast}


def _judged_items(items: list[dict], by_item: dict, settings: ExportSettings, items_dropped: Counter):
    """(item, its votes) for the items that may be exported; the others counted in `items_dropped` (gold
    items, items without votes, items an assessor flagged unsafe)."""
    for item in items:
        if item["is_gold"] and not settings.include_gold:
            items_dropped["gold item"] += 1
            continue
        votes = by_item.get(item["id"], [])
        if not votes:
            items_dropped["no annotations"] += 1
            continue
        if not settings.include_flagged and any(v.get("flagged_unsafe") for v in votes):
            items_dropped["flagged unsafe by an assessor"] += 1
            continue
        yield item, votes


def _why_empty(votes: list[dict], task: str, settings: ExportSettings) -> str:
    any_pair = any(judgements.preferences(task, v["values"], mode=settings.pairs)[0] for v in votes)
    return "no majority" if any_pair else "only ties"


def _vote_pairs(
    votes: list[dict], task: str, settings: ExportSettings, texts: dict, pairs_dropped: Counter
) -> list[tuple[int, int, str]]:
    """(better, worse, assessor) for every pair the votes state, edits included; ties counted."""
    per_vote: list[tuple[int, int, str]] = []
    for v in votes:
        pairs, ties = judgements.preferences(task, v["values"], mode=settings.pairs)
        if ties:
            pairs_dropped["tie"] += ties
        per_vote.extend((a, b, v["assessor"]) for a, b in pairs)
        edit = (v.get("payload") or {}).get("edit")
        if edit and edit.get("candidate") in texts:  # edit-to-improve: the assessor's rewrite beats its base
            per_vote.append((edit["candidate"], edit["base"], v["assessor"]))
    return per_vote


def _majority_pairs(
    per_vote: list[tuple[int, int, str]], pairs_dropped: Counter
) -> list[tuple[int, int, float]]:
    """(better, worse, margin) for each pair a strict majority of its votes prefers one way."""
    tally: Counter = Counter((a, b) for a, b, _ in per_vote)
    votes_on_pair: Counter = Counter(frozenset((a, b)) for a, b, _ in per_vote)
    out, seen = [], set()
    for (a, b), n_for in sorted(tally.items()):
        key = frozenset((a, b))
        if key in seen:
            continue
        seen.add(key)
        n_against = tally.get((b, a), 0)
        if n_for == n_against:
            pairs_dropped["no majority"] += 1
            continue
        better, worse = (a, b) if n_for > n_against else (b, a)
        out.append((better, worse, abs(n_for - n_against) / votes_on_pair[key]))
    return out


def _item_rows(
    item: dict, votes: list[dict], task: str, settings: ExportSettings, texts: dict, pairs_dropped: Counter
) -> list[dict]:
    prompt = item["prompt"]
    per_vote = _vote_pairs(votes, task, settings, texts, pairs_dropped)

    def row(better: int, worse: int, **extra) -> dict:
        return {
            "id": f"{item['external_id']}:{better}>{worse}",
            "item_id": item["external_id"],
            "prompt": prompt,
            "chosen": _as_messages(prompt, texts[better]),
            "rejected": _as_messages(prompt, texts[worse]),
            **extra,
        }

    if settings.aggregate == "per_vote":
        return [row(a, b, assessor=who) for a, b, who in per_vote]
    return [
        row(better, worse, **({"margin": margin} if settings.margin else {}))
        for better, worse, margin in _majority_pairs(per_vote, pairs_dropped)
    ]


# -- unpaired (KTO) rows -----------------------------------------------------------------------------------


def export_unpaired(
    items: list[dict], annotations: list[dict], task: str, settings: ExportSettings
) -> tuple[list[dict], dict]:
    """Rows in TRL's unpaired format — prompt, completion (conversational when the prompt is messages),
    label (true: desirable) — one per judged answer, and the accounting with the desirable / undesirable
    balance. See the module docstring for the rule of each task."""
    by_item, vote_counts = _votes_by_item(annotations, settings)
    rows: list[dict] = []
    items_dropped: Counter = Counter()
    answers_dropped: Counter = Counter()
    items_exported = 0
    for item, votes in _judged_items(items, by_item, settings, items_dropped):
        texts = {c["id"]: c["text"] for c in item["candidates"]}
        labels = _answer_labels(votes, task, settings, texts, answers_dropped)
        item_rows = [_unpaired_row(item, texts, cand, label, who) for cand, label, who in labels]
        if item_rows:
            rows.extend(item_rows)
            items_exported += 1
        else:
            items_dropped[_why_no_answer(task)] += 1
    desirable = sum(r["label"] for r in rows)
    accounting = {
        "items_in": len(items),
        "items_exported": items_exported,
        "items_dropped": {k: v for k, v in items_dropped.items() if v},
        "rows_out": len(rows),
        "answers_dropped": dict(answers_dropped),
        "balance": balance(desirable, len(rows) - desirable),
        "votes_in": len(annotations),
        **vote_counts,
        "settings": {
            **_settings_record(settings),
            "format": "unpaired",
            "likert_desirable_at": settings.likert_desirable_at,
            "likert_undesirable_at": settings.likert_undesirable_at,
            "unpaired_from_pairs": settings.unpaired_from_pairs,
        },
    }
    return rows, accounting


def balance(desirable: int, undesirable: int) -> dict:
    """{"desirable", "undesirable", "desirable_share"} of a set of unpaired rows."""
    n = desirable + undesirable
    return {
        "desirable": desirable,
        "undesirable": undesirable,
        "desirable_share": round(desirable / n, 4) if n else None,
    }


def _why_no_answer(task: str) -> str:
    return {"binary": "tie", "likert": "between thresholds"}.get(
        task, "no answer only chosen or only rejected"
    )


def _unpaired_row(item: dict, texts: dict, cand: int, label: bool, who: str | None) -> dict:
    row = {
        "id": f"{item['external_id']}:{cand}" + (f":{who}" if who else ""),
        "item_id": item["external_id"],
        "prompt": item["prompt"],
        "completion": _as_messages(item["prompt"], texts[cand]),
        "label": label,
    }
    return {**row, "assessor": who} if who else row


def _answer_labels(
    votes: list[dict], task: str, settings: ExportSettings, texts: dict, dropped: Counter
) -> list[tuple[int, bool, str | None]]:
    """(candidate, label, assessor for a per-vote row else None) for one item's answers."""
    per_vote = settings.aggregate == "per_vote"
    edits = [
        (e["candidate"], True, v["assessor"] if per_vote else None)
        for v in votes
        if (e := (v.get("payload") or {}).get("edit")) and e.get("candidate") in texts
    ]
    if task in ("pairwise", "ranking"):
        return _labels_from_pairs(votes, task, settings, texts, dropped)
    if per_vote:
        good = {"binary": lambda x: x == 1.0, "likert": lambda x: x >= settings.likert_desirable_at}[task]
        bad = {"binary": lambda x: x == 0.0, "likert": lambda x: x <= settings.likert_undesirable_at}[task]
        out = []
        for v in votes:
            for cand, x in sorted(v["values"].items()):
                if good(x) or bad(x):
                    out.append((cand, good(x), v["assessor"]))
                else:
                    dropped["between thresholds"] += 1
        return out + edits
    scores: dict[int, list[float]] = defaultdict(list)
    for v in votes:
        for cand, x in v["values"].items():
            scores[cand].append(x)
    out = []
    for cand, xs in sorted(scores.items()):
        label = _aggregate_label(task, xs, settings)
        if label is None:
            dropped["tie" if task == "binary" else "between thresholds"] += 1
        else:
            out.append((cand, label, None))
    return out + edits


def _aggregate_label(task: str, xs: list[float], settings: ExportSettings) -> bool | None:
    """binary: the majority label (None on a tie); likert: the mean score against the two thresholds."""
    if task == "binary":
        good = sum(1 for x in xs if x == 1.0)
        return None if 2 * good == len(xs) else 2 * good > len(xs)
    mean = sum(xs) / len(xs)
    if mean >= settings.likert_desirable_at:
        return True
    if mean <= settings.likert_undesirable_at:
        return False
    return None


def _labels_from_pairs(
    votes: list[dict], task: str, settings: ExportSettings, texts: dict, dropped: Counter
) -> list[tuple[int, bool, str | None]]:
    """Ranked pairs -> answers: only ever chosen = desirable, only ever rejected = undesirable, both =
    dropped — over the majority pairs, or (per_vote) over each vote's own pairs."""
    pairs_dropped: Counter = Counter()
    per_vote = _vote_pairs(votes, task, settings, texts, pairs_dropped)
    if settings.aggregate == "per_vote":
        groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for better, worse, who in per_vote:
            groups[who].append((better, worse))
    else:
        groups = {None: [(b, w) for b, w, _ in _majority_pairs(per_vote, pairs_dropped)]}
    out: list[tuple[int, bool, str | None]] = []
    for who, pairs in groups.items():
        chosen, rejected = {b for b, _ in pairs}, {w for _, w in pairs}
        if chosen & rejected:
            dropped["chosen in one pair, rejected in another"] += len(chosen & rejected)
        out += [(c, True, who) for c in sorted(chosen - rejected)]
        out += [(c, False, who) for c in sorted(rejected - chosen)]
    return out
