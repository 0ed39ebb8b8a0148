"""Rewards for the on-policy stages (PPO, GRPO/RLOO) and comparison: one settings type, one loader, one
finite-value check.

A reward is either a trained reward model (`model`: an `rlhf reward` run directory, or its model/ folder,
scored through `RewardScorer` on decoded text with the RM's own tokenizer) or a Python function
(`function: "package.module:function"` taking (prompts, responses) and returning one float each).
`load_reward` returns a `Reward`: call it with prompts and responses; every value is checked to be finite,
and a NaN/inf stops the stage with the prompt ids and the source named, before any weight is touched.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import bounded, documented
from rlhf.errors import ConfigError, ModelError, TrainingError
from rlhf.models import ALIASES, resolve_model_path
from rlhf.reward.scorer import RewardScorer, read_reward_meta

HOW_TO_TRAIN = (
    "Train one first with `rlhf reward --config configs/reward.yaml` (it writes the run runs/reward-demo) "
    "and point reward.model at that run."
)


@dataclass
class RewardSettings:
    model: str | None = documented(
        "runs/reward", help="an `rlhf reward` run (the reward stage's default run name)"
    )
    function: str | None = documented(
        None, help='or "package.module:function": (prompts, responses) -> list[float]'
    )
    normalize: bool = documented(True, help="standardise with the RM's saved mean/std (rlhf_reward.json)")
    batch_size: int = bounded(16, ge=1, help="RM forward batch")
    clip: float | None = bounded(None, gt=0, help="clip scores to [-clip, clip]")

    def __post_init__(self):
        if (self.model is None) == (self.function is None):
            raise ConfigError("set exactly one of 'reward.model' (a reward-model run) and 'reward.function'.")

    @property
    def source(self) -> str:
        return self.model or self.function or ""


def check_finite(values: list[float], source: str, where: str, ids: list | None = None) -> None:
    """Raise a TrainingError naming the source, where it happened and the first prompt id when a reward is
    NaN or infinite. `where` e.g. "at PPO step 3"."""
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if not bad:
        return
    first = bad[0]
    which = (
        f" (first: prompt {ids[first]}, value {values[first]})" if ids else f" (first value {values[first]})"
    )
    raise TrainingError(
        f"the reward ({source}) was not finite for {len(bad)} of {len(values)} responses {where}{which}; "
        "training stopped before updating the weights. The last complete checkpoint is intact (resume with "
        "--resume after fixing the cause: check the reward model with `rlhf score`, its rlhf_reward.json "
        "normalization statistics, or the reward function)."
    )


class Reward:
    """(prompts, responses) -> finite floats, from a reward model or a function."""

    def __init__(self, fn, source: str, settings: RewardSettings, scorer: RewardScorer | None = None):
        self.fn, self.source, self.settings, self.scorer = fn, source, settings, scorer
        self.calls = 0
        self.scored = 0

    def __call__(self, prompts: list, responses: list, *, where: str = "", ids: list | None = None):
        values = [float(v) for v in self.fn(list(prompts), list(responses))]
        if len(values) != len(responses):
            raise TrainingError(
                f"the reward ({self.source}) returned {len(values)} values for {len(responses)} responses."
            )
        self.calls += 1
        self.scored += len(values)
        check_finite(values, self.source, where, ids)
        return values

    def clipped(self, values: list[float]) -> list[float]:
        """`reward.clip` applied (no-op when null)."""
        clip = self.settings.clip
        return [max(-clip, min(clip, v)) for v in values] if clip is not None else list(values)


def reward_model_dir(spec: str) -> Path:
    """The model directory of a reward model: an `rlhf reward` run dir resolves to its declared model."""
    given = Path(spec).expanduser()
    if not given.exists() and spec not in ALIASES:
        raise ConfigError(f"'reward.model': no reward model at '{spec}' ({given.resolve()}). {HOW_TO_TRAIN}")
    path = Path(resolve_model_path(spec)) if given.is_dir() or spec in ALIASES else given
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(
            f"'reward.model': '{spec}' is not a reward model directory (need config.json and weights). "
            f"{HOW_TO_TRAIN}"
        )
    return path


def check_reward(settings: RewardSettings) -> Path | None:
    """Config-time checks (before any model loads): the RM exists and has what `normalize` needs. Returns
    what the reward is, to hash as a run input: the RM's directory, or a function's source file (so an
    edited function makes the runs that used it stale)."""
    if settings.function:
        fn = _import_function(settings.function)
        try:
            source = inspect.getsourcefile(fn)
        except TypeError:  # a builtin or C function: nothing to hash
            return None
        return Path(source) if source else None
    path = reward_model_dir(settings.model)
    meta = read_reward_meta(path)
    if not meta:
        raise ConfigError(
            f"'reward.model': '{settings.model}' is not a reward model trained by rlhf (no rlhf_reward.json "
            f"beside its weights, so its score head is untrained or unknown). {HOW_TO_TRAIN}"
        )
    if settings.normalize and not meta.get("norm"):
        raise ConfigError(
            f"'reward.normalize' is true but the reward model '{settings.model}' has no normalization "
            "statistics in rlhf_reward.json. Set reward.normalize=false, or use a reward model trained by "
            "`rlhf reward`."
        )
    return path


def _import_function(spec: str):
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(
            f"'reward.function' {spec!r} could not be loaded ({e}); write it as 'package.module:function'."
        ) from None


def load_reward(settings: RewardSettings, *, device: str | None = None) -> Reward:
    if settings.function:
        return Reward(_import_function(settings.function), settings.function, settings)
    path = check_reward(settings)
    try:
        scorer = RewardScorer(str(path), batch_size=settings.batch_size, device=device)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"'reward.model': could not load the reward model '{settings.model}': {e}."
        ) from None
    return Reward(
        lambda p, r: scorer.score(p, r, normalize=settings.normalize), settings.model, settings, scorer
    )
