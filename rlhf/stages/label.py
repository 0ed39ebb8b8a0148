"""Label stage: serve the Gradio labeling app over a store's project.

    rlhf label --config configs/label.yaml [project=demo port=7861 ...]

Binds 127.0.0.1 with share=False by default (put it behind your own TLS reverse proxy, or give
ssl_certfile/ssl_keyfile, to open it to a team). Users log in with the accounts of `rlhf users`.
In front of Gradio sits `labeling_ui.gate` (allow-listed routes, bounded bodies, login rate limit per address,
session hashes bound to their user); passwords are checked off the event loop (`labeling_ui.sessions`);
the store refuses free text over `limits`.
"""

from __future__ import annotations

from dataclasses import dataclass

from labeling_ui.app import AppSettings, build_app
from labeling_ui.assets import CSS, KEYBOARD_JS, LOGIN_JS
from labeling_ui.gate import LoginLimiter, gate_middleware
from labeling_ui.sessions import LoginGuard, SessionGuard
from rlhf.config import ConfigError, bounded, documented
from rlhf.runs import RunSettings
from rlhf.store import Store, StoreError, TextLimits


@dataclass
class LabelStageConfig:
    run: RunSettings = documented(
        default_factory=lambda: RunSettings(name="label"), help="unused: the app is a server"
    )
    store: str = "labels.db"
    project: str = "demo"
    host: str = "127.0.0.1"
    port: int = bounded(7860, ge=1, le=65535)
    share: bool = False
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    max_failed_logins: int = bounded(5, ge=1)
    lockout_s: int = bounded(300, ge=1)
    login_failures_per_address: int = bounded(
        20, ge=1, help="failed logins from one client address within login_window_s before it must wait"
    )
    login_window_s: int = bounded(60, ge=1, help="the window of login_failures_per_address, in seconds")
    login_workers: int = bounded(
        2, ge=1, le=16, help="threads that check passwords (scrypt), off the event loop"
    )
    limits: TextLimits = documented(
        default_factory=TextLimits, help="the most characters of each free-text field of a judgement"
    )
    arena: bool = documented(False, help="reveal each response's model after the vote")
    too_fast_ratio: float = bounded(
        0.25, gt=0, le=1, help='Admin: median time below this x the project\'s = "too fast"'
    )
    title: str = "rlhf labeling"

    def __post_init__(self):
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("set 'ssl_certfile' and 'ssl_keyfile' together.")


def launch(cfg: LabelStageConfig, *, block: bool = True):
    store = Store(cfg.store, create=False, limits=cfg.limits)
    store.project(cfg.project)  # a missing project fails here, by name
    if not store.list_users():
        raise StoreError(
            f"no users in {cfg.store}: add one first with `rlhf users add NAME --store {cfg.store}`"
        )
    guard = SessionGuard(store)
    app = build_app(
        store,
        AppSettings(
            project=cfg.project,
            max_failed_logins=cfg.max_failed_logins,
            lockout_s=cfg.lockout_s,
            arena=cfg.arena,
            too_fast_ratio=cfg.too_fast_ratio,
            title=cfg.title,
        ),
        guard,
    )
    login = LoginGuard(store, cfg.max_failed_logins, cfg.lockout_s, workers=cfg.login_workers)
    limiter = LoginLimiter(cfg.login_failures_per_address, cfg.login_window_s)
    app.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        share=cfg.share,
        auth=login.check,  # a coroutine: Gradio awaits it, and the scrypt runs in the guard's pool
        auth_message="Log in with your rlhf account.",
        ssl_certfile=cfg.ssl_certfile,
        ssl_keyfile=cfg.ssl_keyfile,
        head=KEYBOARD_JS,
        css=CSS,
        footer_links=[],  # no "Use via API" / "Built with Gradio" / settings links for assessors
        app_kwargs={
            "middleware": [gate_middleware(guard, limiter, store.limits.largest_form_bytes(), LOGIN_JS)]
        },
        show_error=True,
        prevent_thread_lock=True,
        quiet=not block,
    )
    guard.attach(app)
    if block:
        app.block_thread()
    return app, store


def run(cfg: LabelStageConfig, *, resume: bool = False, overwrite: bool = False):
    launch(cfg, block=True)
