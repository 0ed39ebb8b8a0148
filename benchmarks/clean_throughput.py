"""Claim: `rlhf clean`'s de-duplication finds planted duplicates and is at least as fast as the plain library
doing the same work:
1. exact + MinHash (recall >= 0.95 at precision >= 0.98 on exact copies and light edits), >= 2,000 rows/s on
   2 cores, and at least as fast as a plain `datasketch` script with the same shingles, threshold and
   confirmation rule (`ratio rlhf/plain` >= 1);
2. semantic (SemDeDup: minilm-l6 + faiss k-means) finds paraphrases of real sentences: recall >= 0.85 at
   precision >= 0.95;
3. semantic de-duplication's rows/s at 100,000 rows (k-means clusters: the cost grows ~ n x cluster size).

    .venv/bin/python benchmarks/clean_throughput.py [--rows 100000] [--sentences 1500] [--semantic-rows 100000]

Data.
- MinHash (synthetic, seeded): documents of 30..60 words from a 20,000-word vocabulary; planted copies of 4 %
  of them each: exact copies with case and whitespace changed, light edits (1-2 words substituted), and
  reorderings (the two halves swapped). Shingles as `rlhf clean` makes them by default (character 3-grams
  below 50 words, word 3-grams above), threshold 0.7, candidates confirmed by the exact Jaccard of the
  shingle sets. The plain script: `datasketch` `MinHash.bulk` + `MinHashLSH` on the same shingle sets,
  the same confirmation, union of the pairs found. Ground truth: a planted copy and its original are a pair.
- Semantic (real sentences): sentences of 8..60 words from ../shared/data/hh_harmless_1800.jsonl (Anthropic
  HH-RLHF: human turns and assistant answers; the demo data when the file is absent), each distinct after
  normalization; 15 % of them get a planted paraphrase written by meaning-preserving rules (contractions,
  synonyms, "can you" / "could you", politeness, final punctuation, case) with at least two changes.
  Threshold 0.95 (the default) and 0.92. Precision = found pairs within one family (an original and its
  paraphrase) / all found pairs — natural near-paraphrases among the real sentences count as errors.
- Semantic at scale: 100,000 unit vectors around the real sentences' embeddings (each a real embedding plus
  noise, so the data has the clusters real data has), 5 % of them with a planted near-copy (cosine ~0.97);
  timed: k-means + the in-cluster search (embedding is the separate, cached cost printed in 2.).
Last line: `ratio rlhf/plain <x>` = rows/s of rlhf's MinHash step / rows/s of the datasketch script.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

from rlhf.clean import Embedder, dedup
from rlhf.clean.text import normalize
from rlhf.data import load_rows
from rlhf.models import MINILM

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_harmless_1800.jsonl"
SHINGLER = dedup.Shingler(ngram=3, short_words=50, char_ngram=3)
CONTRACTIONS = {
    "do not": "don't",
    "does not": "doesn't",
    "did not": "didn't",
    "is not": "isn't",
    "are not": "aren't",
    "cannot": "can't",
    "will not": "won't",
    "i am": "I'm",
    "it is": "it's",
    "you are": "you're",
    "what is": "what's",
    "that is": "that's",
    "i would": "I'd",
    "i will": "I'll",
    "there is": "there's",
}
SYNONYMS = {
    "big": "large",
    "small": "little",
    "help": "assist",
    "buy": "purchase",
    "maybe": "perhaps",
    "start": "begin",
    "quickly": "rapidly",
    "difficult": "hard",
    "easy": "simple",
    "happy": "glad",
    "often": "frequently",
    "think": "believe",
    "children": "kids",
    "car": "automobile",
    "job": "occupation",
    "smart": "clever",
    "enough": "sufficient",
    "money": "cash",
    "answer": "reply",
    "idea": "notion",
    "stupid": "dumb",
    "angry": "mad",
    "huge": "enormous",
    "fast": "quick",
    "people": "folks",
    "really": "truly",
    "very": "extremely",
    "get": "obtain",
    "find": "locate",
    "show": "demonstrate",
    "tell": "inform",
    "sure": "certain",
    "correct": "right",
    "kill": "murder",
    "steal": "rob",
}


def _swap_phrases(text: str, table: dict[str, str], rng: random.Random) -> tuple[str, int]:
    pairs = list(table.items()) + [(v.lower(), k) for k, v in table.items()]
    rng.shuffle(pairs)
    changes = 0
    for a, b in pairs:
        rx = re.compile(rf"\b{re.escape(a)}\b", re.IGNORECASE)
        if rx.search(text) and rng.random() < 0.7:
            text, n = rx.subn(lambda m, b=b: b if not m.group(0)[0].isupper() else b[0].upper() + b[1:], text)
            changes += n
    return text, changes


def paraphrase(text: str, rng: random.Random) -> str | None:
    """A meaning-preserving rewrite with at least two changes, or None when the rules find too little."""
    out, changes = _swap_phrases(text, CONTRACTIONS, rng)
    out, n = _swap_phrases(out, SYNONYMS, rng)
    changes += n
    for a, b in (("Can you", "Could you"), ("Could you", "Can you"), ("please ", ""), ("Please ", "")):
        if out.startswith(a) or (a.strip() == "please" and a in out):
            out, changes = out.replace(a, b, 1), changes + 1
            break
    else:
        if out.endswith("?") and rng.random() < 0.5:
            out, changes = "Please tell me: " + out[0].lower() + out[1:], changes + 1
    if out[-1:] in ".?!" and rng.random() < 0.5:
        out, changes = out[:-1], changes + 1
    if changes < 2 or normalize(out) == normalize(text):
        return None
    return out


def real_sentences(limit: int) -> list[str]:
    texts: set[str] = set()
    if HH.is_file():
        for line in HH.read_text().splitlines():
            for turn in re.split(r"\n\n(?:Human|Assistant): ", json.loads(line)["chosen"]):
                if 8 <= len(turn.split()) <= 60:
                    texts.add(turn.strip())
    else:
        for name in ("prompts", "sft", "preferences"):
            for r in load_rows(f"demo:{name}", what=name).rows:
                for v in [r.get(k) for k in ("prompt", "chosen", "rejected")] + [
                    m["content"] for m in r.get("messages") or []
                ]:
                    if isinstance(v, str) and 8 <= len(v.split()) <= 60:
                        texts.add(v)
    unique = sorted({normalize(t): t for t in texts}.values())
    return random.Random(0).sample(unique, min(limit, len(unique)))


# -- 1. exact + MinHash ----------------------------------------------------------------------------------


def make_data(n: int, seed: int = 0) -> tuple[list[str], dict[str, set]]:
    rng = random.Random(seed)
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


def pairs_of(matches) -> set[tuple[int, int]]:
    return {tuple(sorted((m.row, m.of))) for m in matches}


def families(truth: dict[str, set]) -> dict[int, int]:
    """row -> its original: an original and all its planted copies are one family."""
    fam = {}
    for pairs in truth.values():
        for orig, copy in pairs:
            fam[orig] = orig
            fam[copy] = orig
    return fam


def score(found: set, wanted: set, fam: dict[int, int]) -> tuple[float, float]:
    """Recall: planted copies matched to a member of their family; precision: found pairs within one family."""
    hit = {r for a, b in found if fam.get(a) is not None and fam.get(a) == fam.get(b) for r in (a, b)}
    recall = sum(1 for _, copy in wanted if copy in hit) / len(wanted) if wanted else 1.0
    right = sum(1 for a, b in found if a in fam and fam.get(a) == fam.get(b))
    return recall, (right / len(found) if found else 1.0)


def plain_datasketch(docs: list[str], threshold: float) -> tuple[set, float]:
    t0 = time.perf_counter()
    sets = [SHINGLER(d) for d in docs]
    hashes = MinHash.bulk([[s.encode() for s in x] or [b""] for x in sets], num_perm=128)
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    for i, h in enumerate(hashes):
        lsh.insert(i, h)
    found = set()
    for i, h in enumerate(hashes):
        for j in lsh.query(h):
            if j > i and dedup.jaccard(sets[i], sets[j]) >= threshold:
                found.add((i, j))
    return found, time.perf_counter() - t0


def minhash_part(rows: int) -> float:
    docs, truth = make_data(rows)
    fam = families(truth)
    print(
        f"{len(docs)} rows; planted pairs: exact {len(truth['exact'])}, light edits {len(truth['edit'])}, "
        f"reorderings {len(truth['reorder'])}",
        flush=True,
    )
    order = range(len(docs))
    t0 = time.perf_counter()
    exact = pairs_of(dedup.exact_matches([normalize(d) for d in docs], order))
    t1 = time.perf_counter()
    fuzzy = pairs_of(dedup.near_duplicates([docs], order, threshold=0.7, shingler=SHINGLER))
    t2 = time.perf_counter()
    r, p = score(exact, truth["exact"], fam)
    print(
        f"exact:    recall {r:.3f} precision {p:.3f} in {t1 - t0:.1f} s = {len(docs) / (t1 - t0):.0f} rows/s"
    )
    wanted = truth["exact"] | truth["edit"]
    r, p = score(fuzzy, wanted, fam)
    print(
        f"MinHash:  recall {r:.3f} precision {p:.3f} on exact copies + light edits (reorderings found: "
        f"{score(fuzzy, truth['reorder'], fam)[0]:.3f}) in {t2 - t1:.1f} s = {len(docs) / (t2 - t1):.0f} rows/s"
    )
    print(f"exact + MinHash: {len(docs) / (t2 - t0):.0f} rows/s (goal >= 2000)", flush=True)
    plain, plain_s = plain_datasketch(docs, 0.7)
    r, p = score(plain, wanted, fam)
    print(
        f"datasketch (plain script, same shingles and confirmation): recall {r:.3f} precision {p:.3f} in "
        f"{plain_s:.1f} s = {len(docs) / plain_s:.0f} rows/s",
        flush=True,
    )
    return plain_s / (t2 - t1)


# -- 2. semantic: paraphrases of real sentences ---------------------------------------------------------


def semantic_part(n_sentences: int) -> np.ndarray:
    rng = random.Random(1)
    texts = real_sentences(n_sentences)
    base = len(texts)
    truth = set()
    for i in rng.sample(range(base), int(0.15 * base)):
        para = paraphrase(texts[i], rng)
        if para is not None:
            texts.append(para)
            truth.add((i, len(texts) - 1))
    fam = families({"paraphrase": truth})
    with tempfile.TemporaryDirectory() as tmp:
        emb = Embedder(MINILM, Path(tmp) / "emb.sqlite", batch_size=64)
        t0 = time.perf_counter()
        vecs = emb.embed(texts)
        t1 = time.perf_counter()
        emb.embed(texts)
        t2 = time.perf_counter()
        emb.close()
    print(
        f"semantic on real sentences ({'HH-RLHF' if HH.is_file() else 'demo data'}): {base} sentences + "
        f"{len(truth)} planted paraphrases, e.g. {texts[next(iter(truth))[0]]!r} -> "
        f"{texts[next(iter(truth))[1]]!r}; embedding {len(texts) / (t1 - t0):.0f} rows/s, cached re-embedding "
        f"{t2 - t1:.2f} s",
        flush=True,
    )
    for threshold in (0.95, 0.92):
        t3 = time.perf_counter()
        found = pairs_of(dedup.semantic_matches([vecs], range(len(texts)), threshold=threshold))
        t4 = time.perf_counter()
        r, p = score(found, truth, fam)
        print(
            f"semantic threshold {threshold}: paraphrase recall {r:.3f} precision {p:.3f} ({len(found)} pairs; "
            f"goal recall >= 0.85 at precision >= 0.95), search {t4 - t3:.2f} s"
        )
        for a, b in sorted(found - truth)[:3]:
            print(f"    other pair: {texts[a][:70]!r} ~ {texts[b][:70]!r}")
    return vecs[:base]


# -- 3. semantic at scale -------------------------------------------------------------------------------


def semantic_scale(real: np.ndarray, n: int) -> None:
    rng = np.random.default_rng(0)
    n_copy = n // 20
    centres = real[rng.integers(0, len(real), n - n_copy)]
    base = centres + 0.05 * rng.normal(size=centres.shape).astype("float32")
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    src = rng.choice(len(base), n_copy, replace=False)
    copies = base[src] + 0.012 * rng.normal(size=(n_copy, base.shape[1])).astype("float32")
    x = np.vstack([base, copies]).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = float(np.median((x[len(base) :] * base[src]).sum(1)))
    t0 = time.perf_counter()
    found = dedup.semantic_matches([x], range(len(x)), threshold=0.95)
    t1 = time.perf_counter()
    got = {(m.of, m.row) for m in found}
    recall = sum(1 for k, s in enumerate(src) if (int(s), len(base) + k) in got) / n_copy
    print(
        f"semantic at scale: {len(x)} rows (384-d, {dedup.auto_clusters(len(x))} k-means clusters), {n_copy} planted "
        f"copies (median cosine {cos:.3f}): found {recall:.3f} of them, {len(found)} matches in {t1 - t0:.1f} s = "
        f"{len(x) / (t1 - t0):.0f} rows/s (k-means + search within and across cluster borders)",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--sentences", type=int, default=1500)
    ap.add_argument("--semantic-rows", type=int, default=100_000)
    a = ap.parse_args()
    ratio = minhash_part(a.rows)
    real = semantic_part(a.sentences)
    semantic_scale(real, a.semantic_rows)
    print(f"ratio rlhf/plain {ratio:.2f}")


if __name__ == "__main__":
    main()
