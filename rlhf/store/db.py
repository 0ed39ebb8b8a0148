"""Engines for the labeling store: SQLite (the embedded default) and PostgreSQL (for teams), one schema.

SQLite is set up so that concurrent assessors never see "database is locked" and an acknowledged label
survives a crash: WAL journal, `busy_timeout`, `synchronous=FULL`, foreign keys on, and every transaction
opened with `BEGIN IMMEDIATE` (pysqlite's own deferred BEGIN is switched off), so a read-then-write
transaction takes the write lock up front instead of failing on upgrade. Read-only work goes through a
second engine (`read_only=True`) with a plain BEGIN: under WAL readers never wait for the writer. PostgreSQL runs at READ COMMITTED
with row locks (`SELECT ... FOR UPDATE`) where the assignment logic reads then writes.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rlhf.store.base import StoreError

SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_path(target: str) -> Path | None:
    """The file of a SQLite store (a plain path or sqlite:///path), None for a server URL."""
    if "://" not in target:
        return Path(target).expanduser()
    if target.startswith("sqlite:///"):
        return Path(target[len("sqlite:///") :]).expanduser()
    return None


def check_exists(target: str) -> None:
    """For commands that only read: the SQLite file must already be a database (never create one)."""
    path = sqlite_path(target)
    if path is None:
        return
    if not path.exists():
        raise StoreError(
            f"store '{target}' does not exist (looked at {path.resolve()}). Check the path (--store / store=), "
            "or create the store first with `rlhf generate` or `rlhf users add`."
        )
    if path.is_dir():
        raise StoreError(f"store '{target}' is a directory; pass the store's SQLite file (e.g. labels.db).")
    with open(path, "rb") as f:
        head = f.read(16)
    if head != SQLITE_MAGIC:
        what = "an empty file" if not head else "not a SQLite database"
        raise StoreError(f"store '{target}' is {what}; pass the store's SQLite file or a postgresql:// URL.")


def unreachable(target: str, error: Exception) -> str:
    """The message for a store that cannot be opened or read: the target, the reason, what to check."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
    if sqlite_path(target) is None:
        hint = "check that the PostgreSQL server is running and reachable, and the URL's user, password and database"
    else:
        hint = (
            "check that it is the store's SQLite file (not a directory or another kind of file) and readable"
        )
    return f"store '{target}' cannot be opened ({reason}); {hint}."


def store_url(target: str) -> str:
    """A SQLAlchemy URL, or a file path (→ SQLite)."""
    if "://" in target:
        if target.startswith("postgresql://"):
            return "postgresql+psycopg://" + target[len("postgresql://") :]
        if target.startswith(("sqlite:", "postgresql+psycopg:")):
            return target
        raise StoreError(
            f"store '{target}': only SQLite (a file path or sqlite:///path) and PostgreSQL "
            "(postgresql://user@host/db) are supported."
        )
    return f"sqlite:///{Path(target).expanduser()}"


def make_engine(
    target: str, *, busy_timeout_ms: int = 30_000, read_only: bool = False, create_parent: bool = False
) -> Engine:
    url = store_url(target)
    path = sqlite_path(target)
    if path is not None and path.is_dir():
        raise StoreError(f"store '{target}' is a directory; pass the store's SQLite file (e.g. labels.db).")
    if path is not None and create_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _engine(url, busy_timeout_ms, read_only)
    except ArgumentError as e:
        raise StoreError(f"store '{target}': not a valid database URL ({e}).") from None
    except SQLAlchemyError as e:
        raise StoreError(unreachable(target, e)) from None


def _engine(url: str, busy_timeout_ms: int, read_only: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # pysqlite issues no BEGIN of its own
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
