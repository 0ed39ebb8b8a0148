"""Run rlhf stages in subprocesses, plainly or under `accelerate launch`, the way users start them.

    proc = accelerate_launch(CONFIGS / "zero2.yaml", "dpo", "configs/dpo.yaml", {"run.name": "x"},
                             num_processes=2, env=offline_env(tmp_path / "cache"), cwd=tmp_path)
    check(proc)
    losses(tmp_path / "runs" / "x")   # [(step, loss), ...] from metrics.jsonl

- The shipped accelerate YAMLs are used unchanged; the number of processes and the rendezvous port are
  overridden on the command line (`--num_processes`, `--main_process_port`), as their headers tell users to.
- `python -m accelerate.commands.launch` (not the `accelerate` script) and `-m rlhf` (not the `rlhf` script),
  so the interpreter running the tests is the one that runs every rank.
- A timeout kills the launcher and every process below it (torchrun's workers included).
- On a machine without CUDA, the first DeepSpeed launch JIT-compiles DeepSpeed's `deepspeed_shm_comm` op
  (g++ and ninja; cached in ~/.cache/torch_extensions, or $TORCH_EXTENSIONS_DIR): allow a few minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
ACCELERATE_CONFIGS = CONFIGS / "accelerate"

Overrides = Mapping[str, object] | Iterable[str]

# Set by a launcher around us (or a previous launch in this process): a child must start from scratch.
_DISTRIBUTED_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (for the rendezvous of one launch)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(
    cache_dir: str | Path | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """os.environ without distributed/accelerate state, offline, with RLHF_CACHE at `cache_dir`."""
    env = {
        k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_VARS and not k.startswith("ACCELERATE_")
    }
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    if cache_dir is not None:
        env["RLHF_CACHE"] = str(cache_dir)
    env.update(extra or {})
    return env


def stage_args(stage: str, config_path: str | Path | None = None, overrides: Overrides = ()) -> list[str]:
    """`-m rlhf <stage> [--config PATH] key=value ...`; overrides as a mapping or as `key=value` strings."""
    items = (
        [f"{k}={_yaml_scalar(v)}" for k, v in overrides.items()]
        if isinstance(overrides, Mapping)
        else list(overrides)
    )
    return ["-m", "rlhf", stage, *(["--config", str(config_path)] if config_path else []), *items]


def _yaml_scalar(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def run_command(
    cmd: list[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run `cmd`, stdout+stderr together as text; on timeout kill it and everything it started, and raise
    subprocess.TimeoutExpired with what it had printed."""
    proc = subprocess.Popen(
        cmd,
        env=dict(env) if env is not None else offline_env(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        out, _ = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, output=out) from None
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process below it. torchrun starts each worker in a session of its own,
    so killing the launcher's process group alone would leave the ranks running (and holding our pipe)."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def plain_launch(
    stage: str,
    config_path: str | Path | None = None,
    overrides: Overrides = (),
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`python -m rlhf <stage> ...` in one process: the reference for a distributed run."""
    return run_command(
        [sys.executable, *stage_args(stage, config_path, overrides)], env=env, cwd=cwd, timeout=timeout
    )


def accelerate_launch(
    config_yaml: str | Path,
    stage: str,
    config_path: str | Path | None = None,
    overrides: Overrides = (),
    *,
    num_processes: int | None = None,
    port: int | None = None,
    launch_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file CONFIG [--num_processes N] --main_process_port P -m rlhf <stage> ...`.

    `num_processes` (and `launch_args`, e.g. ["--num_machines", "1"]) override the YAML's values; the port
    is a free one unless given."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_yaml)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    cmd += ["--main_process_port", str(port or free_port()), *launch_args]
    return run_command([*cmd, *stage_args(stage, config_path, overrides)], env=env, cwd=cwd, timeout=timeout)


def check(proc: subprocess.CompletedProcess, tail: int = 6000) -> subprocess.CompletedProcess:
    """Assert the launch exited 0; otherwise fail showing the command and the end of its output."""
    if proc.returncode != 0:
        out = proc.stdout or ""
        raise AssertionError(
            f"exit status {proc.returncode}: {' '.join(map(str, proc.args))}\n...\n{out[-tail:]}"
        )
    return proc


def metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(run_dir: str | Path) -> list[tuple[int, float]]:
    """(step, loss) for every logged training step of a run (the trainer's summary line has no `loss`)."""
    return [(m["step"], m["loss"]) for m in metrics(run_dir) if "loss" in m]


def max_loss_diff(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> float:
    """Largest per-step |loss difference|; the two runs must have logged the same steps."""
    assert [s for s, _ in a] == [s for s, _ in b], f"logged steps differ: {a} vs {b}"
    return max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True))
