"""The layering rule holds on the real tree, and the checker does catch each kind of violation."""

import subprocess
import sys
import time
from pathlib import Path

from import_rules import check_tree

ROOT = Path(__file__).resolve().parents[1]


def test_the_tree_follows_the_import_rule():
    assert check_tree(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {
        "rlhf/__init__.py": "",
        "rlhf/stages/__init__.py": "",
        "labeling_ui/__init__.py": "",
        **files,
    }.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_the_checker_catches_a_stage_importing_a_stage(tmp_path):
    root = _tree(
        tmp_path,
        {
            "rlhf/stages/sft.py": "def load_path(): ...\n",
            "rlhf/stages/dpo.py": "from rlhf.stages.sft import load_path\n",
            "rlhf/stages/ppo.py": "from rlhf.stages import dpo\n",
        },
    )
    problems = check_tree(root)
    assert any("stage rlhf.stages.dpo imports another stage, rlhf.stages.sft" in p for p in problems)
    assert any("stage rlhf.stages.ppo imports another stage, rlhf.stages.dpo" in p for p in problems)
    assert len(problems) == 2


def test_the_checker_catches_library_to_stage_lazy_imports_and_cycles(tmp_path):
    root = _tree(
        tmp_path,
        {
            "rlhf/stages/generate.py": "import rlhf.callbacks\n",
            "rlhf/drift.py": "def f():\n    from rlhf.stages.generate import x\n",
            "rlhf/callbacks.py": "from rlhf import drift\n",
            "rlhf/ok.py": "def g():\n    import json  # lazy: only needed on the rare path\n",
            "labeling_ui/app.py": "from rlhf.stages import generate\n",
        },
    )
    problems = check_tree(root)
    assert any("rlhf/drift.py:2: import inside a function without" in p for p in problems)
    assert any("library module rlhf.drift imports the stage rlhf.stages.generate" in p for p in problems)
    assert any("library module labeling_ui.app imports the stage rlhf.stages.generate" in p for p in problems)
    cycle = [p for p in problems if p.startswith("import cycle")]
    assert cycle == ["import cycle: rlhf.callbacks -> rlhf.drift -> rlhf.stages.generate -> rlhf.callbacks"]
    assert not any("rlhf/ok.py" in p for p in problems)


def test_help_starts_without_loading_torch():
    code = "import sys, rlhf.cli; rlhf.cli.build_parser(); print('torch' in sys.modules)"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False" and time.perf_counter() - t0 < 5
