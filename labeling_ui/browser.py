"""Driving the app in a real browser (Debian chromium + Playwright, never a downloaded browser build): the
launch flags that keep chromium off the network, a free loopback port, and Gradio's login form. Used by the
browser tests, benchmarks/browser_latency.py and scripts/screenshots.py."""

from __future__ import annotations

import socket

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


def login(browser, port: int, user: str, viewport: dict | None = None, password: str = "password123"):
    """A new page logged in as `user` through Gradio's login form."""
    page = browser.new_page(viewport=viewport) if viewport else browser.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    return page
