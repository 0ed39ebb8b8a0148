"""Label stage: serve the Gradio labeling app over a store's project.

    rlhf label --config configs/label.yaml [project=demo port=7861 ...]

Binds 127.0.0.1 with share=False by default (put it behind your own TLS reverse proxy, or give
ssl_certfile/ssl_keyfile, to open it to a team). Users log in with the accounts of `rlhf users`.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.middleware import Middleware

from labeling_ui.app import AppSettings, ClosedRoutes, LoginGuard, build_app
from labeling_ui.assets import CSS, KEYBOARD_JS
from labeling_ui.sessions import SessionGuard
from rlhf.config import ConfigError, bounded, documented
from rlhf.runs import RunSettings
from rlhf.store import Store, StoreError


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
    arena: bool = documented(False, help="reveal each response's model after the vote")
    too_fast_ratio: float = bounded(
        0.25, gt=0, le=1, help='Admin: median time below this x the project\'s = "too fast"'
    )
    title: str = "rlhf labeling"

    def __post_init__(self):
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("set 'ssl_certfile' and 'ssl_keyfile' together.")


def launch(cfg: LabelStageConfig, *, block: bool = True):
    store = Store(cfg.store, create=False)
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
    app.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        share=cfg.share,
        auth=LoginGuard(store, cfg.max_failed_logins, cfg.lockout_s),
        auth_message="Log in with your rlhf account.",
        ssl_certfile=cfg.ssl_certfile,
        ssl_keyfile=cfg.ssl_keyfile,
        head=KEYBOARD_JS,
        css=CSS,
        footer_links=[],  # no "Use via API" / "Built with Gradio" / settings links for assessors
        app_kwargs={"middleware": [Middleware(ClosedRoutes)]},
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
