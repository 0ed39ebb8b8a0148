"""rlhf.train.lm_head: the CPU fused LM head against a plain full-logits computation and against TRL's.

Precision: the exactness checks run in fp32 (no autocast; tolerances 1e-5 relative to the values' size);
the bf16 check runs under CPU autocast, where both heads round the logits to bf16 (tolerance 2e-2)."""

import torch
from transformers import AutoModelForCausalLM
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import add_fused_lm_head

from rlhf.train import lm_head
from rlhf.train.lm_head import CPULogProbs, use_cpu_lm_head

ALL = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _inputs(n=150, h=16, v=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    weight = (torch.randn(v, h, generator=g) * 0.7).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::3] = (hidden @ weight.t()).argmax(-1)[::3]  # a third are the top-1 token
    return hidden, weight, targets, g


def _naive(hidden, weight, targets, scale):
    z = hidden @ weight.t() * scale
    log_p = torch.log_softmax(z, -1)
    p = log_p.exp()
    return (
        log_p.gather(-1, targets[:, None]).squeeze(-1),
        -(p * log_p).sum(-1),
        torch.log((p * p).sum(-1)),
        z.mean(-1),
        z.argmax(-1) == targets,
    )


def _grads(outs, hidden, weight, g):
    r1, r2 = torch.randn(outs[0].shape, generator=g), torch.randn(outs[0].shape, generator=g)
    return torch.autograd.grad((outs[0] * r1).sum() + (outs[1] * r2).sum(), (hidden, weight))


def test_cpu_head_matches_full_logits_in_fp32_across_blocks(monkeypatch):
    monkeypatch.setattr(lm_head, "TOKEN_BYTES", 1)  # blocks of 64 tokens: 150 rows -> 3 blocks
    hidden, weight, targets, g = _inputs()
    ours = CPULogProbs.apply(hidden, weight, None, targets, 0.7, 32768, None, 1.3, ALL)
    ref = _naive(hidden, weight, targets, 1.3 / 0.7)
    for name, a, b in zip(ALL, ours, ref, strict=True):
        if name == "is_top1":
            assert a.dtype == torch.bool and torch.equal(a, b) and 0 < int(a.sum()) < len(a)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    g_ours = _grads(ours, hidden, weight, torch.Generator().manual_seed(1))
    g_ref = _grads(ref, hidden, weight, torch.Generator().manual_seed(1))
    for a, b in zip(g_ours, g_ref, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_cpu_head_matches_trls_function_fp32_and_bf16():
    hidden, weight, targets, _ = _inputs(n=90, h=32, v=300, seed=3)
    for autocast, tol in ((False, 1e-5), (True, 2e-2)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            ours = CPULogProbs.apply(hidden, weight, None, targets, 1.0, 128, None, 1.0, ALL)
            theirs = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 128, None, 1.0, ALL)
        for name, a, b in zip(ALL, ours, theirs, strict=True):
            if name != "is_top1":
                torch.testing.assert_close(
                    a, b.float(), rtol=tol, atol=tol, msg=f"{name} autocast={autocast}"
                )
        g_ours = _grads(ours, hidden, weight, torch.Generator().manual_seed(2))
        g_theirs = _grads(theirs, hidden, weight, torch.Generator().manual_seed(2))
        for a, b in zip(g_ours, g_theirs, strict=True):
            assert a.abs().sum() > 0
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max()))


def test_entropy_only_for_logging_needs_no_entropy_gradient():
    hidden, weight, targets, _ = _inputs(n=20)
    lp, ent, *_ = CPULogProbs.apply(hidden, weight.detach(), None, targets, 1.0, 1, None, 1.0, ("log_probs",))
    assert ent is None
    (grad,) = torch.autograd.grad(lp.sum(), hidden)
    z = hidden @ weight.detach().t()
    (ref,) = torch.autograd.grad(torch.log_softmax(z, -1).gather(-1, targets[:, None]).sum(), hidden)
    torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-6)


def test_installed_head_scores_labeled_positions_like_the_models_own_loss(tiny_model_dir):
    assert use_cpu_lm_head() and use_cpu_lm_head()  # once per process; a second call is a no-op
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    add_fused_lm_head(model, outputs=ALL)
    ids = torch.randint(3, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt
    labels[1, 7:] = -100  # padding
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    plain = model(input_ids=ids, labels=labels)
    torch.testing.assert_close(out.loss, plain.loss, rtol=1e-5, atol=1e-6)
    log_p = torch.log_softmax(plain.logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = labels[:, 1:] != -100
    torch.testing.assert_close(out.log_probs[mask], log_p[mask], rtol=1e-5, atol=1e-5)
    assert torch.all(out.log_probs[~mask] == 0) and int((~mask).sum()) == 5
    out.loss.backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
