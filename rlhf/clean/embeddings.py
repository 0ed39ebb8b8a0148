"""Sentence embeddings for semantic de-duplication and content screening: the built-in `minilm-l6` encoder
(all-MiniLM-L6-v2) with mean pooling and unit length, batched (sorted by length), cached by content hash in
a SQLite file (`$RLHF_CACHE/embeddings.sqlite`): a second run over the same texts computes nothing."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from rlhf.models import model_fingerprint, resolve_model_path


class Embedder:
    def __init__(self, spec: str, cache: Path, *, batch_size: int = 64, max_length: int = 256):
        self.spec, self.batch_size, self.max_length = spec, batch_size, max_length
        self.fingerprint = model_fingerprint(spec)[:16]
        self.model = self.tokenizer = None
        cache.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(cache)
        self.db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")
        self.hits = self.computed = 0

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.fingerprint}\0{self.max_length}\0{text}".encode()).hexdigest()

    def _load(self) -> None:
        path = resolve_model_path(self.spec)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self.db.execute(
                f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        missing = sorted({i for i, k in enumerate(keys) if k not in found}, key=lambda i: len(texts[i]))
        missing = list(dict.fromkeys(keys[i] for i in missing))  # unique keys, shortest texts first
        text_of = dict(zip(keys, texts, strict=True))
        if missing:
            if self.model is None:
                self._load()
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                vecs = self._encode([text_of[k] for k in batch])
                found.update(zip(batch, vecs, strict=True))
                self.db.executemany(
                    "INSERT OR REPLACE INTO emb VALUES (?, ?)",
                    [(k, v.tobytes()) for k, v in zip(batch, vecs, strict=True)],
                )
            self.db.commit()
        self.computed += len(missing)
        self.hits += len(set(keys)) - len(missing)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 384), dtype=np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)

    def close(self) -> None:
        self.db.close()
