"""Content hashes for run manifests, lineage and caches: the sha256 of every byte of a file, or of a
directory's files (relative names + each file's hash, sorted) — two checkpoints that differ anywhere hash
differently."""

from __future__ import annotations

import hashlib
from pathlib import Path

_hash_memo: dict[tuple, str] = {}


def file_hash(path: Path) -> str:
    """sha256 of a whole file (every byte: two checkpoints that differ anywhere hash differently). Memoised
    in this process by (path, size, mtime, inode), so a file read twice in one run is hashed once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _hash_memo:
        with open(path, "rb") as fh:
            _hash_memo[key] = hashlib.file_digest(fh, "sha256").hexdigest()
    return _hash_memo[key]


def content_hash(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names + each file's sha256), sorted."""
    p = Path(path)
    if p.is_file():
        return file_hash(p)
    h = hashlib.sha256()
    for f in sorted(f for f in p.rglob("*") if f.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + file_hash(f).encode())
    return h.hexdigest()
