"""Padding-free preference batches: every sequence of a DPO / KTO batch in one row, no padding computed.

TRL 1.16 switched its padding-free DPO off ("temporarily unavailable after a refactor"), so a DPO batch is
the chosen and rejected sequences right-padded to the longest of them: on the demo pairs (batch 4, grouped
by length) 24 % of the positions every layer computes — three times a step: policy forward, backward and
the reference forward — are padding.

`pack_pairs(model)` puts hooks on the model TRL calls (`model(input_ids, attention_mask, labels,
fused_lm_head=True)`, TRL's fused LM head): before the forward the batch's real tokens are laid end to end
in one row, position ids restarting at 0 for each sequence, the next-token labels shifted within each
sequence (`shift_labels`, so no sequence predicts the next one's first token); after it every per-token
field (log-probs, entropy, ...) is laid back out in the padded batch's shape, zero where a position has no
label — what TRL's head returns for a padded batch, so TRL's loss code runs unchanged. The attention stays
within each sequence (`rlhf.train.attention` on a CPU; transformers' packed-sequence mask elsewhere), so the
arithmetic is that of the padded batch without the padding. Any other call (generation, a batch without
padding, left padding) passes through untouched. TRL's `precompute_ref_log_probs` pass runs inside the
trainer's constructor, before the hooks are on: it stays padded (once per dataset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PER_TOKEN = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
_PASSED = {"input_ids", "attention_mask", "labels", "use_cache", "fused_lm_head", "output_router_logits"}


@dataclass
class Layout:
    """Where each row's tokens sit in the packed row: `index[i, j]` is the packed position of padded position
    j of row i, `valid[i, j]` whether that position is a real token."""

    index: torch.Tensor
    valid: torch.Tensor


def right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Each row's length if every row is one block of ones from position 0 (right padding), else None."""
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions[None, :] < lengths[:, None]) or bool((lengths == 0).any()):
        return None
    return lengths


def pack(input_ids: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor) -> tuple[dict, Layout]:
    """A right-padded batch -> one row: input_ids, position_ids (0.. per sequence) and shift_labels (the next
    token's label within the sequence, -100 at each sequence's last token), and the layout to unpack by."""
    rows, width = input_ids.shape
    positions = torch.arange(width, device=input_ids.device)
    valid = positions[None, :] < lengths[:, None]
    offsets = torch.cumsum(lengths, 0) - lengths
    index = (offsets[:, None] + positions[None, :]).masked_fill(~valid, 0)
    next_labels = torch.cat([labels[:, 1:], labels.new_full((rows, 1), -100)], dim=1)
    next_labels = next_labels.masked_fill(positions[None, :] >= (lengths[:, None] - 1), -100)
    packed = {
        "input_ids": input_ids[valid][None],
        "position_ids": positions.expand(rows, width)[valid][None],
        "shift_labels": next_labels[valid][None],
    }
    return packed, Layout(index, valid)


def unpack(packed: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A packed per-token field [1, N] -> the padded batch's next-token layout [rows, width - 1] (position j
    scores token j + 1), zero where there is no real next token."""
    index, valid = layout.index[:, :-1], layout.valid[:, 1:]
    out = packed[0][index]  # gather: differentiable back into the packed row
    return out.masked_fill(~valid, 0)


class PackPairs:
    """The forward hooks of `pack_pairs` and the layout they hand each other."""

    def __init__(self):
        self.layout: Layout | None = None
        self.calls = 0  # forwards packed: tests and benchmarks read it

    def before(self, module, args, kwargs):
        self.layout = None
        mask, labels = kwargs.get("attention_mask"), kwargs.get("labels")
        if args or not kwargs.get("fused_lm_head") or mask is None or labels is None or set(kwargs) - _PASSED:
            return None
        if mask.shape[0] < 2 or bool(mask.all()):
            return None
        lengths = right_padded_lengths(mask)
        if lengths is None:
            return None
        packed, self.layout = pack(kwargs["input_ids"], labels, lengths)
        self.calls += 1
        rest = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "labels")}
        return args, {**rest, **packed}

    def after(self, module, args, kwargs, output):
        layout, self.layout = self.layout, None
        if layout is None:
            return None
        for name in PER_TOKEN:
            value = getattr(output, name, None)
            if value is not None:
                output[name] = unpack(value, layout)
        return output


def pack_pairs(*models) -> PackPairs:
    """Hook `models` (the modules TRL's preference trainers call: the policy, and a frozen reference copy
    where there is one) so their fused-LM-head forwards run padding-free (module docstring). Returns the
    hooks' state (`calls`: forwards packed). One forward at a time: TRL calls them one after the other."""
    hooks = PackPairs()
    for model in models:
        model.register_forward_pre_hook(hooks.before, with_kwargs=True)
        model.register_forward_hook(hooks.after, with_kwargs=True)
    return hooks
