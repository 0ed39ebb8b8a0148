"""`rlhf loop`, `rlhf demo` and `rlhf lineage` (called by rlhf.cli)."""

from __future__ import annotations

import secrets
import time
from importlib import resources
from pathlib import Path

from rlhf.config import load_config
from rlhf.loop.config import LoopConfig
from rlhf.loop.lineage import lineage_text
from rlhf.loop.rounds import Loop, Waiting
from rlhf.loop.summary import table
from rlhf.quiet import third_party_to
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
        loop.say(f"loop finished: best policy {loop.state['best']}; lineage: rlhf lineage {loop.dir}")
    return 0


def demo_command(args) -> int:
    """One round of the whole loop on the embedded defaults, then the summary a newcomer needs."""
    t0 = time.perf_counter()
    with resources.as_file(resources.files("rlhf") / "demo" / "loop.yaml") as demo_yaml:
        cfg = load_config(LoopConfig, demo_yaml, args.overrides)
    loop, _ = run_loop(cfg, "the embedded demo config")
    print("\n" + table(loop.records), flush=True)
    rnd = loop.state["rounds"]["1"]
    compare_run = Path(rnd["compare_run"])
    password = demo_account(loop.store)
    arena = f"{cfg.run.name}-r1-arena"
    print(
        f"\nDPO vs SFT: the DPO policy wins {rnd['win_rate']:.0%} of reward-model battles "
        f"(95% CI {rnd['win_rate_ci95'][0]:.0%}-{rnd['win_rate_ci95'][1]:.0%}), KL {rnd['kl']:.2f} nats.\n"
        f"report:   {compare_run / 'report.html'}\n"
        f"lineage:  rlhf lineage {loop.dir}\n"
        f"judge the demo's blind arena yourself (loopback only; user '{DEMO_USER}', password '{password}'):\n"
        f"  rlhf label store={loop.store} project={arena} arena=true\n"
        f"  then: rlhf compare --leaderboard {arena} --store {loop.store}\n"
        f"demo finished in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return 0


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
