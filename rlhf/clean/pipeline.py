"""The steps of `rlhf clean` (the stage wires them; see rlhf/stages/clean.py for the order and outputs):
validation + quality + PII, decontamination, contradictory pairs, exact / MinHash / semantic de-duplication
and content screening. Each step takes the live rows ({id, raw, row, text, parts}), returns the ones that
stay, and records every row it removes (or flags for review) in the `Ledger`, with a reason and a detail.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

from rlhf.clean import dedup
from rlhf.clean.decontamination import EvalIndex, eval_texts_of
from rlhf.clean.embeddings import Embedder
from rlhf.clean.languages import LanguageFilter
from rlhf.clean.rows import detect_kind, find_row_pii, parts_of, prompt_of, quality_reason, text_of, validate
from rlhf.clean.screening import DEFAULT_CATEGORIES, Category, lexicon_hits, similarity_hits
from rlhf.clean.text import contradictions, normalize
from rlhf.config import ConfigError, bounded, documented
from rlhf.data import load_rows, source_path
from rlhf.models import MINILM, cache_dir

SIDES = ("prompt", "chosen", "rejected", "completion")


@dataclass
class FuzzySettings:
    enabled: bool = True
    threshold: float = bounded(0.8, gt=0, le=1, help="Jaccard similarity every part of two rows must reach")
    ngram: int = bounded(5, ge=1, help="word n-grams for texts of short_words words or more")
    short_words: int = bounded(50, ge=0, help="shorter texts are shingled by character n-grams")
    char_ngram: int = bounded(3, ge=1, help="character n-grams for short texts")
    num_perm: int = bounded(128, ge=16)


@dataclass
class SemanticSettings:
    enabled: bool = False
    threshold: float = bounded(0.95, gt=0, le=1, help="cosine every part of two rows must reach (minilm-l6)")
    clusters: int | None = bounded(
        None, ge=1, help="k-means clusters (faiss); null: about one per 1,000 rows"
    )
    model: str = MINILM
    batch_size: int = bounded(64, ge=1)
    max_length: int = bounded(256, ge=8, help="tokens per window; longer texts are embedded in windows")


@dataclass
class DedupSettings:
    exact: bool = True
    fuzzy: FuzzySettings = field(default_factory=FuzzySettings)
    semantic: SemanticSettings = field(default_factory=SemanticSettings)
    keep: dedup.KeepRule = documented("first", help="which row of a group stays: first | longest | score")
    score_column: str | None = documented(None, help="keep: score reads this column")
    contradictions: Literal["drop", "majority", "keep"] = documented(
        "majority", help="same pair preferred both ways"
    )

    def __post_init__(self):
        if self.keep == "score" and not self.score_column:
            raise ConfigError(
                "'dedup.keep: score' needs 'dedup.score_column' (the column holding the score)."
            )


@dataclass
class DecontaminationSettings:
    eval_sets: list[str] = documented(
        default_factory=list, help="evaluation sets (any row files or runs): their prompts and answers"
    )
    ngram: int = bounded(8, ge=1)
    threshold: float = bounded(0.5, gt=0, le=1, help="share of a part's n-grams found in the eval sets")
    min_words: int = bounded(3, ge=1, help="shorter parts are not compared; shorter than ngram: exact match")


@dataclass
class ScreeningSettings:
    enabled: bool = True
    screen: list[Literal["prompt", "chosen", "rejected", "completion"]] = documented(
        default_factory=lambda: ["prompt", "chosen"],
        help="the parts screened; an SFT row's completion is its chosen answer",
    )
    categories: dict = documented(
        default_factory=lambda: copy.deepcopy(DEFAULT_CATEGORIES), help="name -> {lexicon, examples}"
    )
    similarity: float | None = bounded(
        None, gt=0, le=1, help="cosine to a category's examples; null: lexicon only"
    )
    model: str = MINILM

    def __post_init__(self):
        try:
            self.parsed = {n: Category(**(c or {})) for n, c in self.categories.items()}
        except TypeError as e:
            raise ConfigError(
                f"'screening.categories': each category takes 'lexicon' and 'examples' lists ({e})."
            ) from None


@dataclass
class ReviewSettings:
    project: str | None = documented(
        None, help="a `review` labeling project for the flagged rows; null: list them only"
    )
    store: str = "labels.db"
    overlap: int = bounded(2, ge=1)


class Ledger:
    """Where every row went: kept, removed (reason kind + detail) or sent to review; what was redacted."""

    def __init__(self):
        self.removed: list[dict] = []
        self.flagged: list[dict] = []
        self.redactions: list[dict] = []
        self.notes: dict = {}
        self._flagged_by_id: dict[str, dict] = {}

    def remove(self, rid: str, reason: str, **detail) -> None:
        self.removed.append({"id": rid, "reason": reason, **detail})

    def flag(self, item: dict, name: str, sides: dict) -> None:
        """Send `item` to review for `name` ({side: what matched}), once per row."""
        if item["id"] in self._flagged_by_id:
            self._flagged_by_id[item["id"]]["flags"][name] = sides
            return
        self.flagged.append({**item, "flags": {name: sides}})
        self._flagged_by_id[item["id"]] = self.flagged[-1]


def _item(rid: str, raw: dict, row: dict, kind: str) -> dict:
    return {"id": rid, "raw": raw, "row": row, "text": text_of(row, kind), "parts": parts_of(row, kind)}


def validate_and_filter(quality, kind: str, rows, ledger: Ledger) -> list[dict]:
    """The rows that pass validation, quality and the PII rule; redactions go to `ledger.redactions`."""
    languages = LanguageFilter(quality.languages) if quality.languages else None
    live = []
    for rid, raw in zip(rows.ids, rows.rows, strict=True):
        found: list[dict] = []
        if quality.pii != "off":
            redacted, found = find_row_pii(raw)
            if found and quality.pii == "drop":
                kinds = ", ".join(sorted({f["kind"] for f in found}))
                ledger.remove(rid, "pii", detail=f"personal data found ({kinds}); quality.pii: drop")
                continue
            if quality.pii == "redact":
                raw = redacted
        row, reason = validate(raw, kind)
        if row is None:
            ledger.remove(rid, reason.split(":")[0], detail=reason)
            continue
        item = _item(rid, raw, row, kind)
        reason = quality_reason(item["text"], quality, item["parts"]) or (
            languages.reason(item["text"]) if languages else None
        )
        if reason:
            ledger.remove(rid, reason.split(":")[0], detail=reason)
            continue
        if found and quality.pii == "review":
            ledger.flag(item, "pii", _pii_sides(found, item["parts"]))
            continue
        ledger.redactions += [{"id": rid, **f} for f in found]
        live.append(item)
    return live


def _pii_sides(found: list[dict], parts: dict[str, str]) -> dict:
    """{side: {"kinds": [...]}} — a finding in a raw column counts for that column's part (an HH transcript
    column holds the prompt too: it counts for the answer it belongs to)."""
    sides: dict[str, set] = {}
    for f in found:
        col = f["column"].split("[")[0]
        side = col if col in parts else next(iter(parts))
        sides.setdefault(side, set()).add(f["kind"])
    return {s: {"kinds": sorted(k)} for s, k in sides.items()}


def decontaminate(d, live: list[dict], ledger: Ledger, run_dir) -> list[dict]:
    """Rows with a part (prompt or answer) found in the evaluation sets: exact for short texts, n-gram
    overlap for the rest (`rlhf.clean.decontamination`)."""
    if not d.eval_sets:
        return live
    eval_rows = []
    for k, src in enumerate(d.eval_sets):
        loaded = load_rows(src, what=f"decontaminate.eval_sets[{k}]")
        run_dir.record_input(f"decontaminate.eval_sets[{k}]", src, source_path(src))
        for r in loaded.rows:
            found, _ = validate(r, detect_kind([r]))
            eval_rows.append(found if found is not None else r)
    index = EvalIndex(eval_texts_of(eval_rows), ngram=d.ngram, min_words=d.min_words)
    out = []
    for item in live:
        hits = [(part, index.check(t, d.threshold)) for part, t in item["parts"].items()]
        hits = [(part, h) for part, h in hits if h]
        if not hits:
            out.append(item)
            continue
        detail = "; ".join(
            f"its {part} matches an evaluation text exactly"
            if how == "exact"
            else f"{share:.2f} of its {part}'s {d.ngram}-grams are in the evaluation sets"
            for part, (how, share) in hits
        )
        ledger.remove(item["id"], "contaminated", detail=detail, parts=[p for p, _ in hits])
    ledger.notes["eval_texts"] = index.size
    return out


def deduplicate(dd, kind: str, live: list[dict], ledger: Ledger) -> list[dict]:
    """Contradictions, then exact, MinHash and semantic de-duplication, part by part (`rlhf.clean.dedup`)."""
    if kind == "preferences" and dd.contradictions != "keep":
        live = _contradictions(live, dd.contradictions, ledger)
    names = list(live[0]["parts"]) if live else []
    parts = [[i["parts"][n] for i in live] for n in names]
    scores = [float(i["raw"].get(dd.score_column) or 0) for i in live] if dd.score_column else None
    order = dedup.keep_order(len(live), dd.keep, [i["text"] for i in live], scores)
    steps = []
    if dd.exact:
        keys = [tuple(normalize(p[i]) for p in parts) for i in range(len(live))]
        steps.append(("duplicate", lambda o: dedup.exact_matches([keys[i] for i in o], range(len(o)))))
    if dd.fuzzy.enabled:
        f = dd.fuzzy
        shingler = dedup.Shingler(f.ngram, f.short_words, f.char_ngram)
        steps.append(
            (
                "near-duplicate",
                lambda o: dedup.near_duplicates(
                    [[p[i] for i in o] for p in parts],
                    range(len(o)),
                    threshold=f.threshold,
                    shingler=shingler,
                    num_perm=f.num_perm,
                ),
            )
        )
    if dd.semantic.enabled:
        steps.append(("semantic duplicate", lambda o: _semantic(dd.semantic, parts, o, ledger)))
    gone: set[int] = set()
    what = " and ".join(names) if len(names) > 1 else "text"
    for reason, find in steps:
        alive = [i for i in order if i not in gone]
        for m in find(alive):
            i, j = alive[m.row], alive[m.of]
            gone.add(i)
            sim = "" if reason == "duplicate" else f", similarity >= {m.similarity:.2f} in {what}"
            ledger.remove(
                live[i]["id"],
                reason,
                detail=f"{reason} of {live[j]['id']} (kept: {dd.keep}{sim})",
                of=live[j]["id"],
            )
    return [item for k, item in enumerate(live) if k not in gone]


def _semantic(s, parts: list[list[str]], alive: list[int], ledger: Ledger) -> list[dedup.Match]:
    """Semantic matches among `alive` (row indices in keep order), returned as positions in `alive`."""
    emb = Embedder(
        s.model, cache_dir() / "embeddings.sqlite", batch_size=s.batch_size, max_length=s.max_length
    )
    try:
        vecs, long_texts = [], 0
        for p in parts:
            vecs.append(emb.embed([p[i] for i in alive]))
            long_texts += emb.long_texts
    finally:
        emb.close()
    ledger.notes["semantic_long_texts"] = long_texts
    return dedup.semantic_matches(vecs, range(len(alive)), threshold=s.threshold, clusters=s.clusters)


def _t(value) -> str:
    return value if isinstance(value, str) else "\n".join(m["content"] for m in value)


def _contradictions(live: list[dict], rule: str, ledger: Ledger) -> list[dict]:
    """Rows of a pair preferred both ways: all dropped (`drop`, or no majority), or the minority (`majority`)."""
    groups = contradictions(
        (i["id"], prompt_of(i["row"]), _t(i["row"]["chosen"]), _t(i["row"]["rejected"])) for i in live
    )
    by_id = {i["id"]: i for i in live}
    drop: dict[str, str] = {}
    for g in groups.values():
        first = normalize(_t(by_id[g["ids"][0]]["row"]["chosen"]))
        for rid in g["ids"]:
            agrees = normalize(_t(by_id[rid]["row"]["chosen"])) == first
            if rule == "drop" or g["majority"] == "tie":
                drop[rid] = (
                    f"the pair is preferred {g['for']} vs {g['against']} times both ways; dropped ({rule})"
                )
            elif agrees != (g["majority"] == "first"):
                drop[rid] = f"the minority label ({g['for']} vs {g['against']}) of a pair preferred both ways"
    for rid, why in drop.items():
        ledger.remove(rid, "contradiction", detail=why)
    return [i for i in live if i["id"] not in drop]


def _screened(s, kind: str, parts: dict[str, str]) -> dict[str, str]:
    """The parts `screening.screen` names (an SFT row's completion stands for `chosen`)."""
    wanted = set(s.screen) | ({"completion"} if kind == "sft" and "chosen" in s.screen else set())
    return {side: text for side, text in parts.items() if side in wanted}


def screen(s, kind: str, live: list[dict], ledger: Ledger) -> list[dict]:
    """Flag rows whose screened parts touch a category (lexicon, and/or similarity to its examples)."""
    if not s.enabled or not live:
        return live
    texts = [(n, side, t) for n, i in enumerate(live) for side, t in _screened(s, kind, i["parts"]).items()]
    hits = lexicon_hits([t for _, _, t in texts], s.parsed)
    if s.similarity is not None:
        emb = Embedder(s.model, cache_dir() / "embeddings.sqlite")
        try:
            examples = {n: emb.embed(c.examples) for n, c in s.parsed.items() if c.examples}
            sims = similarity_hits(emb.embed([t for _, _, t in texts]), examples, s.similarity)
        finally:
            emb.close()
    else:
        sims = [{} for _ in texts]
    flags: dict[int, dict] = {}
    for (n, side, _), lex, sim in zip(texts, hits, sims, strict=True):
        for name in sorted({*lex, *sim}):
            flags.setdefault(n, {}).setdefault(name, {})[side] = {
                "lexicon": lex.get(name),
                "similarity": sim.get(name),
            }
    for n, by_category in flags.items():
        for name, sides in by_category.items():
            ledger.flag(live[n], name, sides)
    return [item for n, item in enumerate(live) if n not in flags]
