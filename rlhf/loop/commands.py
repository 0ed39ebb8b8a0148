"""`rlhf loop`, `rlhf demo` and `rlhf lineage` (called by rlhf.cli)."""

from __future__ import annotations

import secrets
import time
from importlib import resources
from pathlib import Path

from rlhf.compare import read_result
from rlhf.config import load_config
from rlhf.loop.collect import Waiting
from rlhf.loop.config import LoopConfig
from rlhf.loop.lineage import lineage_text
from rlhf.loop.rounds import Loop
from rlhf.loop.summary import table
from rlhf.models import resolve_model_path
from rlhf.quiet import third_party_to
from rlhf.runs import declared_output
from rlhf.store import Store

DEMO_USER = "demo"


def run_loop(cfg: LoopConfig, source: str) -> tuple[Loop, bool]:
    """Runs the loop with third-party chatter in runs/<loop>/loop.log. Returns (loop, finished)."""
    loop = Loop(cfg, source=source)
    with third_party_to(loop.dir / "loop.log"):
        try:
            loop.run()
        except Waiting as w:
            loop.say(str(w))
            return loop, False
    return loop, True


def loop_command(args) -> int:
    cfg = load_config(LoopConfig, args.config, args.overrides)
    loop, finished = run_loop(cfg, args.config or "the loop's defaults")
    print(table(loop.records), flush=True)
    if finished:
        for r, rnd in sorted(loop.state["rounds"].items(), key=lambda kv: int(kv[0])):
            if rnd.get("compare_run"):
                print(f"\nround {r}:\n  " + "\n  ".join(evidence_lines(rnd, Path(rnd["compare_run"]))))
        loop.say(f"loop finished: best policy {loop.state['best']}; lineage: rlhf lineage {loop.dir}")
    return 0


def demo_command(args) -> int:
    """One round of the whole loop on the embedded defaults, then the summary a newcomer needs. Set-up (the
    built-in policy converted from its GGUF file once, then cached) is timed apart from the round."""
    t0 = time.perf_counter()
    with resources.as_file(resources.files("rlhf") / "demo" / "loop.yaml") as demo_yaml:
        cfg = load_config(LoopConfig, demo_yaml, args.overrides)
    resolve_model_path(cfg.policy)
    setup, t0 = time.perf_counter() - t0, time.perf_counter()
    loop, _ = run_loop(cfg, "the embedded demo config")
    print("\n" + table(loop.records), flush=True)
    rnd = loop.state["rounds"]["1"]
    compare_run = Path(rnd["compare_run"])
    password = demo_account(loop.store)
    arena = f"{cfg.run.name}-r1-arena"
    print("\n" + "\n".join(evidence_lines(rnd, compare_run)), flush=True)
    print(
        f"report:   {compare_run / 'report.html'}\n"
        f"lineage:  rlhf lineage {loop.dir}\n"
        f"judge the demo's blind arena yourself (loopback only; user '{DEMO_USER}', password '{password}'):\n"
        f"  rlhf label store={loop.store} project={arena} arena=true\n"
        f"  then: rlhf compare --leaderboard {arena} --store {loop.store}\n"
        f"demo finished: the round in {time.perf_counter() - t0:.0f} s (set-up before it {setup:.0f} s)",
        flush=True,
    )
    return 0


def evidence_lines(rnd: dict, compare_run: Path) -> list[str]:
    """A round's verdict and every piece of evidence beside it, each with its interval and its source."""
    result = read_result(declared_output(compare_run, "compare_json"))
    new = result.names[-1]
    vs, kl = result.checkpoints[new].vs_baseline, result.checkpoints[new].kl
    verdict = rnd["verdict"]
    label = {
        "human slice": "held-out human slice, never trained on",
        "blind arena votes": "blind arena votes on held-out prompts",
    }.get(verdict["evidence"], verdict["evidence"])
    lines = [f"verdict ({label}): {verdict['text']}"]
    agreement = result.human_agreement or {}
    if verdict["evidence"] != "human slice" and agreement.get(new) is not None:
        mine, theirs = agreement[new].implicit_reward, agreement.get(result.baseline)
        against = f" vs {theirs.implicit_reward.rate:.0%} for {result.baseline}" if theirs is not None else ""
        lines.append(
            f"human slice (implicit reward, never trained on): {new} agrees with {mine.rate:.0%} "
            f"[{mine.ci95[0]:.0%}, {mine.ci95[1]:.0%}] of {mine.n} held-out pairs{against}"
        )
    if rnd.get("oracle"):
        lines.append(f"oracle (the simulated assessors' noise-free taste): {rnd['oracle']['text']}")
    if vs is not None:
        lo, hi = vs.win_rate_ci95
        lines.append(
            f"reward model (trained on every label but the slice): {new} wins {vs.win_rate:.0%} [{lo:.0%}, "
            f"{hi:.0%}] of battles against {result.baseline} on {result.prompts} held-out prompts"
        )
    if kl is not None:
        lines.append(
            f"KL({new} || {result.reference}): {kl.mean:.2f} [{kl.ci95[0]:.2f}, {kl.ci95[1]:.2f}] nats per answer"
        )
    return lines


def demo_account(store_path: str) -> str:
    """A demo-only assessor on the demo's own store, with a fresh password each time the demo runs."""
    password = secrets.token_urlsafe(9)
    with Store(store_path, create=False) as store:
        if DEMO_USER in {u["username"] for u in store.list_users()}:
            store.set_password(DEMO_USER, password)
        else:
            store.add_user(DEMO_USER, password)
    return password


def lineage_command(args) -> int:
    run = Path(args.run)
    print(lineage_text(run, Path(args.root) if args.root else run.parent))
    return 0
