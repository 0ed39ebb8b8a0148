"""What every part of the store shares: its error type and the clock (naive UTC, as stored)."""

from __future__ import annotations

from datetime import UTC, datetime

from rlhf.errors import RlhfError


class StoreError(RlhfError):
    """A refused store operation; the message says why and what to do."""


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
