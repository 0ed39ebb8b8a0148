import json

import pytest

from rlhf import models
from rlhf.errors import RunDirError
from rlhf.hashing import content_hash
from rlhf.loop import steps
from rlhf.runs import CKPT_MARKER, DONE_MARKER, RunDir, RunSettings
from rlhf.stages.sft import SFTStageConfig


def settings(tmp_path, name="r1"):
    return RunSettings(name=name, output_root=str(tmp_path))


def test_prepare_writes_config_and_manifest(tmp_path):
    run = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    m = json.loads(run.manifest_path.read_text())
    assert m["stage"] == "sft"
    assert m["status"] == "running"
    assert m["versions"]["torch"]
    assert "model:" in run.config_path.read_text()
    run.finish(result={"x": 1})
    assert (run.path / DONE_MARKER).exists()
    assert run.read_manifest()["status"] == "completed"


def test_finished_run_not_overwritten_without_flag(tmp_path):
    run = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    run.finish()
    with pytest.raises(RunDirError, match="holds a finished run. Pass --overwrite"):
        RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    with pytest.raises(RunDirError, match="holds a finished run"):
        RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig(), resume=True)
    again = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig(), overwrite=True)
    assert not (again.path / DONE_MARKER).exists()


def test_unfinished_run_needs_resume_and_same_config(tmp_path):
    RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    with pytest.raises(RunDirError, match="holds an unfinished run. Pass --resume"):
        RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    other = SFTStageConfig()
    other.data.max_length = 7
    with pytest.raises(RunDirError, match=r"the config differs .* at data.max_length"):
        RunDir.prepare(settings(tmp_path), "sft", other, resume=True)
    run = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig(), resume=True)
    assert len(run.read_manifest()["resumed_at"]) == 1
    with pytest.raises(RunDirError, match="no run in"):
        RunDir.prepare(settings(tmp_path, "fresh"), "sft", SFTStageConfig(), resume=True)


def test_latest_complete_checkpoint_skips_and_removes_partial(tmp_path):
    run = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    for step, complete in ((5, True), (10, True), (15, False)):
        d = run.checkpoints / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if complete:
            (d / CKPT_MARKER).write_text("x")
    assert run.latest_complete_checkpoint().name == "checkpoint-10"
    assert not (run.checkpoints / "checkpoint-15").exists()


def test_metrics_truncated_on_resume(tmp_path):
    run = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    for s in (2, 4, 6):
        run.log_metrics({"step": s, "loss": 1.0})
    run.truncate_metrics_after(4)
    assert [r["step"] for r in run.read_metrics()] == [2, 4]


def test_content_hash_changes_with_content(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    h1 = content_hash(f)
    f.write_text("two")
    assert content_hash(f) != h1
    assert len(h1) == 64
    assert content_hash(tmp_path) == content_hash(tmp_path)


def test_a_run_that_failed_before_any_checkpoint_is_replaced(tmp_path):
    run = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    run.fail("DataError: no rows")
    again = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    assert again.read_manifest()["status"] == "running"
    (again.checkpoints / "checkpoint-5").mkdir(parents=True)
    again.fail("TrainingError: nan")
    with pytest.raises(RunDirError, match="unfinished run"):
        RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())


def test_a_hub_model_is_recorded_by_its_revision_and_a_new_upload_is_a_changed_input(tmp_path, monkeypatch):
    """A hub id has no local files to hash: its manifest entry holds the revision it resolved to, and the
    loop's skip rule sees a new revision as a changed input (a local model keeps its content hash)."""
    revision = {"now": "rev-1"}
    monkeypatch.setattr(models, "hub_revision", lambda repo: revision["now"])
    run = RunDir.prepare(settings(tmp_path), "sft", SFTStageConfig())
    models.record_model(run, "model", "someorg/some-model")
    entry = run.read_manifest()["inputs"]["model"]
    assert entry == {"source": "someorg/some-model", "revision": "rev-1"}
    monkeypatch.setattr(steps, "hub_revision", lambda repo: revision["now"])
    assert steps.inputs_unchanged(run.read_manifest())
    revision["now"] = "rev-2"
    assert not steps.inputs_unchanged(run.read_manifest())
