"""De-duplication for `rlhf clean`, three ways, each returning clusters of row indices (size >= 2):

- `exact_clusters`: the same text after `cleaning.normalize` (NFKC, case, whitespace).
- `minhash_clusters`: near-duplicates by MinHash over word n-gram shingles with LSH banding (the `rensa`
  library: MinHash in Rust, ~10x datasketch's speed here), candidate pairs confirmed by their estimated
  Jaccard similarity >= threshold, joined into clusters (union-find) — as datatrove / text-dedup / BigCode.
- `semantic_clusters`: SemDeDup-style — unit-length embeddings, exact inner-product neighbours from a
  `faiss` index, pairs with cosine >= threshold joined into clusters.
`keep_one` picks the row a cluster keeps: `first` (earliest), `longest`, or `score` (highest given score).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import faiss
import numpy as np
from rensa import RMinHash, RMinHashLSH

from rlhf.clean.text import exact_key, shingles

KeepRule = Literal["first", "longest", "score"]


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def clusters(self) -> list[list[int]]:
        groups: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            groups[self.find(i)].append(i)
        return [g for g in groups.values() if len(g) > 1]


def exact_clusters(texts: Sequence[str]) -> list[list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        groups[exact_key(t)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def lsh_bands(num_perm: int, threshold: float) -> int:
    """The number of LSH bands whose S-curve rises (at (1/b)^(1/r)) a little below `threshold`, so that
    pairs at the threshold become candidates with high probability; the exact check then trims."""
    options = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    target = 0.8 * threshold
    return min(options, key=lambda b: abs((1 / b) ** (b / num_perm) - target))


def minhash_clusters(
    texts: Sequence[str], *, threshold: float = 0.8, ngram: int = 5, num_perm: int = 128, seed: int = 42
) -> list[list[int]]:
    hashes = []
    for t in texts:
        m = RMinHash(num_perm=num_perm, seed=seed)
        m.update(sorted(shingles(t, ngram)) or [""])
        hashes.append(m)
    lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=lsh_bands(num_perm, threshold))
    for i, h in enumerate(hashes):
        lsh.insert(i, h)
    uf = UnionFind(len(texts))
    for i, h in enumerate(hashes):
        for j in lsh.query(h):
            if j > i and h.jaccard(hashes[j]) >= threshold:
                uf.union(i, j)
    return uf.clusters()


def semantic_clusters(embeddings: np.ndarray, *, threshold: float = 0.95) -> list[list[int]]:
    """Rows whose embeddings (one per row, any scale: normalized here) have cosine >= threshold."""
    x = np.ascontiguousarray(embeddings, dtype="float32")
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, _, ids = index.range_search(x, threshold)
    uf = UnionFind(len(x))
    for i in range(len(x)):
        for j in ids[lims[i] : lims[i + 1]]:
            if j != i:
                uf.union(i, int(j))
    return uf.clusters()


def keep_one(
    cluster: Sequence[int], rule: KeepRule, texts: Sequence[str], scores: Sequence[float] | None = None
) -> int:
    if rule == "first":
        return min(cluster)
    if rule == "longest":
        return max(cluster, key=lambda i: (len(texts[i]), -i))
    if scores is None:
        raise ValueError("keep rule 'score' needs scores")
    return max(cluster, key=lambda i: (scores[i], -i))
