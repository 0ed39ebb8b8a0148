"""PPO's pure parts against values worked out by hand."""

import math

import pytest
import torch

from rlhf.train.ppo import losses as L


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_masked_mean_and_unbiased_var():
    x, m = t([1, 2, 3, 4]), t([1, 1, 0, 1])
    assert L.masked_mean(x, m).item() == pytest.approx(7 / 3)
    # entries 1, 2, 4: squared deviations 16/9 + 1/9 + 25/9 = 42/9, over n - 1 = 2
    assert L.masked_var(x, m).item() == pytest.approx(7 / 3)


def test_whiten_keeps_or_drops_the_mean_and_zeroes_padding():
    x, m = t([1, 2, 3, 4]), t([1, 1, 0, 1])
    w = L.masked_whiten(x, m)
    sd = math.sqrt(7 / 3)
    assert w.tolist() == pytest.approx([(1 - 7 / 3) / sd, (2 - 7 / 3) / sd, 0.0, (4 - 7 / 3) / sd], abs=1e-6)
    w2 = L.masked_whiten(x, m, shift_mean=False)
    assert w2[0].item() == pytest.approx((1 - 7 / 3) / sd + 7 / 3, abs=1e-6)
    assert w2[2].item() == 0.0


def test_statistics_reduce_over_processes():
    # two "processes" each holding half the batch: a reduce that doubles == the same data twice
    x, m = t([1, 2, 4]), t([1, 1, 1])
    twice = L.masked_var(torch.cat([x, x]), torch.cat([m, m]))
    assert L.masked_var(x, m, reduce=lambda s: 2 * s).item() == pytest.approx(twice.item())


def test_kl_estimators():
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    assert L.kl_per_token(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert L.kl_per_token(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    # r = q/p = 0.5: (r - 1) - log r = -0.5 + log 2
    assert L.kl_per_token(logp, ref, "k3").item() == pytest.approx(-0.5 + math.log(2))
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        L.kl_per_token(logp, ref, "k9")


def test_token_rewards_put_the_score_on_the_last_response_token():
    kl = t([[0.1, 0.2, 0.3], [0.5, 0.5, 0.7]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    r = L.token_rewards(t([1.0, 2.0]), kl, 0.5, mask)
    assert r.tolist()[0] == pytest.approx([-0.05, -0.1, 0.85])
    assert r.tolist()[1] == pytest.approx([-0.25, 1.75, 0.0])


def test_gae_by_hand():
    ones = t([[1, 1, 1]])
    adv, ret = L.gae(t([[0, 0, 1]]), t([[0.5, 0.5, 0.5]]), ones, gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([0.5, 0.5, 0.5])
    assert ret.tolist()[0] == pytest.approx([1, 1, 1])
    # gamma 0.9, lam 0.8: delta2 = 0.5; delta1 = 0.45 - 0.5 = -0.05, A1 = -0.05 + 0.72 * 0.5 = 0.31;
    # delta0 = -0.05, A0 = -0.05 + 0.72 * 0.31 = 0.1732
    adv, _ = L.gae(t([[0, 0, 1]]), t([[0.5, 0.5, 0.5]]), ones, gamma=0.9, lam=0.8)
    assert adv.tolist()[0] == pytest.approx([0.1732, 0.31, 0.5])


def test_gae_ignores_padding_values():
    adv, ret = L.gae(t([[0, 1, 0]]), t([[0.5, 0.5, 9.0]]), t([[1, 1, 0]]), gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([0.5, 0.5, 0.0])
    assert ret.tolist()[0] == pytest.approx([1, 1, 0])


def test_clipped_policy_loss_by_hand():
    old = t([0.0, 0.0])
    new = old + math.log(1.5)  # ratio 1.5, clip 0.2 -> 1.2
    loss, stats = L.policy_loss(new, old, t([1.0, -1.0]), t([1, 1]), clip=0.2)
    # A=+1: max(-1.5, -1.2) = -1.2 ; A=-1: max(1.5, 1.2) = 1.5 ; mean 0.15
    assert loss.item() == pytest.approx(0.15)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    loss, _ = L.policy_loss(old, old, t([1.0, -3.0]), t([1, 1]), clip=0.2)
    assert loss.item() == pytest.approx(1.0)  # ratio 1: -mean(A)
    loss, _ = L.policy_loss(new, old, t([1.0, -1.0]), t([1, 1]), clip=0.2, denom=4.0)
    assert loss.item() == pytest.approx(0.075)  # summed then divided by the global token count


def test_clipped_value_loss_by_hand():
    loss, stats = L.value_loss(t([1.0]), t([0.0]), t([2.0]), t([1]), clip=0.5)
    # clipped v = 0.5: max((1-2)^2, (0.5-2)^2) = 2.25, times 0.5
    assert loss.item() == pytest.approx(1.125)
    assert stats["vf_clipfrac"].item() == 1.0


def test_kl_controllers():
    fixed = L.KLController(0.1)
    assert fixed.update(100.0, 256) == 0.1
    ada = L.KLController(0.1, target=6.0, horizon=10000)
    assert ada.update(12.0, 256) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))  # error clipped to +0.2
    before = ada.value
    assert ada.update(3.0, 256) == pytest.approx(before * (1 - 0.2 * 256 / 10000))
    clone = L.KLController(0.0)
    clone.load_state_dict(ada.state_dict())
    assert clone == ada
