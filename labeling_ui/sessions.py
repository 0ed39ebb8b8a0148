"""Logins and login sessions of the labeling app: the password check, sessions bound to their user, ended when
the user's credentials change.

`LoginGuard` is Gradio's `auth=`: the store's scrypt check runs in a small thread pool at a lower CPU
priority, never on the event loop, so logins (right or wrong, however many) do not stall the requests of
users already logged in; an account is locked after repeated failures. (The per-address rate limit of
login attempts is `labeling_ui.gate.LoginLimiter`.)

Gradio's login gives each browser an access-token cookie (server side: token -> username). `SessionGuard`
stamps each token, as Gradio stores it at login, with a fingerprint of the user's credentials: when the
password changes (`rlhf users set-password`) or the account is disabled, the stamp
differs, and the token is revoked — at the session's next request, and within `sweep_s` seconds by a
background sweep even for an idle session. The user must log in again.

Each Gradio session hash belongs to the user who first used it (`claim`, enforced for every route that names
a session hash by `labeling_ui.gate`), and per-session server state (`gr.State`) carries the username it was
made for: a request that presents another user's session is refused (`check_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
from fastapi import HTTPException

from rlhf.store import StoreError, check_username

ENDED = "Your session has ended (your password was changed or your account disabled). Reload the page and log in again."
FOREIGN = "This session belongs to another user. Reload the page."
MAX_SESSIONS_PER_USER = 1000  # session hashes remembered per user (their oldest is forgotten first)
LOGIN_NICE = 10  # the login threads' CPU priority (Linux nice value): the app's requests come first


class LoginGuard:
    """Store-backed password check with a lockout after repeated failures (per username, unknown names too).

    `check` (the coroutine given to Gradio as `auth=`) runs the check in a pool of `workers` threads; while
    `max_waiting` checks are already waiting, another login is answered 429 at once ("try again in 1 s")."""

    def __init__(self, store, max_failures: int, lockout_s: int, *, workers: int = 2, max_waiting: int = 16):
        self.store, self.max_failures, self.lockout_s = store, max_failures, lockout_s
        self.failures: dict[str, list[float]] = {}
        self.max_waiting, self.waiting = max_waiting, 0  # `waiting` is only touched on the event loop
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="rlhf-login", initializer=_lower_priority)
        self._lock = threading.Lock()

    def __call__(self, username: str, password: str) -> bool:
        """The check itself (blocking: scrypt)."""
        now = time.time()
        with self._lock:
            recent = [t for t in self.failures.get(username, []) if now - t < self.lockout_s]
        if len(recent) >= self.max_failures:
            return False  # locked: even the right password is refused until the window passes
        if self.store.authenticate(username, password) is not None:
            with self._lock:
                self.failures.pop(username, None)
            return True
        if _could_be_a_user(username):  # a name no account can have is not remembered
            with self._lock:  # re-read: another thread may have counted a failure of this name meanwhile
                kept = [t for t in self.failures.get(username, []) if now - t < self.lockout_s]
                self.failures[username] = [*kept, now]
                if len(self.failures) > 100_000:  # forget the names whose failures are all stale
                    self.failures = {
                        k: v for k, v in self.failures.items() if v and now - v[-1] < self.lockout_s
                    }
        return False

    async def check(self, username: str, password: str) -> bool:
        if self.waiting >= self.max_waiting:
            raise HTTPException(
                status_code=429,
                detail="Too many logins are being checked right now; try again in 1 s.",
                headers={"Retry-After": "1"},
            )
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self, username, password)
        finally:
            self.waiting -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    """A login thread yields the CPU to the threads serving requests (Linux: a thread has its own nice
    value; elsewhere this does nothing)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOGIN_NICE)


def _could_be_a_user(username: str) -> bool:
    try:
        check_username(username)
    except StoreError:
        return False
    return True


class SessionGuard:
    def __init__(self, store, sweep_s: float = 5.0):
        self.store, self.sweep_s = store, sweep_s
        self.stamps: dict[str, str] = {}  # access token -> credentials stamp when first seen
        self.owners: dict[str, str] = {}  # Gradio session hash -> the user who first used it
        self._sessions: dict[str, OrderedDict[str, None]] = {}  # user -> their session hashes, oldest first
        self.server = None  # gradio's server app (holds `tokens` and `cookie_id`), set by `attach`
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def attach(self, blocks) -> None:
        """After launch: stamp every token the app issues from now on, and start the background sweep."""
        self.blocks, self.server = blocks, blocks.server_app
        self.server.tokens = StampedTokens(self, self.server.tokens)
        threading.Thread(target=self._sweep_loop, name="rlhf-session-sweep", daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def user(self, request: gr.Request) -> str:
        """The logged-in username of a live session, or a gr.Error (nothing is done for a dead one)."""
        if request is None or not request.username:
            raise gr.Error("Not logged in.")
        token = self._token(request)
        if token is not None and not self._still_valid(token, request.username):
            raise gr.Error(ENDED)
        return request.username

    def check_state(self, state: dict, user: str) -> None:
        owner = (state or {}).get("user")
        if owner is not None and owner != user:
            raise gr.Error(FOREIGN)

    def claim(self, session_hash: str, user: str) -> bool:
        """Whether `session_hash` is `user`'s: it becomes theirs at its first use, and is never another's.
        A user's oldest hashes beyond MAX_SESSIONS_PER_USER are forgotten (only their own: no one can push
        another user's sessions out)."""
        with self._lock:
            owner = self.owners.get(session_hash)
            if owner is not None:
                return owner == user
            self.owners[session_hash] = user
            mine = self._sessions.setdefault(user, OrderedDict())
            mine[session_hash] = None
            if len(mine) > MAX_SESSIONS_PER_USER:
                oldest, _ = mine.popitem(last=False)
                self.owners.pop(oldest, None)
            return True

    # -- internals ------------------------------------------------------------------------------------------

    def _token(self, request: gr.Request) -> str | None:
        if self.server is None:
            return None
        raw = getattr(request, "request", None)
        cookies = getattr(raw, "cookies", None) or {}
        cid = self.server.cookie_id
        return cookies.get(f"access-token-{cid}") or cookies.get(f"access-token-unsecure-{cid}")

    def _still_valid(self, token: str, username: str) -> bool:
        now = self.store.credentials_stamp(username)
        with self._lock:
            first = self.stamps.setdefault(token, now)
        if now is not None and first == now:
            return True
        self._revoke(token)
        return False

    def _revoke(self, token: str) -> None:
        with self._lock:
            self.stamps.pop(token, None)
        if self.server is not None:
            self.server.tokens.pop(token, None)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.sweep_s) and getattr(self.blocks, "is_running", False):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a store hiccup must not kill the sweep; the next one retries
                continue

    def sweep(self) -> list[str]:
        """Revoke every known token whose user's credentials changed since it was first seen."""
        revoked = []
        for token, username in list(self.server.tokens.items()):
            if token in self.stamps and not self._still_valid(token, username):
                revoked.append(token)
        return revoked


class StampedTokens(dict):
    """Gradio's token -> username table; each token is stamped with its user's credentials when issued."""

    def __init__(self, guard: SessionGuard, existing: dict):
        super().__init__()
        self.guard = guard
        for token, username in existing.items():
            self[token] = username

    def __setitem__(self, token: str, username: str) -> None:
        with self.guard._lock:
            self.guard.stamps[token] = self.guard.store.credentials_stamp(username)
        super().__setitem__(token, username)
