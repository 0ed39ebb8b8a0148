"""The labeling app's remaining holes, each probed against the served app on loopback as an assessor would:
gold notes and arena names render as text (a real browser); another user's session hash gets nothing (raw
HTTP with each user's cookie); free text over its limit is refused with the limit named and nothing stored;
the unsafe flag is typed; wrong logins neither stall a logged-in user nor go on unlimited; only allow-listed
routes are served."""

import ast
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import httpx
import pytest
from fastapi import HTTPException
from gradio_client import Client

from labeling_ui.app import AppSettings, LabelHandlers
from labeling_ui.browser import free_port, login
from labeling_ui.gate import ALLOWED_ROUTES, CLOSED_ROUTES, served_routes, unreviewed_routes
from labeling_ui.render import safe_markdown, status_markdown
from labeling_ui.sessions import LoginGuard, SessionGuard
from rlhf.stages.label import LabelStageConfig, launch
from rlhf.store import Store, TextLimits

PW = "password123"
FORM = (
    '<img src=x onerror="window.__xss = 5"><form action="http://127.0.0.1:9/steal" id="phish">'
    '<input type="password" name="pw"><button>Verify your account</button></form> Paris is the capital.'
)
EVIL_MODEL = '<img src=x onerror="window.__xss = 6">runs/<b>ckpt-a</b>'


def ranking_items(n: int = 4) -> list[dict]:
    return [
        {
            "external_id": f"i{i}",
            "prompt": f"question {i}",
            "candidates": [
                {"text": f"answer {i}.{j} words", "source": {"policy": f"m{j}"}} for j in range(3)
            ],
        }
        for i in range(n)
    ]


class Served:
    """An app launched on a free loopback port over a fresh store (closed by `close`)."""

    def __init__(self, tmp_path, task: str, items: list[dict], *, users=("ann", "bob"), admins=(), **cfg):
        db = str(tmp_path / f"{task}.db")
        s = Store(db)
        s.create_project("p", task, priority="fifo")
        s.add_items("p", items)
        for u in users:
            s.add_user(u, PW)
        for u in admins:
            s.add_user(u, PW, role="admin")
        s.close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.app, self.store = launch(
            LabelStageConfig(store=db, project="p", port=self.port, **cfg), block=False
        )

    def http(self, user: str | None = None, **headers) -> httpx.Client:
        """A raw HTTP client, logged in as `user` (its cookie) when given."""
        c = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        if user is not None:
            r = c.post("login", data={"username": user, "password": PW})
            assert r.status_code == 200, r.text
        return c

    def client(self, user: str):
        return Client(self.url, auth=(user, PW), verbose=False)

    def close(self) -> None:
        self.app.close()
        self.store.close()


@pytest.fixture
def ranking(tmp_path):
    served = Served(tmp_path, "ranking", ranking_items(), admins=("lead",))
    yield served
    served.close()


def fn_index(http: httpx.Client, api_name: str) -> int:
    deps = http.get("config").json()["dependencies"]
    return next(d["id"] for d in deps if d.get("api_name") == api_name)


def read_stream(http: httpx.Client, session_hash: str, until: str = "process_completed") -> str:
    """queue/data for a session hash, read until `until` shows (bounded by the client's timeout)."""
    seen = []
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session_hash}) as r:
        assert r.status_code == 200, r.status_code
        for line in r.iter_lines():
            seen.append(line)
            if until in line:
                break
    return "\n".join(seen)


# -- 1. every text reaches the page through one escaping path --------------------------------------------------


@pytest.mark.slow
def test_gold_note_and_arena_models_render_as_text_in_the_browser(tmp_path, browser):
    items = [
        {
            "external_id": "g",
            "prompt": "Capital of France?",
            "candidates": [
                {"text": "Paris.", "source": {"policy": EVIL_MODEL}},
                {"text": "Lyon. See [x](javascript:&#106;alert(1)).", "source": {"policy": "runs/b"}},
            ],
            "gold": {"best": 0, "note": FORM},
        },
        {"external_id": "k", "prompt": "Two plus two?", "candidates": [{"text": "Four."}, {"text": "Five."}]},
    ]
    served = Served(tmp_path, "pairwise", items, users=("ann",), arena=True)
    try:
        page = login(browser, served.port, "ann", {"width": 1400, "height": 1200})
        page.wait_for_function(
            "document.querySelector('#prompt') && document.querySelector('#prompt').innerText.includes('France')",
            timeout=30_000,
        )
        lyon = next(k for k in "AB" if "Lyon" in page.inner_text(f"#cand_{k}"))
        # a removed link target is escaped once: its note reads as typed, not "&amp;#106;"
        assert "(link removed: javascript:&#106;alert(1" in page.inner_text(f"#cand_{lyon}")
        page.click(f"#pick_{'B' if lyon == 'A' else 'A'}")  # Paris: the gold answer
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('Gold check')", timeout=30_000
        )
        status = page.inner_text("#status")
        assert "Gold check: you matched the expected answer" in status
        assert '<form action="http://127.0.0.1:9/steal" id="phish">' in status  # the note shows as text
        assert "Revealed:" in status
        assert '<img src=x onerror="window.__xss = 6">runs/<b>ckpt-a</b>' in status  # so does the model
        rendered = page.evaluate(
            "document.querySelectorAll('#status form, #status img, #status input, #status button, #status b')"
            ".length"
        )
        assert rendered == 0
        assert page.evaluate("document.querySelectorAll('input[type=password]').length") == 0
        assert page.evaluate("window.__xss") is None
    finally:
        served.close()


def test_one_escaping_path_for_the_page():
    """No module of the app escapes HTML by itself: everything goes through labeling_ui.render."""
    root = Path(__file__).resolve().parents[1] / "labeling_ui"
    offenders = []
    for path in sorted(root.glob("*.py")):
        if path.name == "render.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n == "html" or n.startswith("html.") for n in names):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_status_lines_quote_untrusted_text_as_text():
    line = status_markdown(
        "Saved. Gold check: the expected best answer was A. " + FORM + "\n\n# not a heading"
    )
    assert "<" not in line
    assert "&lt;form action=" in line
    assert line.startswith("**Saved. Gold check:")
    assert "\n" not in line
    assert "(link removed: javascript:&amp;#106;alert(1)" in safe_markdown("[x](javascript:&#106;alert(1))")


# -- 2. every session path is bound to the logged-in user ------------------------------------------------------


def test_another_users_session_hash_reads_runs_and_closes_nothing(ranking):
    lead, bob, anon = ranking.http("lead"), ranking.http("bob"), ranking.http()
    lead_hash = "leadsession01"
    join = {"data": [], "fn_index": fn_index(lead, "admin_refresh"), "session_hash": lead_hash}
    join |= {"event_data": None, "trigger_id": None}
    assert lead.post("gradio_api/queue/join", json=join).status_code == 200
    # the admin's refresh (users, queue, per-assessor stats) waits in the queue under lead's hash
    stolen = bob.get("gradio_api/queue/data", params={"session_hash": lead_hash})
    assert stolen.status_code == 403
    assert "belongs to another user" in stolen.json()["detail"]
    assert "bob" not in stolen.text
    assert bob.get(f"gradio_api/heartbeat/{lead_hash}").status_code == 403  # closing it would end lead's run
    assert bob.post("gradio_api/queue/join", json=join).status_code == 403
    cancel = {"session_hash": lead_hash, "fn_index": join["fn_index"], "event_id": "x"}
    assert bob.post("gradio_api/cancel", json=cancel).status_code == 403
    assert anon.get("gradio_api/queue/data", params={"session_hash": lead_hash}).status_code == 401
    assert anon.get(f"gradio_api/heartbeat/{lead_hash}").status_code == 401
    # the owner still gets the result: it was there to steal
    owned = read_stream(lead, lead_hash)
    assert "process_completed" in owned
    assert '"bob"' in owned  # the users table


def test_the_diff_event_refuses_another_users_session(ranking):
    ann = ranking.client("ann")
    ann.predict(api_name="/load")
    mine = ann.predict(True, api_name="/diff")
    assert "words" in mine["value"]  # ann's candidates, word by word
    bob = ranking.http("bob")
    for route, body in (
        ("gradio_api/run/diff", {"data": [None, True], "session_hash": ann.session_hash}),
        (
            "gradio_api/queue/join",
            {"data": [None, True], "fn_index": fn_index(bob, "diff"), "session_hash": ann.session_hash},
        ),
    ):
        r = bob.post(route, json=body)
        assert r.status_code == 403, route
        assert "words" not in r.text
    own = bob.post("gradio_api/run/diff", json={"data": [None, True], "session_hash": "bobsession01"})
    assert own.status_code == 200  # bob's own session works (nothing loaded yet: an empty view)
    assert "answer" not in own.text


def test_diff_handler_checks_the_session_state_too(tmp_path):
    with Store(str(tmp_path / "s.db")) as store:
        on = LabelHandlers(store, AppSettings(project="p"), SessionGuard(store), ui=None)
        anns_state = {"user": "ann", "texts": ["secret a", "secret b"]}
        with pytest.raises(gr.Error, match="belongs to another user"):
            on.on_diff(anns_state, True, gr.Request(username="bob"))
        assert "secret" in on.on_diff(anns_state, True, gr.Request(username="ann"))["value"]


# -- 3. free text has limits, named in the refusal ---------------------------------------------------------------


def test_oversized_text_is_refused_with_the_limit_and_nothing_is_stored(ranking):
    ann = ranking.client("ann")
    ann.predict(api_name="/load")
    out = ann.predict(None, "A,B,C", "r" * 10_001, False, None, "", api_name="/submit")
    assert "Not saved: the rationale is too long: 10,001 characters, the limit is 10,000" in out[2]
    out = ann.predict(None, "A,B,C", "", False, "A", "e" * 20_001, api_name="/submit")
    assert "the improved response is too long: 20,001 characters, the limit is 20,000" in out[2]
    out = ann.predict("s" * 2_001, api_name="/skip")
    assert "the skip reason is too long: 2,001 characters, the limit is 2,000" in out[2]
    big = ranking.http("ann")
    body = {"data": [None, None, "A,B,C", "r" * 5_000_000, False, None, ""], "session_hash": "annraw01"}
    r = big.post("gradio_api/run/submit", json=body)
    assert r.status_code == 413
    assert "at most" in r.json()["detail"]
    assert ranking.store.annotations("p") == []
    assert all(len(it["candidates"]) == 3 for it in ranking.store.items("p"))
    assert {a["status"] for a in ranking.store.assignments("p")} == {"leased"}
    # at the limits, with hiding control characters removed: stored
    out = ann.predict(
        None, "A,B,C", "fine\u202e\x00" + "r" * 9_990, False, "B", "e" * 20_000, api_name="/submit"
    )
    assert "Saved." in out[2]
    (stored,) = ranking.store.annotations("p")
    assert stored["rationale"] == "fine" + "r" * 9_990


def test_limits_are_settings_of_the_served_app(tmp_path):
    served = Served(tmp_path, "ranking", ranking_items(2), users=("ann",), limits=TextLimits(rationale=40))
    try:
        ann = served.client("ann")
        ann.predict(api_name="/load")
        out = ann.predict(None, "A,B,C", "r" * 41, False, None, "", api_name="/submit")
        assert (
            "the rationale is too long: 41 characters, the limit is 40 (setting limits.rationale)" in out[2]
        )
        assert served.store.annotations("p") == []
    finally:
        served.close()


# -- 4. the unsafe flag is typed ---------------------------------------------------------------------------------


def test_the_unsafe_flag_takes_true_or_false_only(ranking):
    ann = ranking.client("ann")
    ann.predict(api_name="/load")
    for value in ("false", "0", "off", "true", 1):
        out = ann.predict(None, "A,B,C", "", value, None, "", api_name="/submit")
        assert "the unsafe flag must be true or false" in out[2], value
    assert ranking.store.annotations("p") == []
    ann.predict(None, "A,B,C", "", False, None, "", api_name="/submit")
    ann.predict(None, "A,B,C", "", True, None, "", api_name="/submit")
    assert [a["flagged_unsafe"] for a in ranking.store.annotations("p")] == [False, True]


# -- 5. logins: off the event loop, rate-limited per address -----------------------------------------------------

ATTACKER = """
import sys, threading, time, httpx, json
url, seconds = sys.argv[1], float(sys.argv[2])
codes, details, lock = {}, set(), threading.Lock()
def attack(i):
    client, n, end = httpx.Client(base_url=url, timeout=30), 0, time.monotonic() + seconds
    while time.monotonic() < end and n < 2000:
        n += 1  # a new (unknown) name each time: the per-username lockout never spares the hash
        r = client.post("login", data={"username": f"nobody{i}x{n}", "password": "wrong-password"})
        with lock:
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 429:
                details.add(r.json()["detail"].split(" in ")[0])
threads = [threading.Thread(target=attack, args=(i,)) for i in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"codes": codes, "details": sorted(details)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("limited", [True, False], ids=["rate-limited", "every-login-hashed"])
def test_wrong_logins_do_not_slow_a_logged_in_user(tmp_path, limited):
    cfg = {} if limited else {"login_failures_per_address": 1_000_000}
    served = Served(tmp_path, "ranking", ranking_items(2), users=("ann",), **cfg)
    try:
        ann = served.http("ann")
        diff = {"data": [None, True], "session_hash": "annsession01"}

        def latencies(n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                assert ann.post("gradio_api/run/diff", json=diff).status_code == 200
                out.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.01)
            return sorted(out)

        idle = latencies(60)
        # three threads in another process (as attackers are) send wrong logins for at most 20 s
        attack = subprocess.Popen(
            [sys.executable, "-c", ATTACKER, served.url, "20"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0)
        busy = latencies(150)
        attack.terminate()
        out, _ = attack.communicate(timeout=30)
    finally:
        served.close()
    p95 = busy[int(0.95 * len(busy))]
    print(
        f"idle median {statistics.median(idle):.1f} ms; under attack median {statistics.median(busy):.1f}, p95 {p95:.1f} ms"
    )
    assert p95 < 50, (p95, busy)
    if out:  # the attacker's tally (absent when terminated before it printed)
        tally = json.loads(out)
        assert tally["codes"].get("400", 0) >= 1
        if limited:
            assert tally["details"] == ["Too many failed logins from your address; try again"]


def test_login_attempts_are_limited_per_client_address(tmp_path):
    served = Served(tmp_path, "ranking", ranking_items(1), users=("ann",), login_failures_per_address=3)
    try:
        # uvicorn takes the client address from X-Forwarded-For when the proxy is 127.0.0.1
        eve, other = (
            served.http(**{"X-Forwarded-For": "10.0.0.7"}),
            served.http(**{"X-Forwarded-For": "10.0.0.8"}),
        )
        wrong = [{"username": name, "password": "wrong-password"} for name in ("nobody", "ghost", "ann")]
        assert [eve.post("login", data=d).status_code for d in wrong] == [400, 400, 400]
        blocked = eve.post("login", data={"username": "ann", "password": PW})  # even the right password
        assert blocked.status_code == 429
        assert blocked.json()["detail"].startswith("Too many failed logins from your address; try again in ")
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert other.post("login", data={"username": "ann", "password": PW}).status_code == 200
    finally:
        served.close()


def test_password_checks_run_in_a_bounded_pool_off_the_event_loop(tmp_path):
    with Store(str(tmp_path / "l.db")) as store:
        store.add_user("ann", PW)
        threads = []
        authenticate = store.authenticate

        def recorded(user, password):
            threads.append(threading.current_thread().name)
            return authenticate(user, password)

        store.authenticate = recorded
        guard = LoginGuard(store, 5, 300, workers=1, max_waiting=1)

        async def two_logins():
            return await asyncio.gather(
                guard.check("ann", PW), guard.check("ann", PW), return_exceptions=True
            )

        first, second = asyncio.run(two_logins())
        guard.close()
    assert first is True
    assert isinstance(second, HTTPException)
    assert second.status_code == 429
    assert second.detail == "Too many logins are being checked right now; try again in 1 s."
    assert [name.startswith("rlhf-login") for name in threads] == [True]


def test_a_hash_everyone_could_share_is_refused(ranking):
    ann = ranking.http("ann")
    assert ann.get("gradio_api/queue/data", params={"session_hash": ""}).status_code == 400
    assert ann.post("gradio_api/run/diff", json={"data": [None, True], "session_hash": ""}).status_code == 400
    assert ann.post("gradio_api/run/diff", json={"data": [None, True], "session_hash": 7}).status_code == 400


@pytest.mark.slow
def test_the_login_page_says_when_to_try_again(tmp_path, browser):
    served = Served(tmp_path, "ranking", ranking_items(1), users=("ann",), login_failures_per_address=2)
    try:
        for _ in range(2):
            page = login(browser, served.port, "ann", password="wrong-password")
            page.get_by_text("Incorrect Credentials").wait_for(timeout=30_000)
        page = login(browser, served.port, "ann", password=PW)
        page.wait_for_selector("#login_wait", timeout=30_000)
        assert "try again in" in page.inner_text("#login_wait")
    finally:
        served.close()


# -- 6. only allow-listed routes are served ----------------------------------------------------------------------


def concrete(route: str) -> tuple[str, str]:
    method, template = route.split(" ", 1)
    path = template
    for part in template.split("{")[1:]:
        path = path.replace("{" + part.split("}")[0] + "}", "x")
    return method, path


def test_served_routes_match_the_allow_list_and_the_rest_answer_404(ranking):
    server = ranking.app.server_app
    assert unreviewed_routes(server) == []
    served = set(served_routes(server))
    assert set(ALLOWED_ROUTES) <= served  # no stale entry
    ann = ranking.http("ann")
    closed = sorted(r for r in served if r not in ALLOWED_ROUTES)
    assert "POST /gradio_api/process_recording" in closed
    for route in closed:
        method, path = concrete(route)
        r = ann.request(method, path, content=b"x" * 1000)
        assert r.status_code == 404, route
    recording = ann.post(
        "gradio_api/process_recording", files={"data": ("x.webm", b"\0" * 20_000_000, "video/webm")}
    )
    assert recording.status_code == 404  # answered before the 20 MB are read
    assert "does not serve" in recording.text
    assert {r for rs in CLOSED_ROUTES.values() for r in rs}.isdisjoint(ALLOWED_ROUTES)


def test_a_new_upload_route_fails_the_review_and_stays_closed(ranking):
    server = ranking.app.server_app
    calls = []

    async def upload_chunk():  # as a Gradio upgrade might add
        calls.append(1)
        return {"stored": True}

    server.add_api_route("/gradio_api/upload_chunk", upload_chunk, methods=["POST"])
    assert unreviewed_routes(server) == ["POST /gradio_api/upload_chunk"]  # what fails the test above
    r = ranking.http("ann").post("gradio_api/upload_chunk", content=b"<script>x</script>")
    assert r.status_code == 404
    assert calls == []
