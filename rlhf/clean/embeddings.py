"""Sentence embeddings for semantic de-duplication and content screening: the built-in `minilm-l6` encoder
(all-MiniLM-L6-v2) with mean pooling and unit length, batched (sorted by length), cached by content hash in
a SQLite file (`$RLHF_CACHE/embeddings.sqlite`): a second run over the same texts computes nothing.

Nothing is cut: a text longer than the encoder's window (`max_length` tokens, 256 — what the model was
trained with) is split into consecutive windows, each embedded, and the text's vector is the token-weighted
mean of its windows' vectors, at unit length. `long_texts` counts the texts of the last `embed` call that
needed more than one window (stored with each vector, so a cached run reports the same count).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from rlhf.models import model_fingerprint, resolve_model_path

DIM = 384


class Embedder:
    def __init__(self, spec: str, cache: Path, *, batch_size: int = 64, max_length: int = 256):
        self.spec, self.batch_size, self.max_length = spec, batch_size, max_length
        self.fingerprint = model_fingerprint(spec)[:16]
        self.model = self.tokenizer = None
        cache.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(cache)
        self.db.execute("CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, vec BLOB, n INTEGER)")
        self.hits = self.computed = self.long_texts = 0

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.fingerprint}\0{self.max_length}\0{text}".encode()).hexdigest()

    def _load(self) -> None:
        path = resolve_model_path(self.spec)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        found: dict[str, tuple[np.ndarray, int]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self.db.execute(
                f"SELECT key, vec, n FROM windows WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update((k, (np.frombuffer(v, dtype=np.float32), n)) for k, v, n in rows)
        text_of = dict(zip(keys, texts, strict=True))
        missing = sorted({k for k in keys if k not in found}, key=lambda k: (len(text_of[k]), k))
        if missing:
            if self.model is None:
                self._load()
            computed = self._encode([text_of[k] for k in missing])
            found.update(zip(missing, computed, strict=True))
            self.db.executemany(
                "INSERT OR REPLACE INTO windows VALUES (?, ?, ?)",
                [(k, v.tobytes(), n) for k, (v, n) in zip(missing, computed, strict=True)],
            )
            self.db.commit()
        self.computed += len(missing)
        self.hits += len(set(keys)) - len(missing)
        self.long_texts = sum(1 for k in keys if found[k][1] > 1)
        return np.stack([found[k][0] for k in keys]) if keys else np.zeros((0, DIM), dtype=np.float32)

    def _windows(self, text: str) -> list[list[int]]:
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        step = self.max_length - 2  # [CLS] ... [SEP]
        return [ids[i : i + step] for i in range(0, len(ids), step)] or [[]]

    def _encode(self, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        """(unit vector, number of windows) per text."""
        windows = [(t, w) for t, text in enumerate(texts) for w in self._windows(text)]
        order = sorted(range(len(windows)), key=lambda i: len(windows[i][1]))
        pooled = np.zeros((len(windows), DIM), dtype=np.float32)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            seqs = [[cls, *windows[i][1], sep] for i in batch]
            width = max(map(len, seqs))
            ids = torch.tensor([s + [self.tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
            with torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).float()
            pooled[batch] = ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).numpy()
        sums = np.zeros((len(texts), DIM), dtype=np.float32)
        counts = np.zeros(len(texts), dtype=np.int64)
        for (t, w), vec in zip(windows, pooled, strict=True):
            sums[t] += vec * max(len(w), 1)
            counts[t] += 1
        sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return [(sums[t], int(counts[t])) for t in range(len(texts))]

    def close(self) -> None:
        self.db.close()
