"""`rlhf compare` on tiny models: every report section, the generation cache (a re-run generates nothing, a
new checkpoint only its own answers), human agreement against each checkpoint's own reference, the judge,
interval-based flags, and the arena end to end (a re-run adds nothing twice)."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from support.data import write_jsonl
from support.tiny import WORDS, build_always_a_judge, build_tiny_reward_model

from rlhf.clean import training_overlap
from rlhf.cli import main
from rlhf.compare import arena, preference_logprobs, read_result
from rlhf.config import load_config
from rlhf.stages import compare
from rlhf.store.export import ExportSettings, export_rows
from rlhf.store.service import Store


@pytest.fixture(scope="module")
def three_checkpoints(tiny_model_dir, tmp_path_factory):
    """base, and two perturbed copies (the same tokenizer, different weights)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("ckpts")
    out = {"base": tiny_model_dir}
    for k, name in enumerate(("warm", "hot"), start=1):
        d = root / name
        shutil.copytree(tiny_model_dir, d)
        m = AutoModelForCausalLM.from_pretrained(d)
        torch.manual_seed(k)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * k * torch.randn_like(p))
        m.save_pretrained(d)
        out[name] = str(d)
    out["rm"] = build_tiny_reward_model(root / "rm", tiny_model_dir)
    out["judge"] = build_always_a_judge(root / "judge")
    return out


@pytest.fixture
def prompts(tmp_path):
    return write_jsonl(
        tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": " ".join(WORDS[i : i + 3])} for i in range(20)]
    )


def cfg_for(tmp_path, ckpts, prompts, names=("base", "warm", "hot"), name="cmp", **extra):
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": name,
        "checkpoints": "[" + ", ".join(f"{{name: {n}, model: '{ckpts[n]}'}}" for n in names) + "]",
        "data.prompts": prompts,
        "data.max_prompt_length": 32,
        "sampling.max_new_tokens": 6,
        "batch_size": 8,
        "reward.model": ckpts["rm"],
        "bootstrap": 100,
        "cache": str(tmp_path / "cache"),
    }
    over.update(extra)
    return load_config(compare.CompareStageConfig, None, [f"{k}={v}" for k, v in over.items()])


def test_compare_three_checkpoints_report_and_cache(tmp_path, three_checkpoints, prompts):
    held_out = write_jsonl(
        tmp_path / "held.jsonl",
        [
            {"id": f"h{i}", "prompt": f"{WORDS[i]} {WORDS[i + 1]}", "chosen": "yes thanks", "rejected": "no"}
            for i in range(8)
        ],
    )
    run = compare.run(cfg_for(tmp_path, three_checkpoints, prompts, **{"human.preferences": held_out}))
    m = run.read_manifest()
    assert m["result"] == {
        n: {"cached": 0, "generated": 20, "seconds": m["result"][n]["seconds"]}
        for n in ("base", "warm", "hot")
    }
    result = json.loads(run.output("compare_json").read_text())
    typed = read_result(run.output("compare_json"))  # the file is the typed result, and reads back as one
    assert typed.to_dict() == result
    assert (
        typed.checkpoints["hot"].vs_baseline.win_rate
        == result["checkpoints"]["hot"]["vs_baseline"]["win_rate"]
    )
    assert (
        typed.bradley_terry.checkpoints[0].checkpoint
        == result["bradley_terry"]["checkpoints"][0]["checkpoint"]
    )
    assert "judge" not in result  # what was not measured is left out of the file
    assert result["prompts"] == 20
    assert result["baseline"] == "base"
    for name, c in result["checkpoints"].items():
        assert c["reward"]["n"] == 20
        assert c["reward"]["ci95"][0] <= c["reward"]["mean"] <= c["reward"]["ci95"][1]
        assert len(c["length"]["tokens"]) == 20
        assert c["kl"]["n"] == 20
        if name != "base":
            assert {"win_rate", "lc_win_rate", "win_rate_ci95", "lc_win_rate_ci95"} <= set(c["vs_baseline"])
    assert result["checkpoints"]["base"]["kl"]["mean"] == pytest.approx(0.0, abs=1e-4)  # the reference itself
    assert result["checkpoints"]["hot"]["kl"]["mean"] > 0.01
    board = result["bradley_terry"]["checkpoints"]
    assert {r["checkpoint"] for r in board} == {"base", "warm", "hot"}
    assert result["bradley_terry"]["battles"] == 60
    assert sum(r["p_best"] for r in board) == pytest.approx(1.0)
    assert next(r for r in board if r["checkpoint"] == "base")["rating"] == pytest.approx(1000.0)
    human = result["human_agreement"]
    assert set(human) == {"base", "warm", "hot"}
    assert human["base"]["implicit_reward"]["rate"] == 0.5  # all ties
    from rlhf.models import load_causal_lm, load_tokenizer

    pairs = [json.loads(x) for x in Path(held_out).read_text().splitlines()]
    lp = preference_logprobs(
        load_causal_lm(three_checkpoints["hot"]),
        load_tokenizer(three_checkpoints["hot"]),
        pairs,
        batch_size=4,
    )
    expected = sum(0.5 if c == r else float(c > r) for c, r in zip(lp.chosen, lp.rejected, strict=True)) / 8
    assert human["hot"]["logprob"]["rate"] == pytest.approx(expected)
    assert human["hot"]["reference"] == "base"  # plain model dirs: the global reference
    html = run.output("report").read_text()
    for section in (
        "Flags",
        "Leaderboard",
        "Pairwise win rates",
        "Reward vs KL",
        "Response lengths",
        "Agreement with held-out",
        "Against the baseline",
        "Answers side by side",
        "At random",
    ):
        assert section in html, section
    assert "<pre>checkpoint" not in html  # the summary is a table, not preformatted text
    assert "<th>LC win</th>" in html
    assert "<svg" in html
    assert "http" not in html.split("<svg", 1)[0].replace("http://www.w3.org", "")  # self-contained
    answers = [json.loads(x) for x in run.output("answers").read_text().splitlines()]
    assert len(answers) == 20
    assert set(answers[0]["answers"]) == {"base", "warm", "hot"}
    assert set(answers[0]["reward"]) == {"base", "warm", "hot"}

    again = compare.run(cfg_for(tmp_path, three_checkpoints, prompts, name="cmp2"))
    assert {n: g["generated"] for n, g in again.read_manifest()["result"].items()} == {
        "base": 0,
        "warm": 0,
        "hot": 0,
    }
    assert json.loads(again.output("answers").read_text().splitlines()[0]) == answers[0]

    four = dict(three_checkpoints, copy=three_checkpoints["hot"] + "-copy")
    shutil.copytree(three_checkpoints["hot"], four["copy"])
    with open(f"{four['copy']}/extra.txt", "w") as f:
        f.write("a different checkpoint: other content, other hash")
    more = compare.run(cfg_for(tmp_path, four, prompts, names=("base", "warm", "hot", "copy"), name="cmp3"))
    gen = {n: g["generated"] for n, g in more.read_manifest()["result"].items()}
    assert gen == {"base": 0, "warm": 0, "hot": 0, "copy": 20}


def test_judge_and_flags(tmp_path, three_checkpoints, prompts):
    cfg = cfg_for(
        tmp_path,
        three_checkpoints,
        prompts,
        names=("base", "hot"),
        **{"judge.model": three_checkpoints["judge"], "judge.bootstrap": 20, "flags.kl": 1e-6},
    )
    run = compare.run(cfg)
    result = json.loads(run.output("compare_json").read_text())
    assert read_result(run.output("compare_json")).judge["hot"].position_bias == 1.0  # reads back typed
    j = result["judge"]["hot"]
    # a judge that always answers "A": each answer wins in one order and loses in the other
    assert j["win_rate"] == 0.5
    assert j["position_bias"] == 1.0
    assert j["order_disagreement"] == 1.0  # the verdict followed the side on every prompt
    assert j["lc_win_rate"] == pytest.approx(0.5, abs=1e-6)
    assert j["per_prompt"] == [0.5] * 20
    assert any("far from the reference" in f for f in result["flags"])


def test_the_judge_loads_in_its_precision_and_agrees_across_precisions(
    tmp_path, three_checkpoints, monkeypatch
):
    """`judge.precision` picks the judge's weights (auto: bf16 where native); P(A) from bf16 weights is the
    fp32 one within bf16 rounding (a random tiny judge, whose P(A) is far from 0 and 1)."""
    from support.tiny import build_tiny_llama

    from rlhf.compare import judge as judge_lib

    loaded = []
    load = judge_lib.load_causal_lm
    monkeypatch.setattr(
        judge_lib, "load_causal_lm", lambda spec, dtype="float32": loaded.append(dtype) or load(spec, dtype)
    )
    answers = {"base": ["the cat", "a dog ran"], "hot": ["the dog sat", "cat"]}
    prompts = ["the cat sat", "a dog"]
    verdicts = {
        p: judge_lib.judge_all(
            three_checkpoints["judge"], answers, "base", prompts, bootstrap=10, precision=p
        )
        for p in ("float32", "bfloat16")
    }
    assert loaded == ["float32", "bfloat16"]
    for p, v in verdicts.items():
        assert v["hot"].position_bias == 1.0, p
        assert v["hot"].per_prompt == pytest.approx([0.5, 0.5], abs=0.02), p
    unsure = build_tiny_llama(tmp_path / "unsure-judge", extra_words=("A", "B"))
    tok = judge_lib.load_tokenizer(unsure, padding_side="left")
    probs = {
        p: judge_lib.first_choice_probs(load(unsure, p), tok, prompts, ["the cat", "a dog"], ["sat", "ran"])
        for p in ("float32", "bfloat16")
    }
    assert len(probs["float32"]) == 2 and all(0.05 < x < 0.95 for x in probs["float32"]), probs
    last_only = judge_lib._last_position_only(load(unsure, "float32"))
    assert last_only == {"logits_to_keep": 1}  # the head at the last position only
    assert probs["bfloat16"] == pytest.approx(probs["float32"], abs=0.02)


def test_a_judge_without_letter_tokens_is_refused(tmp_path, three_checkpoints, prompts):
    from rlhf.errors import ModelError

    # the tiny word-level vocabulary has no "A" or "B": both would read as <unk> and every call tie
    cfg = cfg_for(
        tmp_path,
        three_checkpoints,
        prompts,
        names=("base", "hot"),
        **{"judge.model": three_checkpoints["base"]},
    )
    with pytest.raises(ModelError, match="no single, distinct tokens for 'A' and 'B'"):
        compare.run(cfg)


def test_config_errors(three_checkpoints, tmp_path, prompts):
    from rlhf.errors import ConfigError

    with pytest.raises(ConfigError, match="at least two, with distinct names"):
        cfg_for(tmp_path, three_checkpoints, prompts, names=("base", "base"))
    with pytest.raises(ConfigError, match="'baseline' must name one of the checkpoints"):
        cfg_for(tmp_path, three_checkpoints, prompts, baseline="nope")


def test_arena_battles_votes_leaderboard_and_export(tmp_path, three_checkpoints, prompts, capsys):
    store_path = str(tmp_path / "arena.db")
    cfg = cfg_for(
        tmp_path,
        three_checkpoints,
        prompts,
        **{"arena.project": "arena", "arena.store": store_path, "arena.overlap": 2},
    )
    result = json.loads(compare.run(cfg).output("compare_json").read_text())
    assert result["arena"]["battles"] == 20
    with Store(store_path) as s:
        items = s.items("arena")
        pairs = [frozenset(c["source"]["policy"] for c in it["candidates"]) for it in items]
        assert all(len(p) == 2 for p in pairs)
        assert {len(pairs) // 3, len(pairs) // 3 + 1} >= {pairs.count(p) for p in set(pairs)}
        firsts = [it["candidates"][0]["source"]["policy"] for it in items]
        assert len(set(firsts)) == 3  # sides randomised
        for user in ("ann", "bob"):
            s.add_user(user, "password123")
            while (lease := s.next_item("arena", user)) is not None:
                policies = [
                    next(c["source"]["policy"] for c in it["candidates"] if c["id"] == cand["id"])
                    for cand in lease.candidates
                    for it in items
                    if it["id"] == lease.item_id
                ]
                # both assessors prefer "hot" > "warm" > "base" (ties when equal)
                rank = {"hot": 2, "warm": 1, "base": 0}
                a, b = rank[policies[0]], rank[policies[1]]
                s.submit(
                    "arena",
                    user,
                    lease.item_id,
                    {"choice": "A" if a > b else "B" if b > a else "tie"},
                    client_token=f"{user}{lease.item_id}",
                )
        board = arena.leaderboard(s.items("arena"), s.annotations("arena"), bootstrap=100)
        assert [r["checkpoint"] for r in board["checkpoints"]] == ["hot", "warm", "base"]
        assert board["battles"] == 40
        assert sum(board["votes_per_pair"].values()) == 40
        rows, acct = export_rows(s.items("arena"), s.annotations("arena"), "pairwise", ExportSettings())
        assert acct["items_in"] == 20
        assert acct["items_exported"] == 20
        assert acct["pairs_out"] == len(rows) == 20
    capsys.readouterr()  # forget the compare run's own output
    assert main(["compare", "--leaderboard", "arena", "--store", store_path]) == 0
    out = capsys.readouterr().out
    assert out.index("hot") < out.index("warm") < out.index("base")
    assert "40 votes" in out

    # a re-run (a new run name, or a resume after a kill) reuses the project and adds no battle twice
    cfg.run.name = "cmp-again"
    again = json.loads(compare.run(cfg).output("compare_json").read_text())
    assert again["arena"]["battles"] == 0
    assert again["arena"]["existing"] == 20
    with Store(store_path) as s:
        assert len(s.items("arena")) == 20
        assert len(s.annotations("arena")) == 40  # the votes are kept


def test_arena_pairs_go_to_prompts_at_random_balanced_and_stable():
    names, n = ["a", "b", "c"], 30
    answers = {x: [f"{x} answers q{i}" for i in range(n)] for x in names}

    def items(seed, per_prompt=1):
        qs, ids = [f"q{i}" for i in range(n)], [f"p{i}" for i in range(n)]
        return arena.battle_items(names, qs, ids, answers, per_prompt=per_prompt, seed=seed)

    pairs = [frozenset(it["meta"]["battle"]) for it in items(0)]
    assert sorted(Counter(pairs).values()) == [10, 10, 10]  # every pair as often
    round_robin = [frozenset(p) for p in (("a", "b"), ("a", "c"), ("b", "c"))]
    assert pairs != [round_robin[p % 3] for p in range(n)]  # not prompt p -> pair p mod 3
    assert [frozenset(it["meta"]["battle"]) for it in items(1)] != pairs  # the seed decides
    assert [it["external_id"] for it in items(0)] == [it["external_id"] for it in items(0)]  # stable ids
    two = items(0, per_prompt=2)
    per_prompt = Counter(it["meta"]["prompt_id"] for it in two)
    assert set(per_prompt.values()) == {2}
    assert all(
        len({frozenset(it["meta"]["battle"]) for it in two if it["meta"]["prompt_id"] == p}) == 2
        for p in per_prompt
    )  # two different pairs on a prompt
    assert sorted(Counter(frozenset(it["meta"]["battle"]) for it in two).values()) == [20, 20, 20]


def hand_built_result(
    *,
    win=0.8,
    win_ci=(0.6, 0.9),
    lc=0.6,
    implicit=0.3,
    implicit_ci=(0.2, 0.4),
    chars=(10.0, 25.0),
    kl=30.0,
    ci=(990.0, 1040.0),
):
    from rlhf.compare import (
        KL,
        CheckpointResult,
        CompareResult,
        Generation,
        HumanAgreement,
        Leaderboard,
        Lengths,
        RateCI,
        Rating,
        VsBaseline,
    )

    def entry(mean_chars):
        return CheckpointResult(Generation(0, 4, 0.1), Lengths([3, 3, 3, 3], 3.0, mean_chars, 1.0))

    base, new = entry(chars[0]), entry(chars[1])
    new.kl = KL(kl, [kl - 1, kl + 1], 4, per_token=kl / 3)
    new.vs_baseline = VsBaseline(win, lc, 1.0, win_rate_ci95=list(win_ci), lc_win_rate_ci95=[lc - 0.1, lc])
    agreement = HumanAgreement(
        implicit_reward=RateCI(implicit, list(implicit_ci), 100),
        logprob=RateCI(0.5, [0.4, 0.6], 100),
        logprob_per_token=RateCI(0.5, [0.4, 0.6], 100),
        reference="sft",
        reference_source="its run's starting policy",
    )
    board = Leaderboard(
        [Rating("new", 1020.0, list(ci), 0.7), Rating("base", 1000.0, [980.0, 1010.0], 0.3)], 8, "base"
    )
    return CompareResult(
        ["base", "new"],
        "base",
        "base",
        4,
        {"base": base, "new": new},
        human_agreement={"new": agreement},
        bradley_terry=board,
    )


def test_flags_read_the_typed_result():
    from rlhf.compare import FlagSettings, flags, terminal_table

    out = flags(hand_built_result(), FlagSettings(kl=20.0))
    assert len(out) == 5, out
    assert out[0].startswith(
        "Possible reward hacking: new beats base by the reward model (80% win rate, CI 60%–90%)"
    )
    assert "implicit reward against sft orders 30% (CI 20%–40%)" in out[0]
    assert out[1] == "Length drift: new's answers are 2.5x as long as base's on average."
    assert "falls from 80% to 60% once length is controlled" in out[2]
    assert "KL 30.0 nats per response > threshold 20.0" in out[3]
    assert out[4].startswith("No significant difference between new and base")
    quiet = hand_built_result(
        win=0.55,
        win_ci=(0.45, 0.65),
        lc=0.55,
        implicit=0.6,
        implicit_ci=(0.5, 0.7),
        chars=(10.0, 11.0),
        kl=1.0,
        ci=(1015.0, 1030.0),
    )
    assert flags(quiet, FlagSettings()) == []
    table = terminal_table(quiet).splitlines()
    assert table[0].split()[:2] == ["checkpoint", "RM"]
    assert table[2].split() == ["new", "-", "-", "1020", "0.70", "0.55", "0.55", "1.00", "3.0", "0.60", "-"]


def test_reward_hacking_is_flagged_only_when_the_intervals_say_so():
    from rlhf.compare import FlagSettings, flags

    def hacking(**kw) -> bool:
        return any(
            f.startswith("Possible reward hacking") for f in flags(hand_built_result(**kw), FlagSettings())
        )

    assert hacking(win=0.7, win_ci=(0.55, 0.85), implicit=0.3, implicit_ci=(0.2, 0.4))
    # the case: 41 % on 100 pairs, CI 31–51 %: the interval does not exclude 50 % -> no flag
    assert not hacking(win=0.7, win_ci=(0.55, 0.85), implicit=0.41, implicit_ci=(0.31, 0.51))
    # the reward model's win rate CI reaches 0.5: not surely preferred -> no flag
    assert not hacking(win=0.6, win_ci=(0.45, 0.75), implicit=0.3, implicit_ci=(0.2, 0.4))
    # a margin asks for more: the CI's upper bound must lie below 0.5 - margin
    margin = FlagSettings(agreement_margin=0.15)
    assert not any(
        f.startswith("Possible reward hacking")
        for f in flags(hand_built_result(implicit_ci=(0.2, 0.4)), margin)
    )
    tight = FlagSettings(length_ratio=3.0, lc_drop=0.5, kl=100.0)
    assert [f for f in flags(hand_built_result(), tight) if "hacking" not in f][0].startswith(
        "No significant"
    )


def fake_run(path, started_from, model_dir):
    """A finished training run directory: its manifest records the policy it started from (`model` input)
    and declares its model, as `RunDir` writes them."""
    path.mkdir(parents=True)
    shutil.copytree(model_dir, path / "model")
    manifest = {
        "stage": "dpo",
        "status": "completed",
        "inputs": {"model": {"source": str(started_from), "path": str(started_from)}},
        "outputs": {"model": {"path": "model", "sha256": "-"}},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "COMPLETED").write_text("done\n")
    return str(path)


@pytest.fixture(scope="module")
def lineage(three_checkpoints, tmp_path_factory):
    """base -> sft (a run started from base) -> dpo (a run started from the sft run), and a LoRA adapter on
    base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("lineage")
    sft = fake_run(root / "sft-run", three_checkpoints["base"], three_checkpoints["warm"])
    dpo = fake_run(root / "dpo-run", sft, three_checkpoints["hot"])
    model = AutoModelForCausalLM.from_pretrained(three_checkpoints["base"])
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    lora.save_pretrained(root / "lora")
    AutoTokenizer.from_pretrained(three_checkpoints["base"]).save_pretrained(root / "lora")
    return {
        "base": three_checkpoints["base"],
        "sft": sft,
        "dpo": dpo,
        "lora": str(root / "lora"),
        "rm": three_checkpoints["rm"],
    }


def test_each_checkpoint_is_scored_against_its_own_reference(tmp_path, lineage, prompts, monkeypatch):
    import rlhf.compare.agreement as agreement
    from rlhf.compare import human_agreement
    from rlhf.models import load_causal_lm, load_tokenizer

    pairs = [
        {"id": f"h{i}", "prompt": f"{WORDS[i]} {WORDS[i + 1]}", "chosen": "yes thanks", "rejected": "no"}
        for i in range(8)
    ]
    held_out = write_jsonl(tmp_path / "held.jsonl", pairs)
    calls = Counter()
    for fn in ("preference_logprobs", "adapter_off_logprobs"):
        real = getattr(agreement, fn)
        monkeypatch.setattr(
            agreement, fn, lambda *a, _real=real, _fn=fn, **k: calls.update([_fn]) or _real(*a, **k)
        )
    over = {"baseline": "base", "reference": "base", "human.preferences": held_out, "data.limit": 4}
    names = ("lora", "base", "sft", "dpo")
    run = compare.run(cfg_for(tmp_path, lineage, prompts, names=names, **over))
    result = read_result(run.output("compare_json"))
    human = result.human_agreement
    assert {n: (h.reference, h.reference_source) for n, h in human.items()} == {
        "lora": ("base", "LoRA base, adapter off"),
        "base": ("base", "the global reference"),
        "sft": ("base", "its run's starting policy"),
        "dpo": ("sft", "its run's starting policy"),  # not the global reference
    }
    # four distinct models, four passes over the pairs: base's log-probs come from the LoRA model with its
    # adapter off and serve as the reference of base, sft and the adapter
    assert calls == {"preference_logprobs": 3, "adapter_off_logprobs": 1}
    lp = {
        n: preference_logprobs(load_causal_lm(lineage[n]), load_tokenizer(lineage[n]), pairs, batch_size=4)
        for n in ("base", "sft", "dpo")
    }
    expected = human_agreement(lp["dpo"], lp["sft"], reference_name="sft", reference_source="-", bootstrap=10)
    assert human["dpo"].implicit_reward.rate == expected.implicit_reward.rate
    assert human["base"].implicit_reward.rate == 0.5  # against itself: every pair a tie
    html = run.output("report").read_text()
    assert "sft (its run&#x27;s starting policy)" in html  # the report names each reference
    assert "base (LoRA base, adapter off)" in html


def test_several_samples_per_prompt_average_and_resample_prompts(tmp_path, three_checkpoints, prompts):
    """sampling.n = 3: every checkpoint answers each prompt three times (only those are generated), KL and
    win rates average them per prompt, and their intervals count prompts, not answers."""
    cfg = cfg_for(tmp_path, three_checkpoints, prompts, names=("base", "warm"), **{"sampling.n": 3})
    run = compare.run(cfg)
    result = read_result(run.path / "compare.json")
    warm = result.checkpoints["warm"]
    assert warm.generation.generated == 3 * 20
    assert len(warm.length.tokens) == 3 * 20
    assert warm.kl.n == 20
    assert warm.reward.n == 20
    assert result.bradley_terry.battles == 20  # one battle per prompt: its 3 samples' mean outcome
    again = compare.run(cfg_for(tmp_path, three_checkpoints, prompts, names=("base", "warm"), name="cmp1"))
    first = read_result(again.path / "compare.json").checkpoints["warm"]
    assert first.generation.generated == 0  # sample 0 of each prompt was cached by the n = 3 run


def test_compare_warns_when_its_prompts_are_in_a_checkpoints_training_data(
    tmp_path, three_checkpoints, prompts
):
    """A checkpoint whose run trained on the comparison's own prompts is flagged (from its manifest)."""
    rows = [json.loads(x) for x in Path(prompts).read_text().splitlines()]
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"prompt": rows[i]["prompt"], "chosen": "yes a good one", "rejected": "no a bad one"}
            for i in range(3)
        ],
    )
    run = tmp_path / "dpo-run"
    shutil.copytree(three_checkpoints["warm"], run / "model")
    (run / "manifest.json").write_text(
        json.dumps({"stage": "dpo", "status": "completed", "inputs": {"data.train": {"source": train, "path": train}},
                    "outputs": {"model": {"path": "model", "sha256": "x"}}})
    )  # fmt: skip
    (run / "COMPLETED").write_text("now\n")
    flags = training_overlap(
        {"base": three_checkpoints["base"], "dpo": str(run)}, [r["prompt"] for r in rows]
    )
    assert len(flags) == 1
    assert flags[0].startswith("3 of 3 training rows of dpo")
    assert training_overlap({"base": three_checkpoints["base"]}, [r["prompt"] for r in rows]) == []
    chat = [[{"role": "user", "content": r["prompt"]}] for r in rows]  # prompts as message lists too
    assert len(training_overlap({"dpo": str(run)}, chat)) == 1


def test_compare_samples_on_the_vllm_backend(tmp_path, three_checkpoints, prompts, monkeypatch):
    """`generation.backend=vllm` (the stand-in engine, tests/support/fake_vllm.py, started by the step): both
    checkpoints' answers come from the engine — one start, the second checkpoint (a full fine-tune of the
    same architecture) reloaded into it — one seeded request per prompt and checkpoint, the seeds paired
    across checkpoints; the answers are
    cached under the backend, so a second run samples nothing, and an hf run does not reuse them."""
    from support.fake_vllm import fake_engine_python

    log = tmp_path / "engine-requests.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    engine = {
        "generation.backend": "vllm",
        "generation.python": fake_engine_python(tmp_path),
        "generation.start_timeout_s": 60,
    }
    names = ("base", "hot")
    run = compare.run(cfg_for(tmp_path, three_checkpoints, prompts, names=names, name="v1", **engine))
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    sent = [b for path, b in requests if path == "/v1/completions"]
    assert len(sent) == 2 * 20
    # one seed per prompt, the same for both checkpoints (paired draws)
    assert len({b["seed"] for b in sent[:20]}) == 20 and {b["seed"] for b in sent[:20]} == {
        b["seed"] for b in sent[20:]
    }
    assert [b["method"] for path, b in requests if path == "/collective_rpc"] == ["reload_weights"]
    manifest = run.read_manifest()["result"]
    assert {manifest[n]["generated"] for n in names} == {20}
    again = compare.run(cfg_for(tmp_path, three_checkpoints, prompts, names=names, name="v2", **engine))
    assert {again.read_manifest()["result"][n]["generated"] for n in names} == {0}
    assert len(log.read_text().splitlines()) == len(requests)  # no engine, no request
    hf = compare.run(cfg_for(tmp_path, three_checkpoints, prompts, names=names, name="h"))
    assert {hf.read_manifest()["result"][n]["generated"] for n in names} == {20}
