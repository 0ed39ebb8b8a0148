"""The Gradio app end to end through gradio_client: two logged-in assessors, attribution, auth, forgery."""

import time
import urllib.request

import pytest

from labeling_ui.browser import free_port
from rlhf.stages.label import LabelStageConfig, launch
from rlhf.store.service import Store

PW = "password123"


@pytest.fixture
def served(tmp_path):
    db = str(tmp_path / "app.db")
    s = Store(db)
    s.create_project("demo", "ranking", overlap=1, guidelines="## Rules\nBe **fair**.")
    s.add_items(
        "demo",
        [
            {
                "external_id": f"i{i}",
                "prompt": f"question {i}",
                "candidates": [{"text": f"answer {i}.{j}", "source": {"policy": f"m{j}"}} for j in range(3)],
            }
            for i in range(6)
        ],
    )
    for u in ("ann", "bob"):
        s.add_user(u, PW)
    s.add_user("lead", PW, role="admin")
    s.close()
    port = free_port()
    app, store = launch(
        LabelStageConfig(store=db, project="demo", port=port, max_failed_logins=3), block=False
    )
    yield f"http://127.0.0.1:{port}/", store
    app.close()
    store.close()


def client(url, user):
    from gradio_client import Client

    return Client(url, auth=(user, PW), verbose=False)


def test_two_assessors_label_different_items_with_correct_attribution(served):
    url, store = served
    ann, bob = client(url, "ann"), client(url, "bob")
    a_view, b_view = ann.predict(api_name="/load"), bob.predict(api_name="/load")
    assert a_view[0] != b_view[0]  # different prompts: different items
    assert "Logged in as **ann**" in a_view[-1]
    assert "Logged in as **bob**" in b_view[-1]
    for c in (ann, bob):
        out = c.predict(None, "A,B,C", "looks right", False, None, "", api_name="/submit")
        assert "Saved." in out[2]
    out = ann.predict(None, "C,C,A", "", False, None, "", api_name="/submit")
    assert "only one rank" in out[2]
    anns = store.annotations("demo")
    assert sorted(a["assessor"] for a in anns) == ["ann", "bob"]
    assert len({a["item_id"] for a in anns}) == 2
    assert {a["rationale"] for a in anns} == {"looks right"}


def test_unauthenticated_and_wrong_password_get_nothing(served):
    from gradio_client import Client

    url, _ = served
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises AuthenticationError / ValueError by version
        Client(url, verbose=False)
    with pytest.raises(ValueError):
        Client(url, auth=("ann", "wrong-password"), verbose=False)
    for path in ("config", "gradio_api/info"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + path)
        assert e.value.code == 401


def test_lockout_after_repeated_failures(served):
    from gradio_client import Client

    url, _ = served
    for _ in range(3):
        with pytest.raises(ValueError):
            Client(url, auth=("bob", "nope-nope"), verbose=False)
    with pytest.raises(ValueError):  # locked: the right password is refused for a while
        Client(url, auth=("bob", PW), verbose=False)
    assert client(url, "ann").predict(api_name="/load")[0]  # others are not affected


def test_crafted_calls_cannot_submit_without_a_lease_or_reach_admin(served):
    url, store = served
    bob = client(url, "bob")
    # a submit with no item leased in this session stores nothing; it just serves the next item
    out = bob.predict(None, "A,B,C", "", False, None, "", api_name="/submit")
    assert store.annotations("demo") == []
    assert out[0]
    with pytest.raises(Exception, match="Admins only"):
        bob.predict(api_name="/admin_refresh")
    lead = client(url, "lead")
    queue, *_ = lead.predict(api_name="/admin_refresh")
    assert queue["data"][0][0] == 6


def test_arena_reveals_models_only_after_the_vote(tmp_path):
    db = str(tmp_path / "arena.db")
    s = Store(db)
    s.create_project("arena", "pairwise", overlap=1)
    s.add_items(
        "arena",
        [
            {
                "external_id": "x",
                "prompt": "say hi",
                "candidates": [
                    {"text": "hi", "source": {"policy": "runs/ckpt-a"}},
                    {"text": "hello", "source": {"policy": "runs/ckpt-b"}},
                ],
            }
        ],
    )
    s.add_user("ann", PW)
    s.close()
    port = free_port()
    app, store = launch(LabelStageConfig(store=db, project="arena", port=port, arena=True), block=False)
    try:
        c = client(f"http://127.0.0.1:{port}/", "ann")
        before = c.predict(api_name="/load")
        assert "ckpt" not in str(before)  # nothing about the models before the vote
        out = c.predict("A", "", "", False, None, "", api_name="/submit")
        shown_a = "ckpt-a" if before[3]["value"].split("\n\n", 1)[1] == "hi" else "ckpt-b"
        assert f"A = runs/{shown_a}" in out[2]
        assert "Saved." in out[2]
        (ann,) = store.annotations("arena")
        assert ann["payload"] == {"choice": "A"}
        assert ann["kind"] == "pairwise"
    finally:
        app.close()
        store.close()


def login_cookies(url: str, user: str, password: str = PW):
    import httpx

    c = httpx.Client(base_url=url, follow_redirects=True)
    r = c.post("login", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return c


def test_uploads_are_closed(served):
    url, _ = served
    c = login_cookies(url, "ann")
    assert c.get("config").status_code == 200  # logged in
    r = c.post(
        "gradio_api/upload", files={"files": ("x.html", b"<script>alert(1)</script>" * 1000, "text/html")}
    )
    assert r.status_code in (404, 405), r.status_code
    assert c.post("upload", files={"files": ("x.html", b"hi", "text/html")}).status_code in (404, 405)


def test_session_state_is_bound_to_its_user(served):
    url, store = served
    ann, bob = client(url, "ann"), client(url, "bob")
    ann.predict(api_name="/load")
    bob.session_hash = ann.session_hash  # bob presents ann's session (its server-side state)
    # refused at the gate (403: the hash is ann's), before any handler runs
    with pytest.raises(Exception, match="403"):
        bob.predict(None, "A,B,C", "", False, None, "", api_name="/submit")
    with pytest.raises(Exception, match="403"):
        bob.predict(api_name="/load")
    assert store.annotations("demo") == []
    out = ann.predict(None, "A,B,C", "", False, None, "", api_name="/submit")  # ann's session still works
    assert "Saved." in out[2]


@pytest.mark.parametrize("change", ["set-password", "disable"])
def test_changed_credentials_end_existing_sessions(served, change):
    url, store = served
    ann = client(url, "ann")
    ann.predict(api_name="/load")
    raw = login_cookies(url, "ann")
    assert raw.get("config").status_code == 200
    if change == "set-password":
        store.set_password("ann", "a-new-password")
    else:
        store.set_disabled("ann")
    # refused: by the guard at this request ("Your session has ended ...") or, if the background sweep came
    # first, by Gradio's login check on the revoked token
    with pytest.raises(Exception):  # noqa: B017 - either refusal is right; nothing may be stored
        ann.predict(None, "A,B,C", "", False, None, "", api_name="/submit")
    assert store.annotations("demo") == []
    deadline = time.time() + 15  # the background sweep ends idle sessions too
    while raw.get("config").status_code == 200 and time.time() < deadline:
        time.sleep(0.5)
    assert raw.get("config").status_code == 401
    if change == "set-password":
        with pytest.raises(ValueError):  # the old password no longer works
            client(url, "ann")
        from gradio_client import Client

        fresh = Client(url, auth=("ann", "a-new-password"), verbose=False)
        assert fresh.predict(api_name="/load")[0]


def test_binary_thumbs_are_one_click_endpoints_for_two_assessors(tmp_path):
    db = str(tmp_path / "thumbs.db")
    s = Store(db)
    s.create_project("thumbs", "binary", overlap=2)
    s.add_items("thumbs", [{"external_id": "x", "prompt": "2+2?", "candidates": [{"text": "4"}]}])
    for u in ("ann", "bob"):
        s.add_user(u, PW)
    s.close()
    port = free_port()
    app, store = launch(LabelStageConfig(store=db, project="thumbs", port=port), block=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        ann, bob = client(url, "ann"), client(url, "bob")
        ann.predict(api_name="/load")
        bob.predict(api_name="/load")
        # a pairwise verdict is no binary judgement: refused by the store, nothing stored, the item stays
        refused = ann.predict(None, "", "", False, None, "", api_name="/pick_A")[2]
        assert "Not saved: judge the answer good or bad" in refused
        assert store.annotations("thumbs") == []
        assert "Saved." in ann.predict(None, "", "right", False, None, "", api_name="/pick_good")[2]
        assert "Saved." in bob.predict(None, "", "", False, None, "", api_name="/pick_bad")[2]
        labels = {a["assessor"]: a["payload"] for a in store.annotations("thumbs")}
        assert labels == {"ann": {"label": "good"}, "bob": {"label": "bad"}}
    finally:
        app.close()
        store.close()
