"""The Admin tab of the labeling app: queue, assessors, recent activity, the arena leaderboard, export and
user management. Shown to admins only; every handler re-checks the role on the server."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import gradio as gr

from labeling_ui.render import plain_markdown
from rlhf.compare import arena
from rlhf.errors import RlhfError
from rlhf.preferences import save_preferences, save_unpaired
from rlhf.runs import RunDir, RunSettings
from rlhf.store import ExportSettings, export_project, gold_over_time, project_stats


def leaderboard_rows(items: list[dict], annotations: list[dict]) -> list[list]:
    """The arena leaderboard as table rows (empty when the project's answers name no checkpoints)."""
    board = arena.leaderboard(items, annotations, bootstrap=200)
    return [
        [
            k,
            r["checkpoint"],
            round(r["rating"]),
            f"{r['ci95'][0]:.0f}–{r['ci95'][1]:.0f}",
            round(r["p_best"], 2),
            board["battles"],
        ]
        for k, r in enumerate(board["checkpoints"], start=1)
    ]


def export_to_run(store, project: str, runs_root: str) -> RunDir:
    """The Admin tab's Export: the project's majority preferences (a binary project's majority labels, as
    unpaired KTO rows) into a new run directory (a unique name per click, so two clicks in the same second
    never collide)."""
    name = f"export-{project}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    binary = store.project(project).task == "binary"
    settings = ExportSettings(format="unpaired" if binary else "pairs")
    config = {"store": store.target, "project": project, **vars(settings)}
    with RunDir.prepare(RunSettings(name=name, output_root=runs_root), "export", config) as run:
        rows, accounting = export_project(store, project, settings)
        save = save_unpaired if binary else save_preferences
        outputs = save(rows, run.path) if rows else {}
        run.update_manifest(accounting=accounting, store=store.target, project=project)
        run.finish(outputs=outputs)
    return run


def admin_tab(store, settings, guard) -> gr.Tab:
    """The Admin tab, hidden until the app's load shows it to an admin: its layout, handlers and events."""
    ui = admin_layout()
    wire_admin_events(ui, AdminHandlers(store, settings, guard))
    return ui.tab


# -- layout ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminComponents:
    """The Admin tab's components that its events use (from `admin_layout`)."""

    tab: gr.Tab
    refresh_btn: gr.Button
    queue: gr.Dataframe
    people: gr.Dataframe
    recent: gr.Dataframe
    users: gr.Dataframe
    board: gr.Dataframe
    export_btn: gr.Button
    export_out: gr.Markdown
    new_name: gr.Textbox
    new_pw: gr.Textbox
    new_role: gr.Radio
    add_btn: gr.Button
    dis_name: gr.Textbox
    dis_btn: gr.Button
    user_out: gr.Markdown


def admin_layout() -> AdminComponents:
    with gr.Tab("Admin", visible=False) as tab:
        gr.Markdown("Admins only: queue, assessors, activity, export and users.")
        refresh_btn = gr.Button("Refresh", elem_id="admin_refresh")
        queue, people, recent, users, board = report_tables()
        export_btn = gr.Button("Export preferences", elem_id="admin_export")
        export_out = gr.Markdown()
        with gr.Row():
            new_name = gr.Textbox(label="username")
            new_pw = gr.Textbox(label="password", type="password")
            new_role = gr.Radio(["assessor", "admin"], value="assessor", label="role")
        add_btn = gr.Button("Add user")
        dis_name = gr.Textbox(label="username to disable")
        dis_btn = gr.Button("Disable user")
        user_out = gr.Markdown()
    return AdminComponents(
        tab=tab,
        refresh_btn=refresh_btn,
        queue=queue,
        people=people,
        recent=recent,
        users=users,
        board=board,
        export_btn=export_btn,
        export_out=export_out,
        new_name=new_name,
        new_pw=new_pw,
        new_role=new_role,
        add_btn=add_btn,
        dis_name=dis_name,
        dis_btn=dis_btn,
        user_out=user_out,
    )


def report_tables() -> tuple[gr.Dataframe, ...]:
    """The tables Refresh fills: queue, assessors, recent activity, users, arena leaderboard."""
    queue = gr.Dataframe(
        headers=["items", "leased now", "annotations", "skips", "alpha"],
        label="Queue",
        elem_id="admin_queue",
    )
    people = gr.Dataframe(
        headers=[
            "assessor",
            "annotations",
            "agree w/ majority",
            "gold accuracy",
            "gold, last 10",
            "median s/item",
            "pace",
            "per hour",
        ],
        label="Assessors (pace: median time per judgement far below the project's -> TOO FAST)",
        elem_id="admin_people",
    )
    recent = gr.Dataframe(
        headers=["time", "assessor", "item", "flagged"], label="Recent activity", elem_id="admin_recent"
    )
    users = gr.Dataframe(headers=["user", "role", "status"], label="Users", elem_id="admin_users")
    board = gr.Dataframe(
        headers=["rank", "checkpoint", "rating", "95% CI", "P(best)", "votes"],
        label="Arena leaderboard (Bradley-Terry on the votes; for projects made by `rlhf compare`)",
        elem_id="admin_leaderboard",
    )
    return queue, people, recent, users, board


# -- handlers --------------------------------------------------------------------------------------------------


class AdminHandlers:
    """The Admin tab's event functions: each re-checks the caller's role on the server (the tab's visibility
    is no protection: every event is also an HTTP endpoint). Parameter names are the API's."""

    def __init__(self, store, settings, guard):
        self.store, self.settings, self.guard = store, settings, guard

    def require_admin(self, request: gr.Request) -> str:
        user = self.guard.user(request)
        if self.store.role(user) != "admin":
            raise gr.Error("Admins only.")
        return user

    def refresh(self, request: gr.Request):
        self.require_admin(request)
        store, project = self.store, self.settings.project
        items, anns = store.items(project), store.annotations(project)
        assigns = store.assignments(project)
        st = project_stats(
            items, anns, store.project(project).task, too_fast_ratio=self.settings.too_fast_ratio
        )
        queue = [
            [
                len(items),
                sum(1 for a in assigns if a["status"] == "leased"),
                len(anns),
                sum(1 for a in assigns if a["status"] == "skipped"),
                st["alpha"]["value"],
            ]
        ]
        learning = gold_over_time(items, anns)
        people = [
            [
                who,
                s["annotations"],
                s["agreement_with_majority"],
                s["gold_accuracy"],
                learning.get(who, {}).get("last_10"),
                None if s["median_seconds"] is None else round(s["median_seconds"], 1),
                "TOO FAST" if s["too_fast"] else "",
                s["per_hour"],
            ]
            for who, s in st["assessors"].items()
        ]
        recent = [
            [str(a["created_at"])[:19], a["assessor"], a["item_id"], "yes" if a["flagged_unsafe"] else ""]
            for a in anns[-20:][::-1]
        ]
        users = [
            [u["username"], u["role"], "disabled" if u["disabled"] else "active"] for u in store.list_users()
        ]
        return queue, people, recent, users, leaderboard_rows(items, anns)

    # their messages quote names and errors: plain text on the page (labeling_ui.render)

    def export(self, request: gr.Request):
        self.require_admin(request)
        try:
            run = export_to_run(self.store, self.settings.project, self.settings.runs_root)
        except RlhfError as e:
            return plain_markdown(f"Not exported: {e}")
        acct = run.read_manifest()["accounting"]
        if "balance" in acct:
            b = acct["balance"]
            return plain_markdown(
                f"Exported {acct['rows_out']} unpaired rows ({b['desirable']} desirable, {b['undesirable']} "
                f"undesirable) from {acct['items_exported']} items to {run.path}."
            )
        return plain_markdown(
            f"Exported {acct['pairs_out']} pairs from {acct['items_exported']} items to {run.path}."
        )

    def add_user(self, name, password, role, request: gr.Request):
        self.require_admin(request)
        try:
            self.store.add_user(name or "", password or "", role=role)
        except RlhfError as e:
            return plain_markdown(f"Not added: {e}")
        return plain_markdown(f"Added {role} '{name}'.")

    def disable_user(self, name, request: gr.Request):
        self.require_admin(request)
        try:
            self.store.set_disabled(name or "")
        except RlhfError as e:
            return plain_markdown(f"Not disabled: {e}")
        return plain_markdown(f"Disabled '{name}'.")


# -- event wiring ----------------------------------------------------------------------------------------------


def wire_admin_events(ui: AdminComponents, on: AdminHandlers) -> None:
    tables = [ui.queue, ui.people, ui.recent, ui.users, ui.board]
    ui.refresh_btn.click(on.refresh, None, tables, api_name="admin_refresh")
    ui.export_btn.click(on.export, None, ui.export_out, api_name="admin_export")
    ui.add_btn.click(
        on.add_user, [ui.new_name, ui.new_pw, ui.new_role], ui.user_out, api_name="admin_add_user"
    )
    ui.dis_btn.click(on.disable_user, ui.dis_name, ui.user_out, api_name="admin_disable_user")
