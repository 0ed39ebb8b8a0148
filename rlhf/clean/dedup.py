"""De-duplication for `rlhf clean`. A row is one or more *parts* (a preference pair: prompt, chosen,
rejected; an SFT row: prompt, completion; a prompt: itself), and two rows are duplicates only when **every**
part is: pairs from one ranking share a prompt and an answer and are *not* duplicates.

Three ways, each returning `Match`es (a removed row and the kept row it duplicates):
- `exact_matches`: the same key (the normalized parts, `text.normalize`: NFKC, case, whitespace).
- `near_duplicates`: MinHash with LSH banding (the `rensa` library: MinHash in Rust) over the first part's
  shingles finds candidates, as datatrove / text-dedup / BigCode do; a candidate is a duplicate when each
  part's Jaccard similarity (exact, of the shingle sets: no estimate noise at the threshold) is
  >= threshold. Shingles adapt to length (`text.adaptive_shingles`: character 3-grams below `short_words`
  words, where one changed word would replace most word n-grams).
- `semantic_matches`: SemDeDup (Abbas et al. 2023, as in NeMo Curator): unit-length embeddings per part,
  k-means clusters (`faiss.Kmeans`) over the parts joined, then within each cluster a row is a duplicate
  of a kept row whose every part has cosine >= threshold. The cost grows with n * cluster size, not n^2.

Duplicates attach to a *kept* row, never to another duplicate (no union-find chains: A~B and B~C does not
make A~C). Which row is kept is the order rows claim their place (`keep_order`): `first` (earliest),
`longest` or `score` (highest given score).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
from rensa import RMinHash, RMinHashLSH

from rlhf.clean.text import adaptive_shingles

KeepRule = Literal["first", "longest", "score"]
BLOCK = 256


@dataclass(frozen=True)
class Match:
    row: int  # the duplicate, removed
    of: int  # the kept row it duplicates
    similarity: float  # the smallest similarity over the parts (1.0 for exact duplicates)


def keep_order(
    n: int, rule: KeepRule, texts: Sequence[str] | None = None, scores: Sequence[float] | None = None
) -> list[int]:
    """Row indices in the order they claim a place: the first row of a group of duplicates is kept."""
    if rule == "first":
        return list(range(n))
    if rule == "longest":
        if texts is None:
            raise ValueError("keep rule 'longest' needs texts")
        return sorted(range(n), key=lambda i: (-len(texts[i]), i))
    if scores is None:
        raise ValueError("keep rule 'score' needs scores")
    return sorted(range(n), key=lambda i: (-scores[i], i))


def greedy(
    order: Sequence[int], neighbours: dict[int, Iterable[int]], similar: Callable[[int, int], float | None]
) -> list[Match]:
    """Walk rows in `order`; a row whose neighbour was kept before it and is `similar` (a similarity, or
    None when not a duplicate) becomes a duplicate of the most similar such row; otherwise it is kept."""
    kept: set[int] = set()
    out = []
    for i in order:
        best: tuple[float, int] | None = None
        for j in neighbours.get(i, ()):
            if j in kept:
                s = similar(i, j)
                if s is not None and (best is None or (s, -j) > (best[0], -best[1])):
                    best = (s, j)
        if best is None:
            kept.add(i)
        else:
            out.append(Match(i, best[1], best[0]))
    return out


def exact_matches(keys: Sequence[Hashable], order: Sequence[int]) -> list[Match]:
    first: dict[Hashable, int] = {}
    out = []
    for i in order:
        j = first.setdefault(keys[i], i)
        if j != i:
            out.append(Match(i, j, 1.0))
    return out


def lsh_bands(num_perm: int, threshold: float) -> int:
    """The number of LSH bands whose S-curve rises (at (1/b)^(1/r)) a little below `threshold`, so that
    pairs at the threshold become candidates with high probability; the exact check then trims."""
    options = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    target = 0.8 * threshold
    return min(options, key=lambda b: abs((1 / b) ** (b / num_perm) - target))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class Shingler:
    ngram: int = 5
    short_words: int = 50
    char_ngram: int = 3

    def __call__(self, text: str) -> set[str]:
        return adaptive_shingles(text, self.ngram, short_words=self.short_words, char_ngram=self.char_ngram)


def near_duplicates(
    parts: Sequence[Sequence[str]],
    order: Sequence[int],
    *,
    threshold: float = 0.8,
    shingler: Shingler | None = None,
    num_perm: int = 128,
    seed: int = 42,
) -> list[Match]:
    """`parts[k][i]` is part k of row i. Candidates from MinHash LSH over part 0; confirmed per part."""
    shingler = shingler or Shingler()
    first = [shingler(t) for t in parts[0]]
    hashes = []
    for s in first:
        m = RMinHash(num_perm=num_perm, seed=seed)
        m.update(list(s) or [""])
        hashes.append(m)
    lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=lsh_bands(num_perm, threshold))
    for i, h in enumerate(hashes):
        lsh.insert(i, h)
    neighbours = {i: [j for j in lsh.query(h) if j != i] for i, h in enumerate(hashes)}
    cache: dict[tuple[int, int], set[str]] = {}

    def sets(k: int, i: int) -> set[str]:
        if (k, i) not in cache:
            cache[k, i] = shingler(parts[k][i])
        return cache[k, i]

    def similar(i: int, j: int) -> float | None:
        if (
            hashes[i].jaccard(hashes[j]) < threshold - 0.15
        ):  # the estimate's error is ~0.04 at 128 permutations
            return None
        sims = [jaccard(first[i], first[j])]
        for k in range(1, len(parts)):
            if sims[-1] < threshold:
                return None
            sims.append(1.0 if parts[k][i] == parts[k][j] else jaccard(sets(k, i), sets(k, j)))
        return min(sims) if min(sims) >= threshold else None

    return greedy(order, neighbours, similar)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype="float32")
    faiss.normalize_L2(x)
    return x


def _min_cosine(parts: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = None
    for p in parts:
        s = p[a] @ p[b].T
        out = s if out is None else np.minimum(out, s)
    return out


def _cluster_greedy(parts: list[np.ndarray], members: np.ndarray, threshold: float) -> list[Match]:
    """Greedy within one cluster (`members` in keep order), in blocks: each block against the rows kept so
    far (one matrix product), then row by row against the rows its own block kept."""
    kept = np.empty(0, dtype=np.int64)
    out = []
    for start in range(0, len(members), BLOCK):
        blk = members[start : start + BLOCK]
        best_s = np.full(len(blk), -np.inf, dtype=np.float32)
        best_j = np.full(len(blk), -1, dtype=np.int64)
        if len(kept):
            s = _min_cosine(parts, blk, kept)
            arg = s.argmax(1)
            best_s, best_j = s[np.arange(len(blk)), arg], kept[arg]
        inner = _min_cosine(parts, blk, blk)
        new: list[int] = []  # positions in the block kept so far
        for r, i in enumerate(blk):
            s, j = float(best_s[r]), int(best_j[r])
            if new:
                row = inner[r, new]
                q = int(row.argmax())
                if row[q] > s:
                    s, j = float(row[q]), int(blk[new[q]])
            if s >= threshold:
                out.append(Match(int(i), j, round(s, 4)))
            else:
                new.append(r)
        kept = np.concatenate([kept, blk[new]])
    return out


def auto_clusters(n: int) -> int:
    """About 1,000 rows per cluster (one cluster, an exact search, below 2,000 rows)."""
    return max(1, round(n / 1000))


def semantic_matches(
    parts: Sequence[np.ndarray],
    order: Sequence[int],
    *,
    threshold: float = 0.95,
    clusters: int | None = None,
    seed: int = 0,
) -> list[Match]:
    """`parts[k]` holds part k's embeddings (one row per row, any scale: normalized here).

    Pass 1: within each k-means cluster, rows in keep order against the rows the cluster kept. Pass 2
    (rows near a cluster border): each row still kept against the kept rows of its second-nearest cluster,
    again in keep order and only onto rows that stay kept."""
    units = [_unit(p) for p in parts]
    n = len(units[0]) if units else 0
    if n == 0:
        return []
    k = min(clusters or auto_clusters(n), n)
    rank = np.empty(n, dtype=np.int64)
    rank[np.asarray(order)] = np.arange(n)
    if k == 1:
        near = np.zeros((n, 1), dtype=np.int64)
    else:
        joined = _unit(np.hstack(units) / math.sqrt(len(units)))
        km = faiss.Kmeans(joined.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
        km.cp.min_points_per_centroid = 1
        km.train(joined)
        near = km.index.search(joined, 2)[1]
    out = []
    for c in np.unique(near[:, 0]):
        members = np.nonzero(near[:, 0] == c)[0]
        out += _cluster_greedy(units, members[np.argsort(rank[members], kind="stable")], threshold)
    if k == 1:
        return out
    gone = {m.row for m in out}
    kept = np.array([i for i in range(n) if i not in gone], dtype=np.int64)
    return out + _across_borders(units, kept, near[kept], rank, threshold)


def _across_borders(
    units: list[np.ndarray], kept: np.ndarray, near: np.ndarray, rank: np.ndarray, threshold: float
) -> list[Match]:
    """Pass 2 of `semantic_matches`: pairs of kept rows where one's second cluster is the other's first."""
    sims: dict[tuple[int, int], float] = {}
    neighbours: dict[int, list[int]] = {}
    for c in np.unique(near[:, 1]):
        visitors, home = kept[near[:, 1] == c], kept[near[:, 0] == c]
        if not len(visitors) or not len(home):
            continue
        for start in range(0, len(visitors), BLOCK):
            blk = visitors[start : start + BLOCK]
            s = _min_cosine(units, blk, home)
            for r, q in zip(*np.nonzero(s >= threshold), strict=True):
                i, j = int(blk[r]), int(home[q])
                sims[i, j] = sims[j, i] = round(float(s[r, q]), 4)
                neighbours.setdefault(i, []).append(j)
                neighbours.setdefault(j, []).append(i)
    if not sims:
        return []
    order = sorted(neighbours, key=lambda i: rank[i])
    return greedy(order, neighbours, lambda i, j: sims.get((i, j)))
