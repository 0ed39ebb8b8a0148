"""Login sessions of the labeling app: bound to the user, ended when the user's credentials change.

Gradio's login gives each browser an access-token cookie (server side: token -> username). This guard
stamps each token, as Gradio stores it at login, with a fingerprint of the user's credentials: when the
password changes (`rlhf users set-password`) or the account is disabled, the stamp
differs, and the token is revoked — at the session's next request, and within `sweep_s` seconds by a
background sweep even for an idle session. The user must log in again.

Per-session server state (`gr.State`) carries the username it was made for: a request that presents
another user's session state is refused (`check_state`).
"""

from __future__ import annotations

import threading

import gradio as gr

ENDED = "Your session has ended (your password was changed or your account disabled). Reload the page and log in again."


class SessionGuard:
    def __init__(self, store, sweep_s: float = 5.0):
        self.store, self.sweep_s = store, sweep_s
        self.stamps: dict[str, str] = {}  # access token -> credentials stamp when first seen
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
            raise gr.Error("This page's session belongs to another user. Reload the page.")

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
