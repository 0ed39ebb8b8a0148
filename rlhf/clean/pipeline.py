"""The steps of `rlhf clean` (the stage wires them; see rlhf/stages/clean.py for the order and outputs):
validation + PII + quality, decontamination, contradictory pairs, exact / MinHash / semantic de-duplication
and content screening. Each step takes the live rows ({id, raw, row, text}), returns the ones that stay, and
records every row it removes (or flags for review) in the `Ledger`, with a reason and a detail."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from rlhf.clean import dedup
from rlhf.clean.embeddings import Embedder
from rlhf.clean.languages import LanguageFilter
from rlhf.clean.rows import detect_kind, parts_of, pii_step, prompt_of, quality_reason, text_of, validate
from rlhf.clean.screening import DEFAULT_CATEGORIES, Category, lexicon_hits, similarity_hits
from rlhf.clean.text import contradictions, normalize, overlap, shingles
from rlhf.config import ConfigError, bounded, documented
from rlhf.data import load_rows, source_path
from rlhf.models import MINILM, cache_dir


@dataclass
class FuzzySettings:
    enabled: bool = True
    threshold: float = bounded(0.8, gt=0, le=1, help="estimated Jaccard of word-shingle sets")
    ngram: int = bounded(5, ge=1)
    num_perm: int = bounded(128, ge=16)


@dataclass
class SemanticSettings:
    enabled: bool = False
    threshold: float = bounded(0.95, gt=0, le=1, help="cosine of minilm-l6 embeddings")
    model: str = MINILM
    batch_size: int = bounded(64, ge=1)


@dataclass
class DedupSettings:
    exact: bool = True
    fuzzy: FuzzySettings = field(default_factory=FuzzySettings)
    semantic: SemanticSettings = field(default_factory=SemanticSettings)
    keep: dedup.KeepRule = documented("longest", help="which row of a cluster stays: first | longest | score")
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
    sources: list[str] = documented(
        default_factory=list, help="evaluation sets: compare prompts, held-out pairs"
    )
    ngram: int = bounded(8, ge=1)
    threshold: float = bounded(0.5, gt=0, le=1, help="share of a row's n-grams found in the eval sets")


@dataclass
class ScreeningSettings:
    enabled: bool = True
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
    """Where every row went: kept, removed (reason kind + detail) or sent to review."""

    def __init__(self):
        self.removed: list[dict] = []
        self.flagged: list[dict] = []

    def remove(self, rid: str, reason: str, **detail) -> None:
        self.removed.append({"id": rid, "reason": reason, **detail})


def validate_and_filter(quality, kind: str, rows, ledger: Ledger) -> tuple[list[dict], Counter]:
    """[{id, raw, row, text}] of the rows that pass validation, PII and quality; PII counts by kind."""
    languages = LanguageFilter(quality.languages) if quality.languages else None
    live, pii_total = [], Counter()
    for rid, raw in zip(rows.ids, rows.rows, strict=True):
        redacted, found = pii_step(raw, kind, quality.pii)
        pii_total.update(found)
        if redacted is None:
            ledger.remove(
                rid, "pii", detail=f"personal data found ({', '.join(sorted(found))}); quality.pii: drop"
            )
            continue
        row, reason = validate(redacted, kind)
        if row is None:
            ledger.remove(rid, reason.split(":")[0], detail=reason)
            continue
        text = text_of(row, kind)
        reason = quality_reason(text, quality, parts_of(row, kind)) or (
            languages.reason(text) if languages else None
        )
        if reason:
            ledger.remove(rid, reason.split(":")[0], detail=reason)
            continue
        live.append({"id": rid, "raw": redacted, "row": row, "text": text})
    return live, pii_total


def decontaminate(d, live: list[dict], ledger: Ledger, run_dir) -> list[dict]:
    if not d.sources:
        return live
    grams: set[str] = set()
    for k, src in enumerate(d.sources):
        eval_rows = load_rows(src, what=f"decontamination.sources[{k}]")
        run_dir.record_input(f"decontamination.sources[{k}]", src, source_path(src))
        for r in eval_rows.rows:
            found, _ = validate(r, detect_kind([r]))
            if found is not None:
                grams |= shingles(prompt_of(found), d.ngram)
    out = []
    for item in live:
        share = overlap(prompt_of(item["row"]), grams, d.ngram) if "prompt" in item["row"] else 0.0
        if share >= d.threshold:
            ledger.remove(
                item["id"],
                "contaminated",
                detail=f"{share:.2f} of its {d.ngram}-grams are in the evaluation sets",
            )
        else:
            out.append(item)
    return out


def deduplicate(dd, kind: str, live: list[dict], ledger: Ledger) -> list[dict]:
    if kind == "preferences" and dd.contradictions != "keep":
        live = _contradictions(live, dd.contradictions, ledger)
    texts = [i["text"] for i in live]
    scores = [float(i["raw"].get(dd.score_column) or 0) for i in live] if dd.score_column else None
    steps = []
    if dd.exact:
        steps.append(("duplicate", lambda: dedup.exact_clusters(texts)))
    if dd.fuzzy.enabled:
        f = dd.fuzzy
        steps.append(
            (
                "near-duplicate",
                lambda: dedup.minhash_clusters(
                    texts, threshold=f.threshold, ngram=f.ngram, num_perm=f.num_perm
                ),
            )
        )
    if dd.semantic.enabled:
        steps.append(
            (
                "semantic duplicate",
                lambda: dedup.semantic_clusters(
                    _embed(dd.semantic.model, texts, dd.semantic.batch_size), threshold=dd.semantic.threshold
                ),
            )
        )
    gone: set[int] = set()
    for reason, clusters in steps:
        for cluster in clusters():
            members = [i for i in cluster if i not in gone]
            if len(members) < 2:
                continue
            keep = dedup.keep_one(members, dd.keep, texts, scores)
            for i in members:
                if i != keep:
                    gone.add(i)
                    ledger.remove(
                        live[i]["id"],
                        reason,
                        detail=f"{reason} of {live[keep]['id']} (kept: {dd.keep})",
                        of=live[keep]["id"],
                    )
    return [item for k, item in enumerate(live) if k not in gone]


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


def _embed(spec: str, texts: list[str], batch_size: int):
    emb = Embedder(spec, cache_dir() / "embeddings.sqlite", batch_size=batch_size)
    try:
        return emb.embed(texts)
    finally:
        emb.close()


def screen(s, live: list[dict], ledger: Ledger) -> list[dict]:
    if not s.enabled or not live:
        return live
    texts = [i["text"] for i in live]
    hits = lexicon_hits(texts, s.parsed)
    if s.similarity is not None:
        emb = Embedder(s.model, cache_dir() / "embeddings.sqlite")
        try:
            examples = {n: emb.embed(c.examples) for n, c in s.parsed.items() if c.examples}
            sims = similarity_hits(emb.embed(texts), examples, s.similarity)
        finally:
            emb.close()
    else:
        sims = [{} for _ in texts]
    out = []
    for item, lex, sim in zip(live, hits, sims, strict=True):
        if lex or sim:
            ledger.flagged.append(
                {
                    **item,
                    "flags": {
                        n: {"lexicon": lex.get(n), "similarity": sim.get(n)} for n in sorted({*lex, *sim})
                    },
                }
            )
        else:
            out.append(item)
    return out
