"""Run directories: `<output_root>/<name>/` holding everything one stage run produced.

  resolved_config.yaml   the config after overrides (what actually ran)
  manifest.json          stage, argv, inputs with content hashes, package versions, seed, start/end, status,
                         data accounting (rows in = rows trained + rows rejected, with reasons)
  metrics.jsonl          one line per logged step (TensorBoard too when the trainer's report_to asks)
  checkpoints/           trainer checkpoints; each gets a COMPLETE file once fully written
  model/                 the final model (full weights, merged LoRA, or adapter)
  COMPLETED              written last: the run finished and its outputs are whole

A stage runs inside `with RunDir.prepare(...) as run:` — an exception marks the run failed (and goes on up),
a clean exit finishes it. `run.finish(outputs={"model": run.model_dir, ...})` **declares** what the run made:
each output is recorded in the manifest with its exact sha256, and the next stage finds it there
(`declared_output`): pointing `model.name` at an SFT run, or `reward.model` at a reward run, resolves to
the declared model — never to a guessed sub-path. A finished run is never overwritten without --overwrite;
--resume continues an unfinished run from its newest *complete* checkpoint. Under a multi-process launch
only rank 0 writes here.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlhf.config import dump_yaml, operational_keys, to_dict
from rlhf.distributed import is_main_process
from rlhf.errors import ConfigError, RunDirError
from rlhf.hashing import content_hash

DONE_MARKER = "COMPLETED"
CKPT_MARKER = "COMPLETE"
MANIFEST = "manifest.json"
_PACKAGES = ("rlhf", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed")


@dataclass
class RunSettings:
    name: str = "run"
    output_root: str = "runs"
    seed: int = 42

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"'run.name' must be a plain folder name, got {self.name!r}.")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def declared_output(path: str | Path, *names: str) -> Path | None:
    """When `path` is a run directory (it holds a manifest.json), the first of its declared outputs `names`;
    None when `path` is not a run directory. A run that has not finished, or declares none of `names`, is
    an error that says so."""
    p = Path(path).expanduser()
    manifest_path = p / MANIFEST
    if not p.is_dir() or not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"run directory '{path}': its {MANIFEST} is unreadable ({e}).") from None
    if not (p / DONE_MARKER).exists():
        raise RunDirError(
            f"run directory '{path}' ({manifest.get('stage', '?')}) has not finished (status "
            f"{manifest.get('status', '?')}); finish it with --resume, or point at a finished run."
        )
    outputs = manifest.get("outputs") or {}
    for name in names:
        if name in outputs:
            out = Path(outputs[name]["path"])
            return out if out.is_absolute() else p / out
    raise RunDirError(
        f"run directory '{path}' ({manifest.get('stage', '?')}) declares no {' or '.join(names)} output "
        f"(it declares: {', '.join(outputs) or 'nothing'}); point at the run of a stage that makes one."
    )


class RunDir:
    def __init__(self, path: Path):
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.model_dir = path / "model"
        self.metrics_path = path / "metrics.jsonl"
        self.manifest_path = path / MANIFEST
        self.config_path = path / "resolved_config.yaml"
        self.main = is_main_process()
        self.finished = False

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self.fail(f"{exc_type.__name__}: {exc}")
        elif not self.finished:
            self.finish()
        return False

    @classmethod
    def at(cls, settings: RunSettings) -> RunDir:
        """The run directory's paths, without creating or checking anything."""
        return cls(Path(settings.output_root) / settings.name)

    # -- life cycle ---------------------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls, settings: RunSettings, stage: str, config: Any, *, resume: bool = False, overwrite: bool = False
    ) -> RunDir:
        if resume and overwrite:
            raise RunDirError("--resume and --overwrite contradict each other; pass one of them.")
        run = cls.at(settings)
        if run.main:
            run._check_and_init(stage, config, resume=resume, overwrite=overwrite, seed=settings.seed)
        return run

    def _check_and_init(self, stage: str, config: Any, *, resume: bool, overwrite: bool, seed: int) -> None:
        p = self.path
        resolved = dump_yaml(config)
        if p.exists() and any(p.iterdir()) and self._failed_before_any_checkpoint() and not resume:
            print(f"[rlhf] replacing {p}: its last attempt failed before writing any checkpoint", flush=True)
            shutil.rmtree(p)
        if p.exists() and any(p.iterdir()):
            if overwrite:
                shutil.rmtree(p)
            elif (p / DONE_MARKER).exists():
                raise RunDirError(
                    f"run directory '{p}' holds a finished run. Pass --overwrite to replace it, or choose "
                    "another run name (run.name=...)."
                )
            elif not resume:
                raise RunDirError(
                    f"run directory '{p}' holds an unfinished run. Pass --resume to continue it from its "
                    "newest complete checkpoint, --overwrite to start over, or choose another run.name."
                )
            else:
                self._check_same_config(resolved, type(config))
        elif resume:
            raise RunDirError(f"--resume: there is no run in '{p}' to resume. Drop --resume to start it.")
        p.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(resolved)
        manifest = self.read_manifest() if resume else {}
        manifest.update(
            stage=stage,
            argv=sys.argv,
            seed=seed,
            versions=package_versions(),
            status="running",
            started_at=manifest.get("started_at", _now()),
            inputs=manifest.get("inputs", {}),
        )
        if resume:
            manifest.setdefault("resumed_at", []).append(_now())
        self.write_manifest(manifest)

    def _failed_before_any_checkpoint(self) -> bool:
        try:
            status = self.read_manifest().get("status")
        except (OSError, ValueError):
            return False
        return status == "failed" and not any(self.checkpoints.glob("checkpoint-*"))

    def _check_same_config(self, resolved: str, cls: type) -> None:
        if not self.config_path.is_file():
            return
        before, now = yaml.safe_load(self.config_path.read_text()), yaml.safe_load(resolved)
        diff = config_differences(before, now, cls)
        if diff:
            raise RunDirError(
                f"--resume: the config differs from the one this run started with ({self.config_path}) at "
                f"{', '.join(diff)}. Resume with the same config and overrides, or start a new run.name."
            )

    def finish(self, *, outputs: dict[str, str | Path] | None = None, **fields: Any) -> None:
        """Mark the run completed. `outputs` declares what it made ({name: path}), each recorded with its
        sha256 so that later stages (and lineage) find and check it."""
        self.finished = True
        if not self.main:
            return
        declared = {}
        for name, path in (outputs or {}).items():
            p = Path(path)
            declared[name] = {
                "path": str(p.relative_to(self.path)) if p.is_relative_to(self.path) else str(p.resolve()),
                "sha256": content_hash(p),
            }
        self.update_manifest(status="completed", finished_at=_now(), outputs=declared, **fields)
        (self.path / DONE_MARKER).write_text(_now() + "\n")

    def say(self, text: str) -> None:
        """A progress or closing line for the user (main process only)."""
        if self.main:
            print(f"[rlhf] {text}", flush=True)

    def account(self, stage: str, report: dict[str, dict]) -> None:
        """Record the data accounting ({source key: summary}) in the manifest and print one line each."""
        self.update_manifest(data=report)
        if self.main:
            for what, summary in report.items():
                print(accounting_line(f"{stage} {what}", summary), flush=True)

    def output(self, name: str) -> Path:
        """The path of a declared output of this (finished) run."""
        return declared_output(self.path, name)

    def fail(self, error: str) -> None:
        if self.main and self.manifest_path.exists():
            self.update_manifest(status="failed", finished_at=_now(), error=error)

    # -- manifest -----------------------------------------------------------------------------------------

    def read_manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}

    def write_manifest(self, manifest: dict) -> None:
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(to_dict(manifest), indent=2, default=str) + "\n")
        os.replace(tmp, self.manifest_path)

    def update_manifest(self, **fields: Any) -> None:
        if not self.main:
            return
        m = self.read_manifest()
        m.update(fields)
        self.write_manifest(m)

    def record_input(
        self, key: str, source: str, path: str | Path | None, *, revision: str | None = None
    ) -> None:
        """Note an input (data file, model dir) with its content hash in the manifest; a model that is a hub
        id (no local path) with the `revision` it resolved to (`rlhf.models.record_model`)."""
        if not self.main:
            return
        entry: dict[str, Any] = {"source": source}
        if path is not None and Path(path).exists():
            entry.update(path=str(Path(path).resolve()), sha256=content_hash(path))
        elif revision is not None:
            entry["revision"] = revision
        m = self.read_manifest()
        m.setdefault("inputs", {})[key] = entry
        self.write_manifest(m)

    # -- metrics & checkpoints ----------------------------------------------------------------------------

    def log_metrics(self, record: dict) -> None:
        if not self.main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def latest_complete_checkpoint(self) -> Path | None:
        """Newest checkpoint with its COMPLETE marker; newer half-written ones are removed (and said so)."""
        if not self.checkpoints.is_dir():
            return None
        ckpts = sorted(
            (d for d in self.checkpoints.glob("checkpoint-*") if d.name.split("-")[-1].isdigit()),
            key=lambda d: int(d.name.split("-")[-1]),
        )
        for d in reversed(ckpts):
            if (d / CKPT_MARKER).exists():
                return d
            if self.main:
                print(f"[rlhf] removing incomplete checkpoint {d} (no {CKPT_MARKER} marker)", flush=True)
                shutil.rmtree(d, ignore_errors=True)
        return None

    def resume_point(self, resume: bool) -> str | None:
        """For --resume: the newest complete checkpoint (said aloud), with the metrics of the steps that will
        run again dropped. None when not resuming or when no checkpoint is complete yet."""
        if not resume:
            return None
        checkpoint = self.latest_complete_checkpoint()
        if self.main:
            print(
                f"[rlhf] resuming from {checkpoint or 'the start (no complete checkpoint yet)'}", flush=True
            )
        self.truncate_metrics_after(int(checkpoint.name.split("-")[-1]) if checkpoint else 0)
        return str(checkpoint) if checkpoint else None

    def truncate_metrics_after(self, step: int) -> None:
        """On resume, forget lines logged after the checkpoint: those steps run again."""
        if not self.main or not self.metrics_path.exists():
            return
        keep = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def accounting_line(what: str, s: dict) -> str:
    """One line for a data accounting summary (rows in = used + rejected + not used), plus the first few
    rejected rows with their reasons."""
    used = s.get("rows_used", s.get("rows_trained", s.get("rows_kept")))
    line = f"[rlhf] {what}: {s['rows_in']} rows in, {used} used, {s['rows_rejected']} rejected"
    if s.get("rejected_by_reason"):
        line += " (" + ", ".join(f"{k}: {v}" for k, v in s["rejected_by_reason"].items()) + ")"
    for key, label in (
        ("rows_not_used_limit", "not used (limit)"),
        ("rows_held_out_for_eval", "held out"),
        ("blank_lines", "blank lines skipped"),
        ("ids_repeated", "repeated ids renamed (x -> x#2)"),
    ):
        if s.get(key):
            line += f", {s[key]} {label}"
    for r in s.get("rejected_examples", [])[:5]:
        line += f"\n        - {r['id']}: {r['reason']}"
    return line


def config_differences(before: Any, now: Any, cls: type) -> list[str]:
    """Dotted keys where two resolved configs of `cls` differ, leaving out its operational keys (how the run
    is carried out, e.g. `generation.url`: `rlhf.config.operational_keys`)."""
    skip = operational_keys(cls)
    return sorted(k for k in _diff_keys(before, now) if k not in skip)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
