"""Offline fixtures: a tiny Llama and a word-level tokenizer with a ChatML template, built locally."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from support.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never write into the user's cache; the real-alias tests opt back in explicitly.
    monkeypatch.setenv("RLHF_CACHE", os.environ.get("RLHF_TEST_CACHE") or str(tmp_path / "cache"))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path):
    """A fresh, empty store location on each backend. PostgreSQL needs RLHF_TEST_PG_URL (scripts/test.sh sets it)."""
    if request.param == "sqlite":
        return str(tmp_path / "labels.db")
    url = os.environ.get("RLHF_TEST_PG_URL")
    if not url:
        pytest.skip(
            "PostgreSQL store tests need RLHF_TEST_PG_URL: bash scripts/test.sh starts a throwaway server "
            "(as root, installing postgresql where missing) and sets it"
        )
    from sqlalchemy import create_engine

    from rlhf.store.schema import Base

    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def store(store_target):
    from rlhf.store.service import Store

    s = Store(store_target)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps one AcceleratorState per process (a real run makes one Accelerator); the tests run
    many stages with different precisions in one process, so each starts from a clean state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield


@pytest.fixture
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser build)."""
    from labeling_ui.browser import CHROMIUM, FLAGS  # lazy: keeps gradio out of the non-browser tests

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: bash scripts/setup.sh dev installs it (apt package chromium)")
    from playwright.sync_api import sync_playwright  # lazy: only the browser tests need playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()
