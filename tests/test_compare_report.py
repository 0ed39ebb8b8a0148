"""The comparison report a person reads: the summary as a table, answers side by side (where the checkpoints'
rewards differ most, where the reward model and the judge disagree, a few at random) with their scores,
everything escaped; and the LLM judge's arithmetic on a judge that always answers "A"."""

import pytest
import torch

from rlhf.compare import (
    CheckpointResult,
    CompareResult,
    Generation,
    JudgeVerdict,
    Lengths,
    write_outputs,
)
from rlhf.compare.judge import judge_against
from rlhf.compare.report import example_prompts


def result_with_judge(prompts: int) -> CompareResult:
    def entry():
        return CheckpointResult(Generation(0, prompts, 0.1), Lengths([3] * prompts, 3.0, 10.0, 1.0))

    res = CompareResult(["base", "new"], "base", "base", prompts, {"base": entry(), "new": entry()})
    # the judge prefers new on prompts 0-2, base elsewhere
    per_prompt = [0.9, 0.9, 0.9] + [0.1] * (prompts - 3)
    res.judge = {"new": JudgeVerdict(0.3, 0.3, 0.0, [0.2, 0.4], [0.2, 0.4], 0.5, 0.1, per_prompt)}
    return res


def test_examples_pick_reward_gaps_judge_disagreements_and_random_prompts():
    res = result_with_judge(12)
    # the reward model: new far ahead on prompt 7, ahead on 5 and 6 (where the judge prefers base), behind
    # on 0 (where the judge prefers new); ties elsewhere
    rewards = {"base": [0.0] * 12, "new": [0.0] * 12}
    rewards["new"][7], rewards["new"][6], rewards["new"][5], rewards["new"][0] = 9.0, 2.0, 1.0, -1.0
    picked = dict(example_prompts(res, rewards, 12, k=2, seed=0))
    assert picked["where the checkpoints' reward-model scores differ most"] == [7, 6]
    assert picked["where the reward model and the judge disagree"] == [0, 5]  # 6 and 7 shown already
    assert len(picked["at random"]) == 2
    assert not {5, 6, 7, 0} & set(picked["at random"])


def test_report_shows_answers_side_by_side_escaped_and_a_summary_table(tmp_path):
    res = result_with_judge(6)
    answers = {
        "base": [f"base answer {i}" for i in range(6)],
        "new": ["<script>window.__xss=1</script>"] + [f"new answer {i}" for i in range(1, 6)],
    }
    rewards = {"base": [0.0] * 6, "new": [5.0, 0, 0, 0, 0, 0]}
    prompts = [[{"role": "user", "content": "<b>q0</b>"}]] + [f"question {i}" for i in range(1, 6)]
    write_outputs(tmp_path, res, [f"p{i}" for i in range(6)], prompts, answers, rewards=rewards, examples=2)
    html = (tmp_path / "report.html").read_text()
    assert "<script>window" not in html  # model output stays text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "user: &lt;b&gt;q0&lt;/b&gt;" in html
    assert "Answers side by side" in html
    assert "RM 5.000 · judge P(better than base) 0.90" in html  # each answer with its scores
    assert "<pre>checkpoint" not in html  # the summary is an HTML table
    assert "<th>checkpoint</th><th>RM score</th>" in html
    assert '"reward": {"base": 0.0, "new": 5.0}' in (tmp_path / "answers.jsonl").read_text()


class AlwaysA(torch.nn.Module):
    """A judge model whose next token is "A" whatever it reads."""

    def __init__(self, a_id: int, vocab: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        self.bias.data[a_id] = 20.0

    def forward(self, input_ids, attention_mask):
        logits = self.bias.expand(*input_ids.shape, -1)
        return type("Out", (), {"logits": logits})()


def test_a_judge_that_always_answers_a_prefers_nobody_and_is_all_position_bias(tmp_path):
    from support.tiny import build_tiny_llama

    from rlhf.models import load_tokenizer

    tok = load_tokenizer(build_tiny_llama(tmp_path / "t", extra_words=("A", "B")), padding_side="left")
    model = AlwaysA(tok.convert_tokens_to_ids("A"), len(tok))
    res = judge_against(model, tok, ["the cat", "a dog"], ["yes", "no no"], ["hello", "world"], batch_size=1)
    assert res["win_rate"] == 0.5
    assert res["position_bias"] == 1.0
    assert res["per_prompt"] == [0.5, 0.5]


def test_a_judge_without_distinct_letter_tokens_is_refused(tiny_model_dir):
    from rlhf.compare.judge import letter_ids
    from rlhf.errors import ModelError
    from rlhf.models import load_tokenizer

    with pytest.raises(ModelError, match="no single, distinct tokens"):
        letter_ids(load_tokenizer(tiny_model_dir))
