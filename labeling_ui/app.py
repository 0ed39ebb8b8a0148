"""The Gradio labeling app: `build_app(store, cfg) -> gr.Blocks`, a thin layer over `labeling_ui.handlers`.

- Identity comes only from `gr.Request.username` (Gradio's login, checked against the store's salted
  password hashes, with a lockout after repeated failures). Nothing a client sends names the assessor.
- Per-session server-side state (`gr.State`) holds the current item id and the submit's client token;
  the store re-checks that the item is leased to the caller, so crafted API calls are refused.
- Model output is rendered as escaped Markdown (`labeling_ui.render`) with Gradio's sanitizer on too.
- Keyboard: pairwise A / B / T (tie) / X (both bad); ranking: press candidate letters best-first
  (Backspace removes the last); Enter (or Ctrl+Enter inside a text box) submits.
- Admins get an Admin tab: queue status, per-assessor throughput / agreement / gold accuracy, recent
  activity, export, user management. Every admin handler re-checks the role on the server.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import gradio as gr

from labeling_ui import handlers
from labeling_ui.handlers import LETTERS, PAIRWISE_LABELS, View
from labeling_ui.render import plain_markdown, safe_markdown
from labeling_ui.sessions import SessionGuard
from rlhf.errors import RlhfError
from rlhf.preferences import save_preferences
from rlhf.runs import RunDir, RunSettings
from rlhf.store.export import ExportSettings, export_project
from rlhf.store.judgements import MAX_CANDIDATES
from rlhf.store.quality import project_stats

# long texts scroll inside their own box, so the controls below stay in reach
CSS = """
[id^="cand_"] { max-height: 60vh; overflow-y: auto; }
#prompt { max-height: 45vh; overflow-y: auto; }
"""
# Gradio routes an app without file components does not need: refused (404) once the app runs
CLOSED_ROUTES = ("/gradio_api/upload", "/gradio_api/upload_progress", "/upload")

KEYBOARD_JS = """
<script>
(() => {
  const q = (s) => document.querySelector(s);
  const setText = (el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); };
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const typing = t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'radio' && t.type !== 'checkbox'));
    const order = q('#rank_order textarea, #rank_order input');
    if (e.key === 'Enter' && (!typing || e.ctrlKey || e.metaKey)) {
      const b = q('#submit'); if (b) { e.preventDefault(); b.click(); } return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toUpperCase();
    const choice = q('#choice');
    if (choice && choice.offsetParent !== null) {
      const v = {A: 'A', B: 'B', T: 'tie', X: 'both_bad'}[k];
      const input = v && choice.querySelector(`input[value="${v}"]`);
      if (input) { input.click(); e.preventDefault(); }
      return;
    }
    if (order && order.offsetParent !== null) {
      if (e.key === 'Backspace') { setText(order, order.value.split(',').filter(Boolean).slice(0, -1).join(',')); e.preventDefault(); return; }
      if (/^[A-P]$/.test(k)) {
        const cur = order.value.split(',').map((x) => x.trim()).filter(Boolean);
        if (!cur.includes(k)) { cur.push(k); setText(order, cur.join(',')); }
        e.preventDefault();
      }
    }
  });
})();
</script>
"""


@dataclass
class AppSettings:
    project: str
    max_failed_logins: int = 5
    lockout_s: int = 300
    arena: bool = False  # reveal each candidate's model after the vote
    title: str = "rlhf labeling"
    runs_root: str = "runs"  # where the Admin tab's Export writes its run directories


class LoginGuard:
    """Store-backed password check with a lockout after repeated failures (per username)."""

    def __init__(self, store, max_failures: int, lockout_s: int):
        self.store, self.max_failures, self.lockout_s = store, max_failures, lockout_s
        self.failures: dict[str, list[float]] = {}

    def __call__(self, username: str, password: str) -> bool:
        now = time.time()
        recent = [t for t in self.failures.get(username, []) if now - t < self.lockout_s]
        if len(recent) >= self.max_failures:
            self.failures[username] = recent
            return False  # locked: even the right password is refused until the window passes
        if self.store.authenticate(username, password) is not None:
            self.failures.pop(username, None)
            return True
        self.failures[username] = [*recent, now]
        return False


def build_app(store, settings: AppSettings, guard: SessionGuard | None = None) -> gr.Blocks:
    """The app; `guard` binds sessions to users and ends them when credentials change (label.launch
    attaches it to the running server)."""
    guard = guard or SessionGuard(store)
    project = store.project(settings.project)
    task = project.task
    # as many candidate slots as the project's largest item (fewer components -> less work per event)
    n_slots = min(MAX_CANDIDATES, max(2, store.max_candidates(settings.project)))
    n_sliders = n_slots if task == "likert" else 0

    with gr.Blocks(title=settings.title) as app:
        state = gr.State({"item_id": None, "token": ""})
        with gr.Tab("Label"):
            with gr.Row():
                gr.Markdown(f"## {settings.title} — project *{project.name}* ({task})")
                whoami = gr.Markdown(elem_id="whoami")
            with gr.Accordion("Guidelines", open=True):
                gr.Markdown(
                    safe_markdown(project.guidelines) or "_No guidelines for this project._",
                    elem_id="guidelines",
                )
            progress = gr.Markdown(elem_id="progress")
            status = gr.Markdown(elem_id="status")
            gr.Markdown("### Prompt")
            prompt = gr.Markdown(elem_id="prompt")
            with gr.Row(equal_height=False):
                slots = [
                    gr.Markdown(visible=False, elem_id=f"cand_{LETTERS[i]}", container=True)
                    for i in range(n_slots)
                ]
            choice = gr.Radio(
                [(v, k) for k, v in PAIRWISE_LABELS.items()],
                label="Which response is better? (keys: A, B, T = tie, X = both bad)",
                visible=task == "pairwise",
                elem_id="choice",
            )
            order = gr.Textbox(
                label="Ranking, best first — press the letters in order (Backspace undoes)",
                placeholder="e.g. B,A,C,D",
                visible=task == "ranking",
                elem_id="rank_order",
            )
            with gr.Row():
                sliders = [
                    gr.Slider(1, 7, step=1, value=4, visible=False, elem_id=f"score_{LETTERS[i]}")
                    for i in range(n_sliders)
                ]
            rationale = gr.Textbox(
                label=f"Rationale ({project.rationale})",
                lines=2,
                elem_id="rationale",
                visible=project.rationale != "off",
            )
            with gr.Accordion(
                "Improve a response (optional): your rewrite is kept as a better answer", open=False
            ):
                edit_of = gr.Radio(list(LETTERS[:n_slots]), label="Response you improved", elem_id="edit_of")
                edit_text = gr.Textbox(label="Improved response", lines=4, elem_id="edit_text")
            flag = gr.Checkbox(label="Flag unsafe content", elem_id="flag")
            with gr.Row():
                submit_btn = gr.Button("Submit (Enter)", variant="primary", elem_id="submit")
                skip_reason = gr.Textbox(label="Skip reason", elem_id="skip_reason", scale=2)
                skip_btn = gr.Button("Skip", elem_id="skip")
        # what an assessor fills in for one item: cleared when the next item shows, kept on a refusal
        inputs = [choice, order, rationale, flag, skip_reason]
        view_outputs = [state, prompt, progress, status, *slots, *sliders, *inputs]

        def show(view: View, user: str) -> dict:
            """A View -> updates of the view's components (a new submit token with every item)."""
            if len(view.candidates_md) > n_slots:
                view.message = (
                    f"This item has {len(view.candidates_md)} responses but the app was started for at "
                    f"most {n_slots}: restart `rlhf label` to judge it (or skip it)."
                )
            n = len(view.candidates_md)
            updates = {
                state: {"item_id": view.item_id, "token": uuid.uuid4().hex, "user": user},
                prompt: view.prompt_md if not view.done else "",
                progress: view.progress_md,
                status: f"**{view.message}**" if view.message else "",
                choice: gr.update(value=None),
                order: gr.update(value=""),
                rationale: gr.update(value=""),
                flag: gr.update(value=False),
                skip_reason: gr.update(value=""),
            }
            for i, slot in enumerate(slots):
                updates[slot] = gr.update(value=view.candidates_md[i] if i < n else "", visible=i < n)
            for i, slider in enumerate(sliders):
                updates[slider] = gr.update(
                    visible=i < len(view.candidate_ids), value=4, label=f"Score for {LETTERS[i]} (1-7)"
                )
            return updates

        def on_load(st, request: gr.Request):
            user = guard.user(request)
            guard.check_state(st, user)
            return {
                **show(handlers.next_view(store, settings.project, user), user),
                admin_tab: gr.update(visible=store.role(user) == "admin"),  # its handlers re-check the role
                whoami: f"Logged in as **{plain_markdown(user)}**",
            }

        def on_submit(request: gr.Request, st, ch, od, rat, fl, e_of, e_text, *scores):
            user = guard.user(request)
            guard.check_state(st, user)
            view = handlers.submit(
                store,
                settings.project,
                user,
                st.get("item_id"),
                client_token=st.get("token"),
                choice=ch,
                order=od,
                scores=list(scores),
                rationale=rat or "",
                flagged_unsafe=bool(fl),
                edit_of=e_of,
                edit_text=e_text or "",
            )
            if view.outcome == "saved" and settings.arena and st.get("item_id") is not None:
                view.message += " " + reveal(store, settings.project, user, st["item_id"]) + "."
            updates = show(view, user)
            if (
                view.outcome == "refused"
            ):  # the same item: keep its token and the inputs (a retry is idempotent)
                updates[state] = st
                for component in inputs:
                    updates.pop(component)
                return updates
            return {**updates, edit_of: gr.update(value=None), edit_text: gr.update(value="")}

        def on_skip(st, reason, request: gr.Request):
            user = guard.user(request)
            guard.check_state(st, user)
            return show(handlers.skip(store, settings.project, user, st.get("item_id"), reason), user)

        admin_tab = _admin_tab(store, settings, guard)
        app.load(on_load, [state], [*view_outputs, admin_tab, whoami], api_name="load")
        submit_btn.click(
            on_submit,
            [state, choice, order, rationale, flag, edit_of, edit_text, *sliders],
            [*view_outputs, edit_of, edit_text],
            api_name="submit",
        )
        skip_btn.click(on_skip, [state, skip_reason], view_outputs, api_name="skip")
    # handlers are thread-safe (one store session per call): serve many assessors at once
    app.queue(default_concurrency_limit=16)
    return app


class ClosedRoutes:
    """ASGI middleware: answer 404 on the routes in `paths` (uploads: the app has no file components, so any
    logged-in user could otherwise store arbitrary files that are then served back)."""

    def __init__(self, app, paths=CLOSED_ROUTES):
        self.app, self.paths = app, {p.rstrip("/") for p in paths}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].rstrip("/") in self.paths:
            await send(
                {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": b"Not found: this app takes no uploads."})
            return
        await self.app(scope, receive, send)


def export_to_run(store, project: str, runs_root: str) -> RunDir:
    """The Admin tab's Export: the project's majority preferences into a new run directory (a unique name
    per click, so two clicks in the same second never collide)."""
    name = f"export-{project}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    settings = ExportSettings()
    config = {"store": store.target, "project": project, **vars(settings)}
    with RunDir.prepare(RunSettings(name=name, output_root=runs_root), "export", config) as run:
        rows, accounting = export_project(store, project, settings)
        outputs = save_preferences(rows, run.path) if rows else {}
        run.update_manifest(accounting=accounting, store=store.target, project=project)
        run.finish(outputs=outputs)
    return run


def reveal(store, project: str, username: str, item_id: int) -> str:
    """Arena: which model wrote which response, in the order this assessor saw them (only after the vote)."""
    sources = store.candidate_sources(item_id)
    order = store.shown_order(project, username, item_id)
    return "Revealed: " + "; ".join(
        f"{LETTERS[i]} = {sources[c].get('policy', '?')}" for i, c in enumerate(order)
    )


def _admin_tab(store, settings: AppSettings, guard: SessionGuard) -> gr.Tab:
    def require_admin(request: gr.Request) -> str:
        user = guard.user(request)
        if store.role(user) != "admin":
            raise gr.Error("Admins only.")
        return user

    def refresh(request: gr.Request):
        require_admin(request)
        items, anns = store.items(settings.project), store.annotations(settings.project)
        assigns = store.assignments(settings.project)
        st = project_stats(items, anns, store.project(settings.project).task)
        queue = [
            [
                len(items),
                sum(1 for a in assigns if a["status"] == "leased"),
                len(anns),
                sum(1 for a in assigns if a["status"] == "skipped"),
                st["alpha"]["value"],
            ]
        ]
        people = [
            [who, s["annotations"], s["agreement_with_majority"], s["gold_accuracy"], s["per_hour"]]
            for who, s in st["assessors"].items()
        ]
        recent = [
            [str(a["created_at"])[:19], a["assessor"], a["item_id"], "yes" if a["flagged_unsafe"] else ""]
            for a in anns[-20:][::-1]
        ]
        users = [
            [u["username"], u["role"], "disabled" if u["disabled"] else "active"] for u in store.list_users()
        ]
        return queue, people, recent, users

    def export(request: gr.Request):
        require_admin(request)
        try:
            run = export_to_run(store, settings.project, settings.runs_root)
        except RlhfError as e:
            return f"Not exported: {e}"
        acct = run.read_manifest()["accounting"]
        return f"Exported {acct['pairs_out']} pairs from {acct['items_exported']} items to `{run.path}`."

    def add_user(name, password, role, request: gr.Request):
        require_admin(request)
        try:
            store.add_user(name or "", password or "", role=role)
        except RlhfError as e:
            return f"Not added: {e}"
        return f"Added {role} '{name}'."

    def disable_user(name, request: gr.Request):
        require_admin(request)
        try:
            store.set_disabled(name or "")
        except RlhfError as e:
            return f"Not disabled: {e}"
        return f"Disabled '{name}'."

    with gr.Tab("Admin", visible=False) as tab:
        gr.Markdown("Admins only: queue, assessors, activity, export and users.")
        refresh_btn = gr.Button("Refresh", elem_id="admin_refresh")
        queue = gr.Dataframe(
            headers=["items", "leased now", "annotations", "skips", "alpha"],
            label="Queue",
            elem_id="admin_queue",
        )
        people = gr.Dataframe(
            headers=["assessor", "annotations", "agree w/ majority", "gold accuracy", "per hour"],
            label="Assessors",
        )
        recent = gr.Dataframe(
            headers=["time", "assessor", "item", "flagged"], label="Recent activity", elem_id="admin_recent"
        )
        users = gr.Dataframe(headers=["user", "role", "status"], label="Users", elem_id="admin_users")
        refresh_btn.click(refresh, None, [queue, people, recent, users], api_name="admin_refresh")
        export_btn = gr.Button("Export preferences", elem_id="admin_export")
        export_out = gr.Markdown()
        export_btn.click(export, None, export_out, api_name="admin_export")
        with gr.Row():
            new_name = gr.Textbox(label="username")
            new_pw = gr.Textbox(label="password", type="password")
            new_role = gr.Radio(["assessor", "admin"], value="assessor", label="role")
        add_btn = gr.Button("Add user")
        dis_name = gr.Textbox(label="username to disable")
        dis_btn = gr.Button("Disable user")
        user_out = gr.Markdown()
        add_btn.click(add_user, [new_name, new_pw, new_role], user_out, api_name="admin_add_user")
        dis_btn.click(disable_user, dis_name, user_out, api_name="admin_disable_user")
    return tab
