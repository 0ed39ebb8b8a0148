import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support.data import make_rows, write_jsonl

from rlhf.cli import main
from rlhf.config import load_config
from rlhf.runs import CKPT_MARKER, DONE_MARKER
from rlhf.stages import sft

ROOT = Path(__file__).resolve().parents[1]


def overrides(tmp_path, model_dir, data, name="run", **extra):
    base = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": name,
        "model.name": model_dir,
        "data.train": data,
        "data.max_length": 64,
        "trainer.max_steps": 6,
        "trainer.per_device_train_batch_size": 4,
        "trainer.learning_rate": 0.01,
        "trainer.logging_steps": 1,
        "trainer.save_steps": 3,
        "trainer.gradient_checkpointing": False,
        "trainer.report_to": "none",
        "trainer.bf16": False,  # fp32 on every CPU; bf16 is tested on its own
        "trainer.dataloader_num_workers": 0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def weights(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


@pytest.fixture
def data_with_bad_rows(tmp_path):
    rows = make_rows(40)
    rows.append(
        {
            "id": "empty-one",
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}],
        }
    )
    rows.append({"id": "long-one", "prompt": " ".join(["the"] * 200), "completion": "yes"})
    return write_jsonl(tmp_path / "train.jsonl", rows)


def test_full_finetune_trains_and_writes_everything(tmp_path, tiny_model_dir, data_with_bad_rows):
    cfg = load_config(
        sft.SFTStageConfig,
        None,
        overrides(tmp_path, tiny_model_dir, data_with_bad_rows, **{"data.eval_fraction": 0.2}),
    )
    run = sft.run(cfg)
    before, after = weights(tiny_model_dir), weights(run.model_dir)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) - 1  # every trained tensor moved
    assert (run.path / DONE_MARKER).exists()
    assert run.config_path.exists()
    m = json.loads(run.manifest_path.read_text())
    assert m["status"] == "completed"
    assert m["result"]["global_step"] == 6
    assert m["result"]["model_kind"] == "full"
    acct = m["data"]["train"]
    assert acct["rows_in"] == 42
    assert acct["rows_rejected"] == 2
    assert acct["rows_in"] == acct["rows_trained"] + acct["rows_held_out_for_eval"] + acct["rows_rejected"]
    assert {r["id"] for r in acct["rejected_examples"]} == {"empty-one", "long-one"}
    assert acct["rejected_by_reason"] == {"empty content": 1, "too long": 1}
    assert m["inputs"]["data.train"]["sha256"]
    assert m["inputs"]["model"]["sha256"]
    losses = [r["loss"] for r in run.read_metrics() if "loss" in r]
    assert len(losses) == 6
    assert all(x == x for x in losses)
    assert any("eval_loss" in r for r in run.read_metrics())
    assert m["result"]["eval_loss"] > 0
    assert sorted(p.name for p in run.checkpoints.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert all((p / CKPT_MARKER).exists() for p in run.checkpoints.glob("checkpoint-*"))


def test_lora_merged_and_adapter(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "t.jsonl", make_rows(16))
    cfg = load_config(
        sft.SFTStageConfig,
        None,
        overrides(
            tmp_path, tiny_model_dir, data, name="merged", **{"model.lora.r": 4, "trainer.max_steps": 3}
        ),
    )
    run = sft.run(cfg)
    before, after = weights(tiny_model_dir), weights(run.model_dir)
    assert not all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads(run.manifest_path.read_text())["result"]["model_kind"] == "merged"
    cfg = load_config(
        sft.SFTStageConfig,
        None,
        overrides(
            tmp_path,
            tiny_model_dir,
            data,
            name="adapter",
            **{
                "model.lora.r": 4,
                "trainer.max_steps": 3,
                "save": "adapter",
                "trainer.report_to": "tensorboard",
            },
        ),
    )
    run = sft.run(cfg)
    assert (run.model_dir / "adapter_config.json").exists()
    assert not (run.model_dir / "model.safetensors").exists()


def test_cli_errors_are_one_clear_line(tmp_path, tiny_model_dir, capsys):
    code = main(["sft", *overrides(tmp_path, tiny_model_dir, str(tmp_path / "missing.jsonl"))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: data.train: file '")
    assert "Traceback" not in err
    code = main(["sft", "trainer.lerning_rate=1"])
    assert code == 2
    assert "Did you mean 'learning_rate'" in capsys.readouterr().err
    code = main(["sft", "--config", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "config file" in capsys.readouterr().err


def test_help_is_fast_and_lists_stages():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "rlhf", "--help"], capture_output=True, text=True, check=True)
    assert time.perf_counter() - t0 < 2.0
    assert "sft" in out.stdout
    assert (
        "torch"
        not in subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, rlhf.cli; rlhf.cli.build_parser(); print(' '.join(sys.modules))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )


@pytest.mark.slow
def test_kill_then_resume_continues_from_last_complete_checkpoint(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "t.jsonl", make_rows(64))
    args = [
        sys.executable,
        "-m",
        "rlhf",
        "sft",
        *overrides(
            tmp_path,
            tiny_model_dir,
            data,
            **{
                "trainer.max_steps": 400,
                "trainer.save_steps": 20,
                "trainer.per_device_train_batch_size": 2,
                "trainer.save_total_limit": 3,
            },
        ),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run_dir = tmp_path / "runs" / "run"
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / "checkpoint-40" / CKPT_MARKER).exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / DONE_MARKER).exists(), "the run finished before it could be killed"
    complete = sorted(
        int(p.name.split("-")[1])
        for p in (run_dir / "checkpoints").glob("checkpoint-*")
        if (p / CKPT_MARKER).exists()
    )
    assert complete
    assert complete[-1] >= 40
    partial = run_dir / "checkpoints" / f"checkpoint-{complete[-1] + 20}"  # as if killed mid-save
    partial.mkdir(exist_ok=True)
    (partial / "trainer_state.json").write_text("{")
    out = subprocess.run([*args, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / f'checkpoint-{complete[-1]}'}" in out.stdout
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "completed"
    assert m["result"]["global_step"] == 400
    assert len(m["resumed_at"]) == 1
    steps = [
        r["step"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert steps == list(range(1, 401))
