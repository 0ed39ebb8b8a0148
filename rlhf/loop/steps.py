"""One step of the loop = one stage run through the stage's normal entry point (`run(cfg, resume=, overwrite=)`),
with the loop's rule for what to do with a run directory that already exists:

- finished, with the same resolved config and every recorded input still hashing the same -> skipped;
- finished, but the config or an input changed -> run again (--overwrite);
- unfinished (interrupted) with the same config -> resumed (--resume: trainers continue from their newest
  complete checkpoint; the other stages redo their work, which is idempotent);
- unfinished with another config -> started over.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhf.config import dump_yaml, from_dict
from rlhf.hashing import content_hash
from rlhf.models import hub_revision
from rlhf.runs import DONE_MARKER, RunDir, config_differences


@dataclass
class StepRecord:
    key: str  # e.g. r1-dpo
    stage: str
    run: Path
    action: str  # ran | skipped | resumed | rerun
    seconds: float
    result: dict = field(default_factory=dict)


def merged(base: dict, top: dict) -> dict:
    """`top` laid over `base`, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = (
            merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        )
    return out


def inputs_unchanged(manifest: dict) -> bool:
    """Every input the run recorded with a hash still hashes the same (a missing one counts as changed), and
    every hub-id model still resolves to the revision recorded."""
    for entry in (manifest.get("inputs") or {}).values():
        if entry.get("sha256"):
            p = Path(entry.get("path", ""))
            if not p.exists() or content_hash(p) != entry["sha256"]:
                return False
        elif entry.get("revision") and hub_revision(entry["source"]) != entry["revision"]:
            return False
    return True


def decide(run_dir: RunDir, cfg: Any) -> str:
    """ran | skipped | resumed | rerun, by the rule in the module docstring."""
    p = run_dir.path
    if not p.exists() or not any(p.iterdir()):
        return "ran"
    same = run_dir.config_path.is_file() and not config_differences(
        yaml.safe_load(run_dir.config_path.read_text()), yaml.safe_load(dump_yaml(cfg)), type(cfg)
    )
    if (p / DONE_MARKER).exists():
        return "skipped" if same and inputs_unchanged(run_dir.read_manifest()) else "rerun"
    return "resumed" if same else "rerun"


def run_step(
    key: str, stage: str, module, cls: type, raw: dict, *, source: str, say, force: bool = False
) -> StepRecord:
    """Build the stage's config from `raw` (checked like a YAML file: `source` names it in errors), then
    run, skip, resume or re-run the stage. `force`: an input the manifest cannot hash changed (new votes
    in the store), so a finished run is run again."""
    cfg = from_dict(cls, raw, source=source)
    run_dir = RunDir.at(cfg.run)
    action = decide(run_dir, cfg)
    if force and action == "skipped":
        action = "rerun"
    t0 = time.perf_counter()
    if action == "skipped":
        say(f"{key}: unchanged since {run_dir.path} finished (same config, same input hashes); skipped")
    else:
        if action != "ran":
            say(
                f"{key}: {'resuming the interrupted run' if action == 'resumed' else 'inputs changed; running again'}"
            )
        module.run(cfg, resume=action == "resumed", overwrite=action == "rerun")
    seconds = time.perf_counter() - t0
    return StepRecord(key, stage, run_dir.path, action, seconds, run_dir.read_manifest().get("result") or {})
