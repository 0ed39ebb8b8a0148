"""The HTTP gate in front of Gradio's routes: one ASGI middleware (`Gate`) that checks, in this order,

1. **Routes.** Only the (method, path) pairs in `ALLOWED_ROUTES` reach Gradio: the page and its assets, the
   login, and the event queue the page and `gradio_client` use. Everything else answers 404 — uploads, file
   reads, recordings, streams, Gradio's editing and monitoring routes — and so does any route a Gradio
   upgrade adds, until someone reviews it. `CLOSED_ROUTES` lists the Gradio routes reviewed and kept closed,
   with the reason; `unreviewed_routes` names the served routes in neither list (a test holds it at none).
2. **Bodies.** A POST body larger than the app's largest form (from the store's text limits) answers 413.
3. **Logins.** `LoginLimiter`: a client address with `max_failures` failed logins within `window_s` seconds
   gets 429 "try again in N s" (unknown usernames count too; successes reset nothing). The refusal comes
   after a short pause, so a flood of attempts costs the sender time and the server almost nothing.
   Behind a reverse proxy the address is the proxy's unless it sends X-Forwarded-For (uvicorn trusts it from
   127.0.0.1 by default; `FORWARDED_ALLOW_IPS` names other proxies). Gradio's login form shows nothing on a
   429, so the gate adds `login_script` (labeling_ui.assets.LOGIN_JS) to the login page, which shows it.
4. **Sessions.** A request that names a Gradio session hash (queue/data's query, the heartbeat's path, the
   JSON body of queue/join, run, cancel and reset) must come from a logged-in user (else 401) and from the
   user who first used that hash (`SessionGuard.claim`; else 403): another user's hash, seen in a URL, reads
   none of their queued results, runs none of their events and closes none of their sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from urllib.parse import parse_qs

from fastapi.routing import iter_route_contexts
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.routing import compile_path

from labeling_ui.sessions import FOREIGN, SessionGuard

log = logging.getLogger(__name__)

ALLOWED_ROUTES = (
    # the page, its assets and the login form
    "GET /",
    "HEAD /",
    "GET /config",
    "GET /config/",
    "GET /assets/{path:path}",
    "GET /static/{path:path}",
    "GET /svelte/{path:path}",
    "GET /favicon.ico",
    "GET /theme.css",
    "GET /gradio_api/theme.css",
    "GET /robots.txt",
    "GET /manifest.json",
    "GET /pwa_icon",
    "GET /pwa_icon/{size}",
    "POST /login",
    "POST /login/",
    "GET /logout",
    # the events: API description, queue, direct runs (the fast submit), heartbeat, cancel
    "GET /gradio_api/info",
    "GET /gradio_api/info/",
    "GET /gradio_api/app_id",
    "GET /gradio_api/app_id/",
    "POST /gradio_api/queue/join",
    "GET /gradio_api/queue/data",
    "POST /gradio_api/run/{api_name}",
    "POST /gradio_api/run/{api_name}/",
    "GET /gradio_api/heartbeat/{session_hash}",
    "POST /gradio_api/cancel",
    "POST /gradio_api/reset",
    "POST /gradio_api/reset/",
    "GET /gradio_api/startup-events",  # Gradio's launch calls it once (it runs the startup events only once)
)
CLOSED_ROUTES = {
    "uploads: the app has no file components (any logged-in user could store files)": (
        "POST /gradio_api/upload",
        "GET /gradio_api/upload_progress",
        "POST /gradio_api/process_recording",
    ),
    "file reads and proxying: the app serves no files": (
        "GET /gradio_api/file={path_or_url:path}",
        "HEAD /gradio_api/file={path_or_url:path}",
        "GET /gradio_api/file/{path:path}",
        "GET /gradio_api/proxy={url_path:path}",
        "HEAD /gradio_api/proxy={url_path:path}",
        "GET /gradio_api/custom_component/{id}/{environment}/{type}/{file_name}",
    ),
    "streaming media: the app streams none": (
        "POST /gradio_api/stream/{event_id}",
        "POST /gradio_api/stream/{event_id}/close",
        "GET /gradio_api/stream/{session_hash}/{run}/{component_id}/playlist.m3u8",
        "GET /gradio_api/stream/{session_hash}/{run}/{component_id}/{segment_id}.{ext}",
        "GET /gradio_api/stream/{session_hash}/{run}/{component_id}/playlist-file",
    ),
    "other ways to call events: the page and gradio_client use the queue and /run": (
        "POST /gradio_api/api/{api_name}",
        "POST /gradio_api/api/{api_name}/",
        "POST /gradio_api/call/{api_name}",
        "POST /gradio_api/call/{api_name}/",
        "POST /gradio_api/call/v2/{api_name}",
        "POST /gradio_api/call/v2/{api_name}/",
        "GET /gradio_api/call/{api_name}/{event_id}",
        "GET /gradio_api/call/v2/{api_name}/{event_id}",
        "POST /gradio_api/component_server",
        "POST /gradio_api/component_server/",
        "GET /gradio_api/queue/status",
        "GET /gradio_api/deep_link",
    ),
    "the login token to scripts, user probes: unused (/token would hand the httponly cookie to scripts)": (
        "GET /gradio_api/token",
        "GET /gradio_api/token/",
        "GET /gradio_api/user",
        "GET /gradio_api/user/",
        "GET /gradio_api/login_check",
        "GET /gradio_api/login_check/",
    ),
    "API schemas, monitoring, run history, development: not for assessors": (
        "GET /openapi.json",
        "HEAD /openapi.json",
        "GET /gradio_api/openapi.json",
        "GET /monitoring",
        "GET /monitoring/summary",
        "GET /monitoring/{key}",
        "GET /gradio_api/dev/reload",
        "GET /gradio_api/runs",
        "GET /gradio_api/runs/",
        "POST /gradio_api/run-history/connect",
        "GET /gradio_api/run-history/buckets",
        "GET /gradio_api/run-history/records",
        "GET /gradio_api/run-history/records/{endpoint}/{record_id}/assets/{asset_id}",
    ),
    "Gradio's vibe editing: it rewrites the app's code": (
        "POST /gradio_api/vibe-edit",
        "POST /gradio_api/vibe-edit/",
        "POST /gradio_api/undo-vibe-edit",
        "POST /gradio_api/undo-vibe-edit/",
        "GET /gradio_api/vibe-code",
        "GET /gradio_api/vibe-code/",
        "POST /gradio_api/vibe-code",
        "POST /gradio_api/vibe-code/",
        "POST /gradio_api/vibe-starter-queries",
        "POST /gradio_api/vibe-starter-queries/",
    ),
}
LOGIN_PATHS = ("/login", "/login/")


def served_routes(server_app) -> list[str]:
    """Every route the FastAPI app serves, as "METHOD /path" (one entry per method)."""
    out = []
    for route in iter_route_contexts(server_app.routes):
        for method in sorted(route.methods or ()):
            out.append(f"{method} {route.path}")
    return out


def unreviewed_routes(server_app) -> list[str]:
    """Served routes in neither ALLOWED_ROUTES nor CLOSED_ROUTES: new, so closed by the gate until reviewed."""
    reviewed = set(ALLOWED_ROUTES).union(*CLOSED_ROUTES.values())
    return sorted(r for r in served_routes(server_app) if r not in reviewed)


class LoginLimiter:
    """Failed logins per client address in a sliding window of `window_s` seconds."""

    def __init__(self, max_failures: int = 20, window_s: float = 60.0, pause_s: float = 0.5):
        self.max_failures, self.window_s, self.pause_s = max_failures, window_s, pause_s
        self.failures: dict[str, deque[float]] = {}

    def wait_s(self, address: str, now: float | None = None) -> int:
        """Seconds until `address` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        if address not in self.failures:
            return 0
        recent = self._recent(address, now)
        if len(recent) < self.max_failures:
            return 0
        return max(1, math.ceil(recent[-self.max_failures] + self.window_s - now))

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._recent(address, now).append(now)
        if len(self.failures) > 100_000:  # forget the addresses whose failures are all stale
            self.failures = {a: d for a, d in self.failures.items() if d and now - d[-1] < self.window_s}

    def _recent(self, address: str, now: float) -> deque[float]:
        recent = self.failures.setdefault(address, deque())
        while recent and now - recent[0] >= self.window_s:
            recent.popleft()
        return recent


class Gate:
    """The ASGI middleware (see the module docstring); `gate_middleware` builds it for `app.launch`."""

    def __init__(
        self, app, guard: SessionGuard, limiter: LoginLimiter, max_body_bytes: int, login_script: str = ""
    ):
        self.app, self.guard, self.limiter, self.max_body_bytes = app, guard, limiter, max_body_bytes
        self.login_script = login_script.encode()
        self.allowed = [_compile(r) for r in ALLOWED_ROUTES]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # the app serves none
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], _app_path(scope)
        if not any(m == method and rx.match(path) for m, rx in self.allowed):
            log.info("gate: closed route %s %s", method, path)
            await answer(send, 404, f"Not found: this app does not serve {method} {path}.")
            return
        body = b""
        if method == "POST":
            body = await read_body(scope, receive, self.max_body_bytes)
            if body is None:
                too_large = f"Request too large: this app takes at most {self.max_body_bytes:,} bytes."
                await answer(send, 413, too_large)
                return
            receive = replay(body, receive)
        if path in LOGIN_PATHS:
            await self.login(scope, receive, send)
            return
        if path == "/" and method == "GET" and self.login_script and cookie_user(scope) is None:
            await self.app(scope, receive, add_to_head(send, self.login_script))  # the login page
            return
        hashes = session_hashes(scope, path, body)
        if hashes:
            user = cookie_user(scope)
            if user is None:
                await answer(send, 401, "Not logged in.")
                return
            if any(not isinstance(h, str) or not 1 <= len(h) <= 128 for h in hashes):
                await answer(send, 400, "A session hash is 1..128 characters.")
                return
            if not all(self.guard.claim(h, user) for h in hashes):
                log.warning("gate: %s presented another user's session hash on %s", user, path)
                await answer(send, 403, FOREIGN)
                return
        await self.app(scope, receive, send)

    async def login(self, scope, receive, send):
        address = (scope.get("client") or ("unknown",))[0]
        wait = self.limiter.wait_s(address)
        if wait:
            await asyncio.sleep(self.limiter.pause_s)
            await answer(
                send,
                429,
                f"Too many failed logins from your address; try again in {wait} s.",
                [(b"retry-after", str(wait).encode())],
            )
            return

        async def observe(message):
            if message["type"] == "http.response.start" and message["status"] == 400:
                self.limiter.failed(address)  # Gradio's "Incorrect credentials."
            await send(message)

        await self.app(scope, receive, observe)


def gate_middleware(
    guard: SessionGuard, limiter: LoginLimiter, max_body_bytes: int, login_script: str = ""
) -> Middleware:
    return Middleware(
        Gate, guard=guard, limiter=limiter, max_body_bytes=max_body_bytes, login_script=login_script
    )


# -- helpers ---------------------------------------------------------------------------------------------------


def _compile(route: str):
    method, template = route.split(" ", 1)
    regex, _, _ = compile_path(template)
    return method, regex


def _app_path(scope) -> str:
    """The request's path below the app's root path (set when served under a prefix)."""
    path, root = scope["path"], scope.get("root_path") or ""
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def session_hashes(scope, path: str, body: bytes) -> list:
    """The Gradio session hashes a request names: in its query, the heartbeat's path, or its JSON body."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    found: list = query.get("session_hash", [])  # an empty one too: "" would be a hash everyone shares
    if path.startswith("/gradio_api/heartbeat/"):
        found.append(path.rsplit("/", 1)[1])
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            data = None  # not JSON: Gradio refuses it itself
        if isinstance(data, dict) and data.get("session_hash") is not None:
            found.append(data["session_hash"])
    return found


def cookie_user(scope) -> str | None:
    """The logged-in username of the request's Gradio login cookie (None: not logged in)."""
    server = scope["app"]  # Gradio's FastAPI app: its token -> username table
    cookies = HTTPConnection(scope).cookies
    cid = server.cookie_id
    token = cookies.get(f"access-token-{cid}") or cookies.get(f"access-token-unsecure-{cid}")
    return server.tokens.get(token) if token else None


async def read_body(scope, receive, limit: int) -> bytes | None:
    """The whole request body, or None when it passes `limit` bytes (as declared, or as sent)."""
    declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
    if not declared.isdigit() or int(declared) > limit:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit:
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive):
    """A `receive` that hands the buffered body to the app, then the connection's own messages."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def add_to_head(send, script: bytes):
    """A `send` that puts `script` at the end of an HTML page's <head> (the body is buffered to do it)."""
    start, chunks = None, []

    async def edited(message):
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
        if html and b"</head>" in body:
            body = body.replace(b"</head>", script + b"</head>", 1)
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return edited


async def answer(send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})
