"""The Gradio labeling app: `build_app(store, cfg) -> gr.Blocks`, a thin layer over `labeling_ui.handlers`.

Three parts, in this order below: `layout` builds the components (a `Components` dataclass), `LabelHandlers`
holds the event functions, `wire_events` connects the two (each event is also an HTTP endpoint).

- Identity comes only from `gr.Request.username` (Gradio's login, checked against the store's salted
  password hashes off the event loop, with a lockout after repeated failures: `labeling_ui.sessions`).
  Nothing a client sends names the assessor.
- Per-session server-side state (`gr.State`) holds the current item id and the submit's client token, and
  the user it was made for: every event refuses another user's state, and `labeling_ui.gate` refuses
  another user's session hash on every route. The store re-checks that the item is leased to the caller,
  checks the free text against its limits and the unsafe flag's type, so crafted API calls are refused.
- Every text reaches the page through `labeling_ui.render`: model output as escaped Markdown, names and
  status lines (gold notes, arena reveals, refusals) as plain text; Gradio's sanitizer stays on too.
- Judging: pairwise by one click on A / B / Tie / Both bad (keys A, B, T, X); binary (one answer, thumbs)
  by one click on Good / Bad (keys G, B); ranking by clicking the answers in order (each card shows its
  rank; click again to undo) or typing their letters; Likert by a compact 1-7 row per answer; Enter
  (Ctrl+Enter in a text box) submits (`labeling_ui.assets`). A reason goes in the rationale box first.
- Reading aids: the conversation as chat turns, answers side by side with their own scroll, code rendered,
  and a word-level difference view of A and B.
- Admins get an Admin tab: queue status, per-assessor throughput / agreement / gold accuracy, recent
  activity, export, user management. Every admin handler re-checks the role on the server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import gradio as gr

from labeling_ui import handlers
from labeling_ui.admin import admin_tab as build_admin_tab
from labeling_ui.handlers import LETTERS, PAIRWISE_LABELS, REVIEW_LABELS, View
from labeling_ui.render import plain_markdown, safe_markdown, status_markdown, word_diff_html
from labeling_ui.sessions import SessionGuard
from rlhf.config import documented
from rlhf.store import MAX_CANDIDATES, judgements

PICKS = {"A": "A is better (A)", "B": "B is better (B)", "tie": "Tie (T)", "both_bad": "Both bad (X)"}
THUMBS = {"good": "👍 Good (G)", "bad": "👎 Bad (B)"}  # binary: one click is the judgement
ONE_CLICK_TASKS = ("pairwise", "binary")  # judged by a button that submits at once: no Submit button


@dataclass
class AppSettings:
    project: str
    max_failed_logins: int = 5
    lockout_s: int = 300
    arena: bool = documented(False, help="reveal each candidate's model after the vote")
    title: str = "rlhf labeling"
    runs_root: str = documented("runs", help="where the Admin tab's Export writes its run directories")
    too_fast_ratio: float = (
        0.25  # Admin tab: median time per judgement below this x the project's -> "too fast"
    )


def build_app(store, settings: AppSettings, guard: SessionGuard | None = None) -> gr.Blocks:
    """The app; `guard` binds sessions to users and ends them when credentials change (label.launch
    attaches it to the running server)."""
    guard = guard or SessionGuard(store)
    with gr.Blocks(title=settings.title) as app:
        ui = layout(store, settings, guard)
        wire_events(app, ui, LabelHandlers(store, settings, guard, ui))
    # handlers are thread-safe (one store session per call): serve many assessors at once
    app.queue(default_concurrency_limit=16)
    return app


# -- layout ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Components:
    """The components the events read or update, from `layout` (the rest of the page is static)."""

    state: gr.State  # per session: item id, submit token, owner, raw texts (never the identity source)
    whoami: gr.Markdown
    progress: gr.Markdown
    status: gr.Markdown
    prompt: gr.Chatbot
    slots: list[gr.Markdown]  # one card per response, A, B, ...
    scores: list[gr.Radio]  # likert: a 1-7 row per response (none for the other tasks)
    picks: dict[str, gr.Button]  # pairwise and binary: one button per verdict, keyed as PICKS and THUMBS
    choice: gr.Radio
    order: gr.Textbox
    show_diff: gr.Checkbox
    diff_view: gr.HTML
    rationale: gr.Textbox
    edit_of: gr.Radio
    edit_text: gr.Textbox
    flag: gr.Checkbox
    submit_btn: gr.Button
    skip_reason: gr.Textbox
    skip_btn: gr.Button
    admin_tab: gr.Tab

    @property
    def inputs(self) -> list:
        """What an assessor fills in for one item: cleared when the next item shows, kept on a refusal."""
        return [self.choice, self.order, self.rationale, self.flag, self.skip_reason]

    @property
    def view_outputs(self) -> list:
        """Everything showing a new item updates."""
        return [
            self.state,
            self.prompt,
            self.progress,
            self.status,
            *self.slots,
            *self.scores,
            *self.inputs,
            self.show_diff,
            self.diff_view,
        ]

    @property
    def judged(self) -> list:
        """A judgement's inputs, in the order of `LabelHandlers.submit_with`'s parameters."""
        return [
            self.state,
            self.choice,
            self.order,
            self.rationale,
            self.flag,
            self.edit_of,
            self.edit_text,
            *self.scores,
        ]


def layout(store, settings: AppSettings, guard: SessionGuard) -> Components:
    """Every component, in page order: the Label tab, then the Admin tab (which wires its own events)."""
    project = store.project(settings.project)
    task = project.task
    # as many candidate slots as the project's largest item (fewer components -> less work per event)
    n_slots = min(MAX_CANDIDATES, max(2, store.max_candidates(settings.project)))
    state = gr.State({"item_id": None, "token": ""})
    with gr.Tab("Label"):
        whoami = header(settings.title, project)
        progress = gr.Markdown(elem_id="progress")
        status = gr.Markdown(elem_id="status")
        prompt = gr.Chatbot(label="Conversation", elem_id="prompt", height="auto", max_height=420, buttons=[])
        slots, scores = response_cards(n_slots, n_scores=n_slots if task == "likert" else 0)
        picks, choice, order = verdict_inputs(task)
        with gr.Row():
            show_diff = gr.Checkbox(
                label="Show differences between A and B",
                elem_id="show_diff",
                visible=task not in judgements.ONE_CANDIDATE_TASKS,
            )
        diff_view = gr.HTML(elem_id="diff_view", visible=False)
        limits = store.limits  # the browser stops typing at them; the store refuses longer text anyway
        rationale = gr.Textbox(
            label=f"Rationale ({project.rationale})",
            lines=2,
            elem_id="rationale",
            visible=project.rationale != "off",
            max_length=limits.rationale,
        )
        with gr.Accordion(
            "Improve a response (optional): your rewrite is kept as a better answer", open=False
        ):
            edit_of = gr.Radio(list(LETTERS[:n_slots]), label="Response you improved", elem_id="edit_of")
            edit_text = gr.Textbox(
                label="Improved response", lines=4, elem_id="edit_text", max_length=limits.edit
            )
        flag = gr.Checkbox(label="Flag unsafe content", elem_id="flag")
        with gr.Row():
            submit_btn = gr.Button(
                "Submit (Enter)", variant="primary", elem_id="submit", visible=task not in ONE_CLICK_TASKS
            )
            skip_reason = gr.Textbox(
                label="Skip reason", elem_id="skip_reason", scale=2, max_length=limits.skip_reason
            )
            skip_btn = gr.Button("Skip", elem_id="skip")
    admin_tab = build_admin_tab(store, settings, guard)
    return Components(
        state=state,
        whoami=whoami,
        progress=progress,
        status=status,
        prompt=prompt,
        slots=slots,
        scores=scores,
        picks=picks,
        choice=choice,
        order=order,
        show_diff=show_diff,
        diff_view=diff_view,
        rationale=rationale,
        edit_of=edit_of,
        edit_text=edit_text,
        flag=flag,
        submit_btn=submit_btn,
        skip_reason=skip_reason,
        skip_btn=skip_btn,
        admin_tab=admin_tab,
    )


def header(title: str, project) -> gr.Markdown:
    """The title row and the guidelines; returns the "logged in as" line (filled on load)."""
    with gr.Row():
        gr.Markdown(f"## {plain_markdown(title)} — *{plain_markdown(project.name)}*", elem_id="title")
        whoami = gr.Markdown(elem_id="whoami")
    with gr.Accordion("Guidelines", open=True):
        gr.Markdown(
            safe_markdown(project.guidelines) or "_No guidelines for this project._", elem_id="guidelines"
        )
    return whoami


def response_cards(n_slots: int, n_scores: int) -> tuple[list[gr.Markdown], list[gr.Radio]]:
    """The responses side by side (hidden until an item fills them), and likert's score rows under them."""
    with gr.Row(equal_height=True):
        slots = [
            gr.Markdown(visible=False, elem_id=f"cand_{LETTERS[i]}", container=True) for i in range(n_slots)
        ]
    with gr.Row():
        scores = [
            gr.Radio(
                list(range(1, 8)), value=None, visible=False, elem_id=f"score_{LETTERS[i]}", min_width=120
            )
            for i in range(n_scores)
        ]
    return slots, scores


def verdict_inputs(task: str) -> tuple[dict[str, gr.Button], gr.Radio, gr.Textbox]:
    """Pairwise's and binary's verdict buttons, review's choice and ranking's order box (only the task's
    own show)."""
    with gr.Row(visible=task == "pairwise"):
        picks = {k: gr.Button(v, elem_id=f"pick_{k}", elem_classes="pick") for k, v in PICKS.items()}
    with gr.Row(visible=task == "binary"):
        picks |= {k: gr.Button(v, elem_id=f"pick_{k}", elem_classes="pick") for k, v in THUMBS.items()}
    choice = gr.Radio(
        [(v, k) for k, v in (REVIEW_LABELS if task == "review" else PAIRWISE_LABELS).items()],
        label="May this row be used for training? Say why below.",
        visible=task == "review",
        elem_id="choice",
    )
    order = gr.Textbox(
        label="Ranking, best first: click the answers in order (click again to undo), or press their letters",
        placeholder="e.g. B,A,C",
        visible=task == "ranking",
        elem_id="rank_order",
    )
    return picks, choice, order


# -- handlers --------------------------------------------------------------------------------------------------


class LabelHandlers:
    """The Label tab's event functions. Each names the caller from `gr.Request` (never from its inputs),
    refuses another user's session state, and leaves the logic to `labeling_ui.handlers`. Their parameter
    names are the endpoints' API parameter names."""

    def __init__(self, store, settings: AppSettings, guard: SessionGuard, ui: Components):
        self.store, self.settings, self.guard, self.ui = store, settings, guard, ui
        self.project = settings.project

    def show(self, view: View, user: str) -> dict:
        """A View -> updates of the view's components (a new submit token with every item)."""
        ui, n_slots = self.ui, len(self.ui.slots)
        if len(view.candidates_md) > n_slots:
            view.message = (
                f"This item has {len(view.candidates_md)} responses but the app was started for at "
                f"most {n_slots}: restart `rlhf label` to judge it (or skip it)."
            )
        n = len(view.candidates_md)
        updates = {
            ui.state: {
                "item_id": view.item_id,
                "token": uuid.uuid4().hex,
                "user": user,
                "texts": view.candidate_texts,
            },
            ui.prompt: chat_messages(view.prompt) if not view.done else [],
            ui.progress: view.progress_md,
            ui.status: status_markdown(view.message),
            ui.choice: gr.update(value=None),
            ui.order: gr.update(value=""),
            ui.rationale: gr.update(value=""),
            ui.flag: gr.update(value=False),
            ui.skip_reason: gr.update(value=""),
            ui.show_diff: gr.update(value=False),
            ui.diff_view: gr.update(value="", visible=False),
        }
        for i, slot in enumerate(ui.slots):
            updates[slot] = gr.update(value=view.candidates_md[i] if i < n else "", visible=i < n)
        for i, radio in enumerate(ui.scores):
            updates[radio] = gr.update(
                visible=i < len(view.candidate_ids),
                value=None,
                label=f"{LETTERS[i]}: 1 (poor) … 7 (excellent)",
            )
        return updates

    def on_load(self, st, request: gr.Request):
        user = self.guard.user(request)
        self.guard.check_state(st, user)
        return {
            **self.show(handlers.next_view(self.store, self.project, user), user),
            self.ui.admin_tab: gr.update(visible=self.store.role(user) == "admin"),  # its handlers re-check
            self.ui.whoami: f"Logged in as **{plain_markdown(user)}**",
        }

    def submit_with(self, request: gr.Request, st, ch, od, rat, fl, e_of, e_text, *score_values):
        user = self.guard.user(request)
        self.guard.check_state(st, user)
        view = handlers.submit(
            self.store,
            self.project,
            user,
            st.get("item_id"),
            client_token=st.get("token"),
            choice=ch,
            order=od,
            scores=list(score_values),
            rationale=rat,
            flagged_unsafe=False if fl is None else fl,  # anything but a bool is refused by the store
            edit_of=e_of,
            edit_text=e_text or "",
        )
        if view.outcome == "saved" and self.settings.arena and st.get("item_id") is not None:
            view.message += " " + reveal(self.store, self.project, user, st["item_id"]) + "."
        updates = self.show(view, user)
        if view.outcome == "refused":  # the same item: keep its token and the inputs (a retry is idempotent)
            updates[self.ui.state] = st
            for component in self.ui.inputs:
                updates.pop(component)
            return updates
        return {**updates, self.ui.edit_of: gr.update(value=None), self.ui.edit_text: gr.update(value="")}

    def on_skip(self, st, reason, request: gr.Request):
        user = self.guard.user(request)
        self.guard.check_state(st, user)
        return self.show(handlers.skip(self.store, self.project, user, st.get("item_id"), reason), user)

    def on_diff(self, st, on: bool, request: gr.Request):
        self.guard.check_state(st, self.guard.user(request))
        texts = (st or {}).get("texts") or []
        if not on or len(texts) < 2:
            return gr.update(value="", visible=False)
        return gr.update(value=word_diff_html(texts[0], texts[1]), visible=True)


def pick_handler(submit_with, key: str):
    """A pairwise or binary button's handler: the submit with its choice fixed (Gradio injects the request
    by type)."""

    def pick(request: gr.Request, st, _choice, od, rat, fl, e_of, e_text, *score_values):
        return submit_with(request, st, key, od, rat, fl, e_of, e_text, *score_values)

    return pick


# -- event wiring ----------------------------------------------------------------------------------------------


def wire_events(app: gr.Blocks, ui: Components, on: LabelHandlers) -> None:
    """Components -> handlers. Every event is also an HTTP endpoint, named by its api_name."""
    app.load(on.on_load, [ui.state], [*ui.view_outputs, ui.admin_tab, ui.whoami], api_name="load")
    judged_outputs = [*ui.view_outputs, ui.edit_of, ui.edit_text]
    # the next item must be on screen fast: these calls skip Gradio's queue (no server-sent-events round
    # trip; the handlers are thread-safe) and its progress overlay
    fast = {"queue": False, "show_progress": "hidden"}
    ui.submit_btn.click(on.submit_with, ui.judged, judged_outputs, api_name="submit", **fast)
    for key, button in ui.picks.items():  # pairwise and binary: one click is the judgement
        button.click(
            pick_handler(on.submit_with, key), ui.judged, judged_outputs, api_name=f"pick_{key}", **fast
        )
    ui.skip_btn.click(on.on_skip, [ui.state, ui.skip_reason], ui.view_outputs, api_name="skip")
    ui.show_diff.change(on.on_diff, [ui.state, ui.show_diff], ui.diff_view, api_name="diff")


# -- helpers ---------------------------------------------------------------------------------------------------


def chat_messages(prompt) -> list[dict]:
    """The prompt as chat turns for gr.Chatbot (each turn's text made safe Markdown)."""
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt or [])
    return [
        {
            "role": "assistant" if m.get("role") == "assistant" else "user",
            "content": safe_markdown(str(m.get("content", ""))),
        }
        for m in turns
    ]


def reveal(store, project: str, username: str, item_id: int) -> str:
    """Arena: which model wrote which response, in the order this assessor saw them (only after the vote).
    Plain text: the status line it joins is escaped as a whole (`render.status_markdown`)."""
    sources = store.candidate_sources(item_id)
    order = store.shown_order(project, username, item_id)
    return "Revealed: " + "; ".join(
        f"{LETTERS[i]} = {sources[c].get('policy', '?')}" for i, c in enumerate(order)
    )
