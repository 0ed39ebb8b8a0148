"""A stand-in for vLLM's OpenAI-compatible server (the routes rlhf uses), for the engine tests where vLLM
is not installed: in a thread (`FakeEngine`), or as a process started like vLLM's server (run as a script
with vLLM's arguments: `--model`, `--port`, ...). Answers are a pure function of the request: sample c of
a request gets ids [5, 6, 7 + c] and then the first stop id (finish "stop") if max_tokens allows, each
token with log-prob -0.5; every request is recorded (as a process: in the file $FAKE_VLLM_LOG, if set; with $FAKE_VLLM_VARY=1 the
last id is 7 + c + seed % 3, so seeded rows differ). The dev routes rlhf uses are there too
(`/collective_rpc` reload_weights: recorded in state["weights"], `/reset_prefix_cache`)."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def answer(body: dict, vary: bool = False) -> dict:
    choices = []
    for c in range(body.get("n", 1)):
        ids = [5, 6, 7 + c + (body.get("seed", 0) % 3 if vary else 0)]
        stop = body.get("stop_token_ids") or [2]
        finish = "length"
        if body["max_tokens"] > len(ids):
            ids, finish = [*ids, stop[0]], "stop"
        ids = ids[: body["max_tokens"]]
        words = [f"w{t}" for t in ids if t not in stop]
        choices.append(
            {
                "index": c,
                "text": " " + " ".join(words),
                "finish_reason": finish,
                "logprobs": {"tokens": [f"token_id:{t}" for t in ids], "token_logprobs": [-0.5] * len(ids)},
            }
        )
    return {"choices": choices}


def make_handler(state: dict):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code: int, payload) -> None:
            data = json.dumps(payload).encode() if not isinstance(payload, str) else payload.encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                return self._send(200, "")
            if self.path == "/v1/models":
                data = [{"id": "base", "root": state["model"], "parent": None}]
                data += [{"id": n, "root": p, "parent": "base"} for n, p in state["adapters"].items()]
                return self._send(200, {"data": data})
            return self._send(404, {"error": "no route"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
            state["requests"].append((self.path, body))
            if state.get("log"):  # a process: its requests are appended to a file the test reads
                with open(state["log"], "a") as f:
                    f.write(json.dumps([self.path, body]) + "\n")
            if self.path == "/v1/load_lora_adapter":
                state["adapters"][body["lora_name"]] = body["lora_path"]
                return self._send(200, "Success")
            if self.path == "/v1/unload_lora_adapter":
                state["adapters"].pop(body["lora_name"], None)
                return self._send(200, "Success")
            if self.path == "/collective_rpc" and body.get("method") == "reload_weights":
                state["weights"] = body["kwargs"]["weights_path"]
                return self._send(200, {"results": [None]})
            if self.path == "/reset_prefix_cache":
                return self._send(200, "")
            if self.path == "/v1/completions":
                if body["model"] != "base" and body["model"] not in state["adapters"]:
                    return self._send(404, {"error": f"model {body['model']} does not exist"})
                return self._send(200, answer(body, vary=bool(state.get("vary"))))
            return self._send(404, {"error": "no route"})

    return Handler


def fake_engine_python(directory: Path) -> str:
    """An executable standing in for vLLM's python: it starts this fake server (generation.python=...)."""
    exe = Path(directory) / "python"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


class FakeEngine:
    """The fake server in a thread, serving `model` (the resolved base path it reports as `root`)."""

    def __init__(self, model: str):
        self.state = {"model": model, "weights": model, "adapters": {}, "requests": []}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def completions(self) -> list[dict]:
        return [b for path, b in self.state["requests"] if path == "/v1/completions"]


if __name__ == "__main__":  # started like vLLM's server: python fake_vllm.py -m vllm... --model M --port P
    parser = argparse.ArgumentParser()
    parser.add_argument("-m")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    state = {"model": args.model, "weights": args.model, "adapters": {}, "requests": []}
    state["log"] = os.environ.get("FAKE_VLLM_LOG")
    state["vary"] = os.environ.get("FAKE_VLLM_VARY") == "1"
    ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state)).serve_forever()
