"""Assessor and admin accounts of the labeling store: scrypt password hashes, roles, enable/disable."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf.store.base import StoreError, now_utc
from rlhf.store.schema import Assessor

ROLES = ("assessor", "admin")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


class Accounts:
    """The account half of `Store` (it provides `Session` and `ReadSession`)."""

    def add_user(self, username: str, password: str, role: str = "assessor") -> int:
        username = username.strip()
        if not username:
            raise StoreError("a username must not be empty")
        if role not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if len(password) < 8:
            raise StoreError(f"the password for '{username}' is too short: use at least 8 characters")
        with self.Session.begin() as s:
            if s.scalar(select(Assessor.id).where(Assessor.username == username)) is not None:
                raise StoreError(
                    f"user '{username}' already exists; use `rlhf users set-password` to change it"
                )
            user = Assessor(
                username=username, role=role, password_hash=hash_password(password), created_at=now_utc()
            )
            s.add(user)
            s.flush()
            return user.id

    def _user(self, s: Session, username: str) -> Assessor:
        user = s.scalar(select(Assessor).where(Assessor.username == username))
        if user is None:
            raise StoreError(f"no user '{username}'; add it with `rlhf users add`")
        return user

    def set_password(self, username: str, password: str) -> None:
        if len(password) < 8:
            raise StoreError(f"the password for '{username}' is too short: use at least 8 characters")
        with self.Session.begin() as s:
            self._user(s, username).password_hash = hash_password(password)

    def set_disabled(self, username: str, disabled: bool = True) -> None:
        with self.Session.begin() as s:
            self._user(s, username).disabled = disabled

    def list_users(self) -> list[dict]:
        with self.ReadSession.begin() as s:
            users = s.scalars(select(Assessor).order_by(Assessor.username)).all()
            return [{"username": u.username, "role": u.role, "disabled": u.disabled} for u in users]

    def role(self, username: str) -> str | None:
        """The user's role, or None for an unknown or disabled user."""
        with self.ReadSession.begin() as s:
            user = s.scalar(select(Assessor).where(Assessor.username == username))
            return None if user is None or user.disabled else user.role

    def authenticate(self, username: str, password: str) -> dict | None:
        """The user's {username, role} when the password matches and the account is enabled."""
        with self.ReadSession.begin() as s:
            user = s.scalar(select(Assessor).where(Assessor.username == username))
            if user is None or user.disabled or not check_password(password, user.password_hash):
                return None
            return {"username": user.username, "role": user.role}
