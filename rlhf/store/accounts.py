"""Assessor and admin accounts of the labeling store: scrypt password hashes, roles, enable/disable."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf.store.base import StoreError, now_utc
from rlhf.store.schema import Assessor

ROLES = ("assessor", "admin")
USERNAME = re.compile(r"[\w.@+-]{1,64}")  # letters (any script), digits, _ . @ + -: no markup, no spaces
MAX_PASSWORD_CHARS = 1024  # longer passwords are refused when set and fail at login without being hashed


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


def check_new_password(username: str, password: str) -> str:
    if len(password) < 8:
        raise StoreError(f"the password for '{username}' is too short: use at least 8 characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise StoreError(
            f"the password for '{username}' is too long: use at most {MAX_PASSWORD_CHARS} characters"
        )
    return password


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username or ""):
        raise StoreError(
            f"username {username!r} is not allowed: use 1 to 64 letters, digits or the characters _ . @ + - "
            "(no spaces, markup or control characters)"
        )
    return username


# A user that does not exist still costs one scrypt hash, so a login answers in the same time whether the
# name exists or not (no username enumeration by timing).
@functools.cache
def _dummy_hash() -> str:
    return hash_password("no such user: a dummy password to spend the same time")


def stamp(password_hash: str, disabled: bool) -> str:
    """A short fingerprint of a user's credentials: it changes when the password changes or the account is
    disabled, so the app can end the sessions opened before (see labeling_ui.app)."""
    return hashlib.sha256(f"{password_hash}|{disabled}".encode()).hexdigest()[:16]


class Accounts:
    """The account half of `Store` (it provides `Session` and `ReadSession`)."""

    def add_user(self, username: str, password: str, role: str = "assessor") -> int:
        username = check_username(username)
        if role not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        check_new_password(username, password)
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
        check_new_password(username, password)
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
        """The user's {username, role} when the password matches and the account is enabled. A name no
        account could have, or an over-long password, fails at once (no lookup, no hash)."""
        if not USERNAME.fullmatch(username or "") or len(password or "") > MAX_PASSWORD_CHARS:
            return None
        with self.ReadSession.begin() as s:
            user = s.scalar(select(Assessor).where(Assessor.username == username))
            ok = check_password(password, user.password_hash if user is not None else _dummy_hash())
            if user is None or user.disabled or not ok:
                return None
            return {"username": user.username, "role": user.role}

    def credentials_stamp(self, username: str) -> str | None:
        """`stamp` of the user's current credentials; None for an unknown user."""
        with self.ReadSession.begin() as s:
            user = s.scalar(select(Assessor).where(Assessor.username == username))
            return None if user is None else stamp(user.password_hash, user.disabled)
