"""GRPO and RLOO on the tiny model with a tiny reward model: weights move, the RM scores the decoded
completions, metrics and prompt accounting land in the run dir; a drift stop exports the best checkpoint;
a NaN reward and a missing reward model fail clearly."""

import json

import pytest
import torch
from support.data import write_jsonl
from support.tiny import WORDS

from rlhf.config import load_config
from rlhf.errors import ConfigError, TrainingError
from rlhf.reward.scorer import RewardScorer
from rlhf.stages import grpo

VOCAB = {*WORDS, "system", "user", "assistant", "tool"}
CLASSES = {"grpo": grpo.GRPOStageConfig, "rloo": grpo.RLOOStageConfig}


@pytest.fixture(scope="session")
def tiny_rm_dir(tiny_model_dir, tmp_path_factory):
    from support.tiny import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"), tiny_model_dir)


@pytest.fixture
def prompts(tmp_path):
    rows = [{"id": f"p{i}", "prompt": " ".join(WORDS[i : i + 4])} for i in range(8)]
    rows.append({"id": "conv", "prompt": [{"role": "user", "content": "the cat sat"}]})
    rows.append({"id": "too-long", "prompt": " ".join(["tree"] * 60)})
    rows.append({"id": "ends-with-assistant", "prompt": [{"role": "assistant", "content": "hello"}]})
    return write_jsonl(tmp_path / "prompts.jsonl", rows)


def cfg_for(tmp_path, algo, model, rm, data, name, **extra):
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": name,
        "model.name": model,
        "model.lora.r": 4,
        "data.prompts": data,
        "data.max_prompt_length": 32,
        "reward.model": rm,
        "trainer.max_steps": 2,
        "trainer.num_generations": 4,
        "trainer.per_device_train_batch_size": 8,
        "trainer.max_completion_length": 8,
        "trainer.beta": 0.04,
        "trainer.learning_rate": 5e-2,
        "trainer.logging_steps": 1,
        "trainer.save_strategy": "no",
        "trainer.activation_checkpointing": False,
        "trainer.report_to": "none",
        "trainer.bf16": False,  # fp32 on every CPU; bf16 is tested on its own
        "trainer.dataloader_num_workers": 0,
    }
    over.update(extra)
    return load_config(CLASSES[algo], None, [f"{k}={v}" for k, v in over.items()])


def tensors(path, name):
    from safetensors.torch import load_file

    return load_file(str(path / name))


@pytest.fixture
def spy_scores(monkeypatch):
    calls = []
    original = RewardScorer.score

    def spy(self, prompts, responses, **kw):
        calls.append((prompts, responses))
        return original(self, prompts, responses, **kw)

    monkeypatch.setattr(RewardScorer, "score", spy)
    return calls


# GRPO trains a LoRA adapter (reference: adapter disabled); RLOO a full fine-tune (reference: frozen copy)
SETUPS = {
    "grpo": ({"save": "adapter"}, "adapter_model.safetensors", "adapter disabled (no copy)"),
    "rloo": ({"model.lora": "null"}, "model.safetensors", "frozen copy"),
}


def changed(run, tiny_model_dir, algo) -> bool:
    _, weights_file, _ = SETUPS[algo]
    after = tensors(run.model_dir, weights_file)
    if algo == "grpo":  # LoRA B matrices start at zero
        return any(v.abs().sum() > 0 for k, v in after.items() if "lora_B" in k)
    from pathlib import Path

    before = tensors(Path(tiny_model_dir), weights_file)
    return sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) - 1


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_trains_on_reward_model_scores(tmp_path, tiny_model_dir, tiny_rm_dir, prompts, spy_scores, algo):
    extra, _, reference = SETUPS[algo]
    run = grpo.run(cfg_for(tmp_path, algo, tiny_model_dir, tiny_rm_dir, prompts, algo, **extra))
    m = run.read_manifest()
    assert changed(run, tiny_model_dir, algo)
    # the RM was called on decoded completions (message lists of text, not token ids), 8 per step
    assert len(spy_scores) == 2 == m["result"]["reward_calls"]
    assert m["result"]["completions_scored"] == 16
    for ps, rs in spy_scores:
        assert len(ps) == len(rs) == 8
        assert all(isinstance(r, list) and r[-1]["role"] == "assistant" for r in rs)
        assert all(isinstance(p, list) and p[-1]["role"] == "user" for p in ps)
        assert all(set(r[-1]["content"].split()) <= VOCAB for r in rs)  # plain decoded words
    metrics = run.read_metrics()
    assert any("reward" in r and f"rewards/{grpo.REWARD_NAME}/mean" in r for r in metrics)
    assert any(grpo.LOG_KL in r and grpo.LOG_LENGTH in r for r in metrics)
    drift = [r for r in metrics if "drift/kl" in r]
    assert [r["step"] for r in drift] == [1, 2]
    assert "drift/length_ratio" in drift[-1]
    acct = m["data"]["prompts"]
    assert (acct["rows_in"], acct["rows_used"], acct["rows_rejected"]) == (11, 9, 2)
    rejected = {r["id"]: r["reason"] for r in acct["rejected_examples"]}
    assert "data.max_prompt_length 32" in rejected["too-long"]
    assert "last turn" in rejected["ends-with-assistant"]
    assert m["result"]["reference"] == reference
    assert m["result"]["algorithm"] == algo
    assert m["status"] == "completed"
    assert m["inputs"]["reward.model"]["sha256"]


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_drift_stop_exports_best_checkpoint(tmp_path, tiny_model_dir, tiny_rm_dir, prompts, algo):
    extra, weights_file, _ = SETUPS[algo]
    extra = {
        **extra,
        "drift.max_kl": 1e-9,
        "drift.action": "stop",
        "trainer.max_steps": 6,
        "trainer.save_strategy": "steps",
        "trainer.save_steps": 1,
    }
    run = grpo.run(cfg_for(tmp_path, algo, tiny_model_dir, tiny_rm_dir, prompts, "drift", **extra))
    result = run.read_manifest()["result"]
    # step 1 measures the untouched policy (KL 0); step 2 exceeds the tiny bound and stops the run
    assert result["global_step"] == 2
    assert result["drift"]["stopped"]
    alarm = result["drift"]["alarms"][0]
    assert alarm["step"] == 2
    assert alarm["action"] == "stop"
    assert "drift.max_kl" in alarm["alarm"]
    best = run.checkpoints / "checkpoint-1"
    assert result["restored_checkpoint"] == str(best)
    exported = tensors(run.model_dir, weights_file)
    saved_best = tensors(best, weights_file)
    drifted = tensors(run.checkpoints / "checkpoint-2", weights_file)
    assert exported.keys() == saved_best.keys()
    assert all(torch.equal(exported[k], saved_best[k]) for k in exported)
    assert not all(torch.equal(exported[k], drifted[k]) for k in exported)


def test_nan_reward_stops_with_training_error(tmp_path, tiny_model_dir, tiny_rm_dir, prompts, monkeypatch):
    monkeypatch.setattr(RewardScorer, "score", lambda self, p, r, **kw: [float("nan")] * len(p))
    cfg = cfg_for(tmp_path, "rloo", tiny_model_dir, tiny_rm_dir, prompts, "nan")
    with pytest.raises(TrainingError) as e:
        grpo.run(cfg)
    msg = str(e.value)
    assert f"reward ({tiny_rm_dir}) was not finite for 8 of 8 responses at step 1" in msg
    assert "(first: prompt p" in msg
    assert "value nan" in msg
    m = json.loads((tmp_path / "runs" / "nan" / "manifest.json").read_text())
    assert m["status"] == "failed"
    assert "TrainingError" in m["error"]


def test_missing_reward_model_and_kl_without_beta(tmp_path, tiny_model_dir, prompts):
    cfg = cfg_for(tmp_path, "grpo", tiny_model_dir, str(tmp_path / "nope"), prompts, "norm")
    with pytest.raises(ConfigError, match=r"'reward\.model'.*rlhf reward --config configs/reward\.yaml"):
        grpo.run(cfg)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a reward model directory"):
        grpo.run(cfg_for(tmp_path, "grpo", tiny_model_dir, str(tmp_path / "file"), prompts, "norm"))
    with pytest.raises(ConfigError, match=r"'drift\.max_kl' needs trainer\.beta > 0"):
        grpo.run(
            cfg_for(
                tmp_path,
                "grpo",
                tiny_model_dir,
                "x",
                prompts,
                "nokl",
                **{"trainer.beta": 0, "drift.max_kl": 5},
            )
        )
    assert not (tmp_path / "runs").exists()  # config errors write nothing
    with pytest.raises(ConfigError, match=r"'trainer\.seed' is set by rlhf"):
        cfg_for(tmp_path, "rloo", tiny_model_dir, "x", prompts, "seed", **{"trainer.seed": 1})


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_completions_through_the_vllm_engine(
    tmp_path, tiny_model_dir, tiny_rm_dir, prompts, spy_scores, algo, monkeypatch
):
    """generation.backend=vllm (a stand-in engine, tests/support/fake_vllm.py): one engine for the run; at each
    generation step the policy is written (GRPO here: its LoRA adapter, loaded by name; RLOO: full weights,
    reloaded into the engine), one seeded request per completion row;
    the engine's ids (the fake's [5, 6, 7 + seed % 3, EOS]) are the completions TRL decodes and the RM
    scores."""
    from support.fake_vllm import fake_engine_python

    from rlhf.models import load_tokenizer

    log = tmp_path / "engine-requests.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    monkeypatch.setenv("FAKE_VLLM_VARY", "1")  # completions of a prompt differ: advantages, so weights move
    extra = {
        **SETUPS[algo][0],
        "generation.backend": "vllm",
        "generation.python": fake_engine_python(tmp_path),
        "generation.start_timeout_s": 60,
        "generation.training_lora": "adapter",
    }
    run = grpo.run(cfg_for(tmp_path, algo, tiny_model_dir, tiny_rm_dir, prompts, f"{algo}-engine", **extra))
    stats = run.read_manifest()["result"]["rollouts"]
    assert (stats["backend"], stats["engine_starts"], stats["policies_written"]) == ("vllm", 1, 2)
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    sent = [b for path, b in requests if path == "/v1/completions"]
    loads = [b["lora_name"] for path, b in requests if path == "/v1/load_lora_adapter"]
    assert len(sent) == 16 and all(b["n"] == 1 for b in sent) and len({b["seed"] for b in sent}) == 16
    if algo == "grpo":  # a LoRA adapter: each generation step's loaded by its content name
        assert [b["model"] for b in sent[::8]] == loads and len(set(loads)) == 2
    else:  # a full fine-tune: the second step's weights reloaded into the running engine
        assert loads == [] and {b["model"] for b in sent} == {"base"} and stats["weight_reloads"] == 1
    assert len(spy_scores) == 2
    tok = load_tokenizer(tiny_model_dir)
    expected = [tok.decode([5, 6, 7 + b["seed"] % 3]) for b in sent]  # the fake's answers, EOS cut
    # (requests run concurrently: the log has them in arrival order)
    assert sorted(r[-1]["content"] for _, rs in spy_scores for r in rs) == sorted(expected)
    assert len(set(expected)) > 1


def test_engine_refuses_what_it_cannot_sample(tmp_path, tiny_model_dir, tiny_rm_dir, prompts):
    for key, value, said in [
        ("trainer.min_p", 0.1, "trainer.min_p has no counterpart"),
        ("trainer.use_vllm", True, "both ask for a vLLM engine"),
    ]:
        cfg = cfg_for(
            tmp_path,
            "grpo",
            tiny_model_dir,
            tiny_rm_dir,
            prompts,
            "refused",
            **{key: value, "generation.backend": "vllm", "generation.python": "/bin/true"},
        )
        with pytest.raises(ConfigError, match=said):
            grpo.run(cfg)
        assert not (tmp_path / "runs" / "refused").exists()


def test_lora_grpo_under_bf16_holds_the_base_in_bf16(
    tmp_path, tiny_model_dir, tiny_rm_dir, prompts, monkeypatch
):
    """GRPO with LoRA under bf16 mixed precision (`trainer.bf16: true`, rlhf's pick where bf16 is native;
    emulated and slow on AVX2-only CPUs, hence 1 step of the tiny Llama) loads its frozen base in bf16 as the
    other TRL stages do: adapters and optimizer state fp32, the run says and records it, the merged model is
    fp32 and the adapter moved."""
    seen = {}
    trainer_cls = grpo.TRL_CLASSES["grpo"][1]

    class Recording(trainer_cls):
        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            params = dict(self.model.named_parameters())
            seen["base"] = {p.dtype for n, p in params.items() if "lora_" not in n}
            seen["lora"] = {p.dtype for n, p in params.items() if "lora_" in n}
            seen["optimizer"] = {
                v.dtype for st in self.optimizer.state.values() for v in st.values() if v.dim()
            }
            seen["moved"] = any(p.abs().sum() > 0 for n, p in params.items() if "lora_B" in n)
            return out

    monkeypatch.setitem(grpo.TRL_CLASSES, "grpo", (grpo.TRL_CLASSES["grpo"][0], Recording))
    over = {"trainer.bf16": True, "trainer.max_steps": 1, "drift.every_steps": 0}
    run = grpo.run(cfg_for(tmp_path, "grpo", tiny_model_dir, tiny_rm_dir, prompts, "bf16", **over))
    assert seen["base"] == {torch.bfloat16}
    assert seen["lora"] == {torch.float32} == seen["optimizer"]
    assert seen["moved"]
    m = run.read_manifest()
    assert "LoRA base held in bf16" in m["result"]["precision"]
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(run.model_dir).state_dict()
    assert {v.dtype for v in merged.values()} == {torch.float32}
