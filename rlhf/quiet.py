"""Third-party chatter (deprecation warnings, transformers/accelerate notices, dataset-mapping and
weight-loading bars, the trainer's per-step dicts) goes to a log file in the run directory instead of the
user's terminal; our own `[rlhf]` lines and one progress bar per stage stay. The per-step metrics are in
each run's metrics.jsonl either way."""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import datasets
import transformers
from transformers.trainer_callback import ProgressCallback

_LOGGERS = ("transformers", "accelerate", "deepspeed", "torch", "datasets", "peft", "trl", "httpx")


@contextmanager
def third_party_to(log_path: Path):
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    old_show = warnings.showwarning

    def to_file(message, category, filename, lineno, file=None, line=None):
        handler.stream.write(warnings.formatwarning(message, category, filename, lineno, line))
        handler.stream.flush()

    warnings.showwarning = to_file
    old_on_log = ProgressCallback.on_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            handler.stream.write(f"{logs}\n")

    ProgressCallback.on_log = on_log
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    old_env = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = to_file
            yield
    finally:
        ProgressCallback.on_log = old_on_log
        if bars:
            datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
        warnings.showwarning = old_show
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()
        if old_env is None:
            os.environ.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
