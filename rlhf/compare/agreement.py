"""Agreement with held-out human pairs, each checkpoint against its own reference: the policy its implicit
reward log pi(y|x) - log pi_ref(y|x) is measured against. A DPO policy trained from SFT is judged against
the SFT model, not against the base.

`own_reference` takes the first of:
1. the checkpoint's configured `reference` (a checkpoint's name, or any model spec);
2. the policy its run started from — a run directory's manifest records its stage's `model` input;
3. for a LoRA adapter directory, its base model — scored as the checkpoint with the adapter switched off
   (no second copy; the same network TRL's DPO uses as its reference);
4. the comparison's global `reference`.

`agreement_with_humans` computes the pairs' log-probs once per distinct model (content hash) — a reference
that is also a checkpoint, or shared by several, is scored once — and each checkpoint's agreement
(`measure.human_agreement`), naming its reference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rlhf.compare.answers import Lazy, same_vocabulary
from rlhf.compare.measure import PairLogprobs, adapter_off_logprobs, human_agreement, preference_logprobs
from rlhf.compare.result import HumanAgreement
from rlhf.errors import RlhfError
from rlhf.models import adapter_base, load_causal_lm, load_tokenizer, model_fingerprint, resolve_model_path
from rlhf.runs import MANIFEST


@dataclass(frozen=True)
class Reference:
    model: str  # a model spec: what to load
    source: str  # how it was chosen, in words
    adapter_off: bool = False  # scored as the checkpoint itself with its LoRA adapter disabled


def started_from(spec: str) -> str | None:
    """The policy a run directory's stage started from (its manifest's `model` input); None when `spec` is
    not a run directory or its manifest records no model input."""
    manifest = Path(spec).expanduser() / MANIFEST
    if not manifest.is_file():
        return None
    try:
        entry = (json.loads(manifest.read_text()).get("inputs") or {}).get("model")
    except ValueError:
        return None
    if not entry or not entry.get("source"):
        return None
    source, path = entry["source"], entry.get("path")
    if path and Path(path).exists() and not _same_model(source, path):
        return path  # the source was relative to a directory the run started in, or moved: use what it read
    return source


def _same_model(spec: str, path: str) -> bool:
    try:
        return Path(resolve_model_path(spec)).resolve() == Path(path).resolve()
    except (RlhfError, OSError):
        return False


def own_reference(spec: str, *, override: str | None, default: str, checkpoints: dict[str, str]) -> Reference:
    """The reference of the checkpoint `spec` (see the module doc). `override` and `default` may name a
    checkpoint (a key of `checkpoints`: name -> spec) or be a model spec."""
    if override:
        ref = Reference(checkpoints.get(override, override), "configured")
    elif (start := started_from(spec)) is not None:
        ref = Reference(start, "its run's starting policy")
    elif (base := adapter_base(resolve_model_path(spec))) is not None:
        ref = Reference(base, "LoRA base")
    else:
        ref = Reference(checkpoints.get(default, default), "the global reference")
    base = adapter_base(resolve_model_path(spec))
    if base is not None and model_fingerprint(base) == model_fingerprint(ref.model):
        ref = Reference(ref.model, f"{ref.source}, adapter off", adapter_off=True)
    return ref


def agreement_with_humans(
    checkpoints: list[tuple[str, str, str | None]],
    tokenizers: dict,
    pairs: list[dict],
    *,
    default_reference: str,
    batch_size: int,
    bootstrap: int,
    seed: int = 0,
) -> dict[str, HumanAgreement]:
    """checkpoints: (name, model spec, configured reference or None). Each checkpoint's agreement with the
    held-out `pairs`, its implicit reward against its own reference (None where that reference's
    vocabulary differs), the reference named by checkpoint name where it is one."""
    specs = {name: spec for name, spec, _ in checkpoints}
    refs = {
        name: own_reference(spec, override=over, default=default_reference, checkpoints=specs)
        for name, spec, over in checkpoints
    }
    fp = {n: model_fingerprint(s) for n, s in specs.items()}
    logp = _pair_logprobs(specs, tokenizers, pairs, refs, fp, batch_size)
    out = {}
    for name, ref in refs.items():
        ref_fp = model_fingerprint(ref.model)
        ref_name = next((n for n, f in fp.items() if f == ref_fp), ref.model)
        ref_tok = tokenizers[ref_name] if ref_name in tokenizers else load_tokenizer(ref.model)
        comparable = ref.adapter_off or same_vocabulary(tokenizers[name], ref_tok)
        if comparable and ref_fp not in logp:
            model = load_causal_lm(ref.model).eval()
            logp[ref_fp] = preference_logprobs(model, ref_tok, pairs, batch_size=batch_size)
        out[name] = human_agreement(
            logp[fp[name]],
            logp[ref_fp] if comparable else None,
            reference_name=ref_name,
            reference_source=ref.source,
            bootstrap=bootstrap,
            seed=seed,
        )
    return out


def _pair_logprobs(specs, tokenizers, pairs, refs, fp, batch_size: int) -> dict[str, PairLogprobs]:
    """The pairs' log-probs under each checkpoint, and under the base of each LoRA checkpoint whose reference
    that is (adapter off, on the model already loaded); keyed by content hash. One model in memory at a time."""
    logp: dict[str, PairLogprobs] = {}
    for name, spec in specs.items():
        model = Lazy(lambda s=spec: load_causal_lm(s).eval())
        if fp[name] not in logp:
            logp[fp[name]] = preference_logprobs(model(), tokenizers[name], pairs, batch_size=batch_size)
        ref_fp = model_fingerprint(refs[name].model)
        if refs[name].adapter_off and ref_fp not in logp:
            logp[ref_fp] = adapter_off_logprobs(model(), tokenizers[name], pairs, batch_size=batch_size)
        model.release()
    return logp
