"""The pure parts of drift guarding: alarms, the guard's memory (baseline, last step within bounds, state),
the best checkpoint to fall back to, and the sequence KL on hand-computed log-probs."""

import math

import pytest
import torch

from rlhf.config import from_dict
from rlhf.errors import ConfigError
from rlhf.train.drift import DriftGuard, DriftSettings, best_checkpoint, drift_alarms, sequence_kl


def test_alarms_fire_only_past_their_bounds():
    s = DriftSettings(max_kl=5.0, max_length_ratio=2.0)
    assert drift_alarms(s, 4.9, 1.9) == []
    (kl,) = drift_alarms(s, 5.1, None)
    assert kl == "KL to the reference 5.100 nats > drift.max_kl 5.0"
    (length,) = drift_alarms(s, None, 2.5)
    assert "length ratio 2.50 > drift.max_length_ratio 2.0" in length
    assert len(drift_alarms(s, math.nan, 1.0)) == 1  # a NaN KL always alarms
    assert drift_alarms(DriftSettings(), 1e9, 1e9) == []  # no bounds, no alarms


def test_settings_are_checked():
    with pytest.raises(ConfigError, match=r"'drift.max_kl' must be > 0, got 0"):
        from_dict(DriftSettings, {"max_kl": 0}, prefix="drift.")
    with pytest.raises(ConfigError, match=r"'drift.num_prompts' must be >= 1, got 0"):
        from_dict(DriftSettings, {"num_prompts": 0}, prefix="drift.")


def test_guard_tracks_baseline_last_ok_step_and_stops():
    g = DriftGuard(DriftSettings(max_kl=1.0, max_length_ratio=1.5, action="stop"))
    metrics, fired = g.observe(1, 0.0, 10.0)
    assert metrics == {"drift/kl": 0.0, "drift/mean_length": 10.0, "drift/length_ratio": 1.0}
    assert fired == []
    g.observe(2, 0.5, 14.0)
    assert g.last_ok_step == 2
    assert not g.should_stop
    _, fired = g.observe(3, 0.4, 16.0)  # 16 / 10 = 1.6 > 1.5
    assert len(fired) == 1
    assert g.should_stop
    assert g.last_ok_step == 2
    g.observe(4, 0.1, 10.0)  # once stopped, a good step does not move the fallback point
    assert g.last_ok_step == 2
    restored = DriftGuard(g.settings)
    restored.load_state_dict(g.state_dict())
    assert restored.summary()["last_step_within_bounds"] == 2
    assert restored.baseline_length == 10.0
    assert [a["step"] for a in restored.alarms] == [3]


def test_warn_never_stops():
    g = DriftGuard(DriftSettings(max_kl=1.0, action="warn"))
    g.observe(1, 5.0, 3.0)
    assert not g.should_stop
    assert g.alarms
    assert g.last_ok_step == 0


def test_best_checkpoint_is_the_newest_complete_one_within_bounds(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False), (8, True)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "COMPLETE").write_text("")
    assert best_checkpoint(tmp_path, 7, "COMPLETE") == tmp_path / "checkpoint-4"  # 6 is incomplete
    assert best_checkpoint(tmp_path, 8, "COMPLETE") == tmp_path / "checkpoint-8"
    assert best_checkpoint(tmp_path, 1, "COMPLETE") is None
    assert best_checkpoint(tmp_path / "missing", 9, "COMPLETE") is None


def test_sequence_kl_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    kl, length = sequence_kl(logp, ref, mask)
    # row 0: 0.5 + 0 = 0.5 (the third token is padding); row 1: 0.5 + 0.5 = 1.0; mean 0.75
    assert kl == pytest.approx(0.75)
    assert length == pytest.approx(2.0)
    assert sequence_kl(logp, None, mask) == (None, pytest.approx(2.0))
