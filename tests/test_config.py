import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from rlhf.cli import STAGES
from rlhf.config import Range, bounded, dump_yaml, field_help, load_config, operational_keys, parse_override
from rlhf.errors import ConfigError
from rlhf.stages import dpo
from rlhf.stages.sft import SFTStageConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    r: int = 8
    rate: float = 0.1
    names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    trainer: dict = field(default_factory=dict)


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_yaml_and_overrides_typed(tmp_path):
    path = write(tmp_path, "name: y\ninner:\n  r: 4\n")
    cfg = load_config(
        Outer, path, ["inner.rate=1e-5", "flag=true", "trainer.lr=3", "inner.names=[a, b]", "maybe.r=2"]
    )
    assert cfg.name == "y"
    assert cfg.inner.r == 4
    assert cfg.inner.rate == 1e-5
    assert cfg.flag is True
    assert cfg.trainer == {"lr": 3}
    assert cfg.inner.names == ["a", "b"]
    assert cfg.maybe.r == 2


@dataclass
class Staged:
    inner: Inner = field(default_factory=lambda: Inner(r=32, names=["kept"]))
    outer: Outer = field(default_factory=lambda: Outer(name="stage", inner=Inner(rate=0.5)))


def test_a_section_given_in_part_keeps_the_rest_of_its_default(tmp_path):
    """`run.seed=3` must not rename the run: the fields a section leaves out keep the enclosing default (the
    stage's), at every depth, from a file and from overrides alike."""
    cfg = load_config(Staged, write(tmp_path, "inner:\n  rate: 0.25\n"), ["outer.inner.r=4"])
    assert (cfg.inner.r, cfg.inner.rate, cfg.inner.names) == (32, 0.25, ["kept"])
    assert (cfg.outer.name, cfg.outer.inner.r, cfg.outer.inner.rate) == ("stage", 4, 0.5)
    from rlhf.stages.generate import GenerateStageConfig

    real = load_config(GenerateStageConfig, None, ["run.seed=3", "sampling.max_new_tokens=32"])
    assert (real.run.name, real.run.seed) == ("generate", 3)
    assert (real.sampling.temperature, real.sampling.top_p, real.sampling.max_new_tokens) == (0.8, 0.95, 32)


def test_unknown_key_names_key_file_and_valid_keys(tmp_path):
    path = write(tmp_path, "inner:\n  rr: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, path)
    assert (
        str(e.value)
        == f"{path}: unknown key 'inner.rr'. Valid keys under 'inner': r, rate, names. Did you mean 'r'?"
    )


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "nmae: y\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, path)
    assert str(e.value) == (
        f"{path}: unknown key 'nmae'. Valid keys: name, flag, inner, maybe, trainer. Did you mean 'name'?"
    )


def test_bad_type_message(tmp_path):
    path = write(tmp_path, "inner:\n  r: four\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, path)
    assert str(e.value) == f"{path}: 'inner.r' must be an integer, got 'four' (str)."


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match=r"'inner.r' must be an integer, got True \(bool\)"):
        load_config(Outer, write(tmp_path, "inner:\n  r: true\n"))


def test_bad_override_messages(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, path, ["inner.lr=3"])
    assert str(e.value) == (
        "override 'inner.lr=3': unknown key 'inner.lr'. Valid keys under 'inner': r, rate, names. Did you mean 'r'?"
    )
    with pytest.raises(ConfigError) as e:
        load_config(Outer, path, ["inner.r=abc"])
    assert str(e.value) == "override 'inner.r=abc': 'inner.r' must be an integer, got 'abc' (str)."
    with pytest.raises(ConfigError, match="is not of the form key.sub=value"):
        parse_override("inner.r")
    with pytest.raises(ConfigError, match="'name' is a single value, it has no sub-key 'x'"):
        load_config(Outer, path, ["name.x=1"])


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="config file 'nope.yaml' not found"):
        load_config(Outer, "nope.yaml")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(Outer, write(tmp_path, "- a\n- b\n"))


def test_sft_cross_field_and_reserved_trainer_keys(tmp_path):
    with pytest.raises(
        ConfigError, match=r"'trainer.output_dir' is set by rlhf; use run.output_root and run.name"
    ):
        load_config(SFTStageConfig, None, ["trainer.output_dir=/tmp/x"])
    with pytest.raises(ConfigError, match="'data.overlength' must be one of reject, truncate; got 'drop'"):
        load_config(SFTStageConfig, None, ["data.overlength=drop"])
    with pytest.raises(ConfigError, match="'model.lora.r' must be >= 1, got 0"):
        load_config(SFTStageConfig, None, ["model.lora.r=0"])


def test_unknown_trainer_key_is_named_with_suggestion(tmp_path):
    from trl import SFTConfig

    from rlhf.train.args import build_trl_config

    with pytest.raises(ConfigError) as e:
        build_trl_config(SFTConfig, {"lerning_rate": 1e-4}, {"output_dir": str(tmp_path)})
    assert (
        str(e.value)
        == "'trainer.lerning_rate' is not an option of trl.SFTConfig. Did you mean 'learning_rate'?"
    )


def test_resolved_config_round_trips():
    cfg = load_config(SFTStageConfig, ROOT / "configs" / "sft.yaml", ["model.lora.r=4"])
    again = load_config(SFTStageConfig, None, [])
    assert cfg.model.lora.r == 4
    assert again.model.lora is None
    assert yaml.safe_load(dump_yaml(cfg))["model"]["lora"]["r"] == 4


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_stage_config_loads(path):
    import importlib

    if path.stem == "loop":  # the loop: its own config, and every stage mapping builds that stage's config
        from rlhf.loop.config import LoopConfig
        from rlhf.loop.rounds import Loop

        for p in (path, ROOT / "rlhf" / "demo" / "loop.yaml"):
            Loop(load_config(LoopConfig, p), source=str(p)).check_stages()
        return
    assert path.stem in STAGES, f"configs/{path.name} has no stage of that name in rlhf.cli.STAGES"
    module_name, cls_name, _ = STAGES[path.stem]
    cfg = load_config(getattr(importlib.import_module(module_name), cls_name), path)
    assert cfg is not None
    assert path.read_text().startswith(f"# rlhf {path.stem} --config configs/{path.name}")


def test_yaml_12_scalars(tmp_path):
    path = write(
        tmp_path, "trainer:\n  save_strategy: no\n  learning_rate: 1e-5\n  bf16: false\n  report_to: off\n"
    )
    cfg = load_config(Outer, path, ["trainer.eval_strategy=no", "inner.rate=2e-3"])
    assert cfg.trainer == {
        "save_strategy": "no",
        "learning_rate": 1e-5,
        "bf16": False,
        "report_to": "off",
        "eval_strategy": "no",
    }
    assert cfg.inner.rate == 2e-3


ACCELERATE_YAMLS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
# What each shipped launch config must say: distributed type, ZeRO stage, offload devices.
ACCELERATE_EXPECTED = {
    "ddp": ("MULTI_GPU", None, None),
    "zero2": ("DEEPSPEED", 2, "none"),
    "zero3": ("DEEPSPEED", 3, "none"),
    "zero3_offload": ("DEEPSPEED", 3, "cpu"),
}


def test_every_accelerate_config_is_known():
    assert {p.stem for p in ACCELERATE_YAMLS} == set(ACCELERATE_EXPECTED)


@pytest.mark.parametrize("path", ACCELERATE_YAMLS, ids=lambda p: p.name)
def test_accelerate_configs(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    load_config_from_file(str(path))  # accelerate's own parser: unknown top-level keys fail
    text = path.read_text()
    assert text.startswith(f"# accelerate launch --config_file configs/accelerate/{path.name} -m rlhf ")
    cfg = yaml.safe_load(text)
    kind, stage, offload = ACCELERATE_EXPECTED[path.stem]
    assert cfg["distributed_type"] == kind
    assert cfg["num_processes"] == 8
    assert cfg["num_machines"] == 1
    assert cfg["mixed_precision"] == "no"  # precision comes from trainer.bf16 / trainer.fp16
    ds = cfg.get("deepspeed_config") or {}
    # From the training arguments ("auto"): a value here would fight the stage config's trainer mapping.
    for key in ("gradient_accumulation_steps", "gradient_clipping"):
        assert key not in cfg, f"{path.name} sets {key}"
        assert key not in ds, f"{path.name} sets {key} in its DeepSpeed section"
    if kind != "DEEPSPEED":
        assert not ds
        return
    launch_options = {a.dest for a in launch_command_parser()._actions}
    assert set(ds) <= launch_options, f"unknown deepspeed_config keys {sorted(set(ds) - launch_options)}"
    assert ds["zero_stage"] == stage
    assert ds["offload_optimizer_device"] == offload
    assert ds["offload_param_device"] == offload
    if stage == 3:
        # Without it the saved weights are ZeRO shards that from_pretrained cannot read.
        assert ds["zero3_save_16bit_model"] is True
        assert ds["zero3_init_flag"] is True


def test_one_range_idiom_no_hand_written_range_checks():
    """Ranges are stated once, with `bounded(..., help=...)` (checked at load): no `__post_init__` compares a
    field alone with a number (a rule across fields, `do_sample and temperature <= 0`, is not a range)."""
    found = []
    for path in sorted((Path(__file__).resolve().parents[1] / "rlhf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.FunctionDef) and node.name == "__post_init__"):
                continue
            across = {id(c) for b in ast.walk(node) if isinstance(b, ast.BoolOp) for c in ast.walk(b)}
            for cmp in ast.walk(node):
                if isinstance(cmp, ast.Compare) and id(cmp) not in across:
                    sides = [cmp.left, *cmp.comparators]
                    on_field = any(isinstance(s, ast.Attribute) for s in sides)
                    numbers = [
                        s for s in sides if isinstance(s, ast.Constant) and type(s.value) in (int, float)
                    ]
                    if on_field and numbers:
                        found.append(f"{path.name}:{cmp.lineno}")
    assert found == []


def test_ranges_name_key_bound_and_value():
    with pytest.raises(ConfigError, match=r"'data.eval_fraction' must be >= 0 and < 1, got 1.0"):
        load_config(dpo.DPOStageConfig, None, ["data.eval_fraction=1.0"])
    assert load_config(dpo.DPOStageConfig, None, ["data.eval_fraction=0.995"]).data.eval_fraction == 0.995
    with pytest.raises(ConfigError, match=r"'trainer.learning_rate' must be > 0, got 0"):
        load_config(dpo.DPOStageConfig, None, ["trainer.learning_rate=0"])
    with pytest.raises(ConfigError, match=r"'x' must be >= 0, got -1"):
        Range(ge=0).check([1, -1], "x")
    assert "held out" in field_help(dpo.DPOData, "eval_fraction")
    assert field_help(dpo.DPOData, "split") == ""
    assert bounded(1, ge=0, help="h").metadata["help"] == "h"


def test_operational_keys_do_not_make_another_run(tmp_path):
    """Which engine answers (generation.url, its python, concurrency...) is not what the run computes: a
    config that differs only there resumes and is skipped by the loop; the backend itself is not such a key."""
    from rlhf.runs import RunDir, config_differences
    from rlhf.stages.generate import GenerateStageConfig

    keys = operational_keys(GenerateStageConfig)
    assert {"generation.url", "generation.python", "generation.concurrency"} <= keys
    assert "generation.backend" not in keys and "sampling.temperature" not in keys
    a = load_config(
        GenerateStageConfig, None, ["generation.backend=vllm", "generation.url=http://127.0.0.1:1"]
    )
    b = load_config(
        GenerateStageConfig, None, ["generation.backend=vllm", "generation.url=http://127.0.0.1:2"]
    )
    c = load_config(GenerateStageConfig, None, ["generation.backend=hf", "generation.url=http://127.0.0.1:2"])
    as_dict = lambda cfg: yaml.safe_load(dump_yaml(cfg))  # noqa: E731
    assert config_differences(as_dict(a), as_dict(b), GenerateStageConfig) == []
    assert config_differences(as_dict(a), as_dict(c), GenerateStageConfig) == ["generation.backend"]
    a.run.output_root = b.run.output_root = str(tmp_path)
    RunDir.prepare(a.run, "generate", a)  # started, never finished
    RunDir.prepare(b.run, "generate", b, resume=True)  # another engine URL: the same run, resumed
    with pytest.raises(Exception, match="generation.backend"):
        c.run.output_root = str(tmp_path)
        RunDir.prepare(c.run, "generate", c, resume=True)
