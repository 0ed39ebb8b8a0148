"""Claim: `rlhf clean`'s de-duplication finds planted near-duplicates (MinHash: recall >= 0.95 at precision
>= 0.98), runs exact + MinHash at >= 2,000 rows/s on 2 cores, and is at least as fast as a plain
`datasketch` script doing the same MinHash LSH.

    .venv/bin/python benchmarks/clean_throughput.py [--rows 100000]

Data (synthetic, seeded): documents of 30..60 words from a 20,000-word vocabulary; planted duplicates of 4%
of them each: exact copies with case and whitespace changed, light edits (1-2 words substituted), and
reorderings (the two halves swapped). Ground truth: a planted copy and its original are a pair.
- exact: `rlhf.clean.dedup.exact_clusters` (normalized hash) — should find the exact copies;
- MinHash: `rlhf.clean.dedup.minhash_clusters` (rensa, 128 permutations, word 3-grams, threshold 0.7, candidates
  confirmed by the estimated Jaccard) — should find exact copies and light edits;
- plain datasketch: `MinHash.bulk` + `MinHashLSH` (threshold 0.7, 128 permutations) on the same shingles;
- semantic: minilm-l6 embeddings + faiss (cosine 0.9) on real sentences — every distinct text of the
  shipped demo data, with the same kinds of planted copies (10 % each; embeddings of made-up words all look
  alike) — should also find reorderings; CPU embedding is the cost, cached by content hash, so the re-run
  time is printed too.
Precision = found pairs whose two rows are one planted family (an original and its copies) / all found.
Last line: `ratio rlhf/plain <x>` = rows/s of rlhf's MinHash step / rows/s of the datasketch script (goal >= 1).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from itertools import combinations
from pathlib import Path

from datasketch import MinHash, MinHashLSH

from rlhf.clean import dedup
from rlhf.clean.text import shingles


def demo_texts() -> list[str]:
    """Real sentences: every distinct text of the shipped demo data (prompts, SFT answers, preference
    answers), for the semantic step — embeddings of made-up words all look alike."""
    from rlhf.data import load_rows

    texts = set()
    for name in ("prompts", "sft", "preferences"):
        for r in load_rows(f"demo:{name}", what=name).rows:
            for k in ("prompt", "chosen", "rejected"):
                if isinstance(r.get(k), str) and len(r[k].split()) >= 8:
                    texts.add(r[k])
            for m in r.get("messages") or []:
                if len(m["content"].split()) >= 8:
                    texts.add(m["content"])
    return sorted(texts)


def make_data(n: int, seed: int = 0, base_docs: list[str] | None = None) -> tuple[list[str], dict[str, set]]:
    rng = random.Random(seed)
    if base_docs is not None:  # real texts as the originals, 10 % of them copied per kind
        docs = list(base_docs)
        base = len(docs)
        n_plant = max(1, int(0.1 * base))
        vocab = sorted({w for d in docs for w in d.split()})
    else:
        vocab = [
            f"{rng.choice('bcdfghklmnprst')}{rng.choice('aeiou')}{rng.choice('bcdfghklmnprst')}{i}"
            for i in range(20000)
        ]
        n_plant = int(0.04 * n)
        base = n - 3 * n_plant
        docs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(30, 60))) for _ in range(base)]
    truth = {"exact": set(), "edit": set(), "reorder": set()}
    for kind in ("exact", "edit", "reorder"):
        for _ in range(n_plant):
            i = rng.randrange(base)
            w = docs[i].split()
            if kind == "exact":
                text = "  ".join(w).upper()
            elif kind == "edit":
                for _ in range(rng.randint(1, 2)):
                    w[rng.randrange(len(w))] = rng.choice(vocab)
                text = " ".join(w)
            else:
                h = len(w) // 2
                text = " ".join(w[h:] + w[:h])
            docs.append(text)
            truth[kind].add((i, len(docs) - 1))
    return docs, truth


def pairs_of(clusters) -> set[tuple[int, int]]:
    return {(a, b) for c in clusters for a, b in combinations(sorted(c), 2)}


def families(truth: dict[str, set]) -> dict[int, int]:
    """row -> its original: an original and all its planted copies are one family (two copies of the same
    original are duplicates of each other too)."""
    fam = {}
    for pairs in truth.values():
        for orig, copy in pairs:
            fam[orig] = orig
            fam[copy] = orig
    return fam


def score(found: set, wanted: set, fam: dict[int, int]) -> tuple[float, float]:
    """Recall of the planted pairs a method should find; precision = found pairs within one family."""
    recall = len(found & wanted) / len(wanted) if wanted else 1.0
    right = sum(1 for a, b in found if a in fam and fam.get(a) == fam.get(b))
    precision = right / len(found) if found else 1.0
    return recall, precision


def plain_datasketch(docs: list[str], threshold: float) -> tuple[set, float]:
    t0 = time.perf_counter()
    hashes = MinHash.bulk([[s.encode() for s in shingles(d, 3)] for d in docs], num_perm=128)
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    for i, h in enumerate(hashes):
        lsh.insert(i, h)
    found = set()
    for i, h in enumerate(hashes):
        for j in lsh.query(h):
            if j > i and h.jaccard(hashes[j]) >= threshold:
                found.add((i, j))
    return found, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)

    a = ap.parse_args()
    docs, truth = make_data(a.rows)
    planted = families(truth)
    print(
        f"{len(docs)} rows; planted pairs: exact {len(truth['exact'])}, light edits {len(truth['edit'])}, reorderings {len(truth['reorder'])}",
        flush=True,
    )

    t0 = time.perf_counter()
    exact = pairs_of(dedup.exact_clusters(docs))
    t1 = time.perf_counter()
    fuzzy = pairs_of(dedup.minhash_clusters(docs, threshold=0.7, ngram=3))
    t2 = time.perf_counter()
    r, p = score(exact, truth["exact"], planted)
    print(
        f"exact:    recall {r:.3f} precision {p:.3f} ({len(exact)} pairs) in {t1 - t0:.1f} s = {len(docs) / (t1 - t0):.0f} rows/s"
    )
    r, p = score(fuzzy, truth["exact"] | truth["edit"], planted)
    print(
        f"MinHash:  recall {r:.3f} precision {p:.3f} on exact copies + light edits ({len(fuzzy)} pairs) in {t2 - t1:.1f} s = {len(docs) / (t2 - t1):.0f} rows/s"
    )
    print(f"exact + MinHash: {len(docs) / (t2 - t0):.0f} rows/s (goal >= 2000)", flush=True)

    plain, plain_s = plain_datasketch(docs, 0.7)
    r, p = score(plain, truth["exact"] | truth["edit"], planted)
    print(
        f"datasketch (plain script): recall {r:.3f} precision {p:.3f} in {plain_s:.1f} s = {len(docs) / plain_s:.0f} rows/s",
        flush=True,
    )

    from rlhf.clean import Embedder
    from rlhf.models import MINILM

    subset, sub_truth = make_data(0, seed=1, base_docs=demo_texts())  # real sentences, the same planting
    n = len(subset)
    with tempfile.TemporaryDirectory() as tmp:
        emb = Embedder(MINILM, Path(tmp) / "emb.sqlite", batch_size=64)
        t3 = time.perf_counter()
        vecs = emb.embed(subset)
        t4 = time.perf_counter()
        sem = pairs_of(dedup.semantic_clusters(vecs, threshold=0.9))
        t5 = time.perf_counter()
        emb.embed(subset)
        t6 = time.perf_counter()
        emb.close()
    wanted = set().union(*sub_truth.values())
    r, p = score(sem, wanted, families(sub_truth))
    print(
        f"semantic ({n} rows; planted pairs inside: {len(wanted)}): recall {r:.3f} precision {p:.3f}; embedding "
        f"{n / (t4 - t3):.0f} rows/s, index+search {t5 - t4:.2f} s, cached re-embedding {t6 - t5:.2f} s"
    )
    print(f"ratio rlhf/plain {plain_s / (t2 - t1):.2f}")


if __name__ == "__main__":
    main()
