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

from rlhf.errors import ConfigError


def store_url(target: str) -> str:
    """A SQLAlchemy URL, or a file path (→ SQLite)."""
    if "://" in target:
        if target.startswith("postgresql://"):
            return "postgresql+psycopg://" + target[len("postgresql://") :]
        if target.startswith(("sqlite:", "postgresql+psycopg:")):
            return target
        raise ConfigError(
            f"store '{target}': only SQLite (a file path or sqlite:///path) and PostgreSQL "
            "(postgresql://user@host/db) are supported."
        )
    path = Path(target).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def make_engine(target: str, *, busy_timeout_ms: int = 30_000, read_only: bool = False) -> Engine:
    url = store_url(target)
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
