"""The labeling store's operations: users, projects, items, server-side assignment, submits.

Assignment rules (all enforced here, inside one transaction per call):
- an item is served to exactly `overlap` distinct assessors: a slot is taken by a done annotation or by a
  live lease; skips and expired leases free their slot (gold items are served to every assessor);
- never the same item twice to one assessor (unique item x assessor assignment);
- a lease lives `lease_ttl_s`; an abandoned item is re-offered to others after that;
- order: the project's priority (random by default, fifo), i.e. the item's `priority` key, then id.
On SQLite every transaction starts with BEGIN IMMEDIATE, which serialises the read-then-write; on
PostgreSQL candidate items are locked with FOR UPDATE SKIP LOCKED and re-counted after the lock.

Submits are idempotent by client token: a resubmit with a token already stored returns the stored
annotation and writes nothing. A judgement and its per-candidate values are one transaction.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from sqlalchemy import and_, func, inspect, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rlhf.store import judgements
from rlhf.store.accounts import ROLES, Accounts, check_password, hash_password
from rlhf.store.assignment import Assignments, Lease
from rlhf.store.base import StoreError, now_utc
from rlhf.store.db import check_exists, is_sqlite, make_engine, unreachable
from rlhf.store.limits import TextLimits
from rlhf.store.schema import Annotation, Assessor, Assignment, Base, Candidate, Item, Project

__all__ = ["ROLES", "Lease", "Store", "StoreError", "check_password", "hash_password", "now_utc"]


class Store(Accounts, Assignments):
    """One labeling store (SQLite file or PostgreSQL URL): accounts, projects, items, assignment, reading."""

    def __init__(self, target: str, *, create: bool = True, limits: TextLimits | None = None):
        """Open the store at `target`. `create=False` (the read-only commands: export, stats, label, users
        list/...): a store that does not exist yet is an error naming the target, never created by accident.
        Any failure to reach or read it is a StoreError that names the target and what to check.
        `limits`: the most characters a judgement's free-text fields may hold (defaults: `TextLimits()`)."""
        self.target = target
        self.limits = limits or TextLimits()
        self.created = False
        if not create:
            check_exists(target)
        try:
            self.engine = make_engine(target, create_parent=create)
            existing = set(inspect(self.engine).get_table_names())
            if not create and not {"projects", "assessors"} <= existing:
                raise StoreError(
                    f"store '{target}' holds no rlhf store (no rlhf tables). Point at the store that `rlhf "
                    "generate` or `rlhf users add` made, or run one of those to create it."
                )
            Base.metadata.create_all(self.engine)
            self.created = not existing
        except SQLAlchemyError as e:
            raise StoreError(unreachable(target, e)) from None
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        # reads need no write lock: on SQLite a separate engine opens them with a plain (deferred) BEGIN, so
        # they run beside writers under WAL instead of queueing behind BEGIN IMMEDIATE
        self.read_engine = make_engine(target, read_only=True) if is_sqlite(self.engine) else self.engine
        self.ReadSession = sessionmaker(self.read_engine, expire_on_commit=False)
        self.sqlite = is_sqlite(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # -- projects and items ---------------------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        task: str,
        *,
        overlap: int = 1,
        lease_ttl_s: int = 1800,
        guidelines: str = "",
        rationale: str = "optional",
        priority: str = "random",
        exist_ok: bool = False,
    ) -> int:
        if task not in judgements.TASKS:
            raise StoreError(f"task must be one of {', '.join(judgements.TASKS)}, got {task!r}")
        if overlap < 1:
            raise StoreError(f"overlap must be at least 1, got {overlap}")
        if lease_ttl_s < 1:
            raise StoreError(f"lease_ttl_s must be positive, got {lease_ttl_s}")
        if rationale not in judgements.RATIONALE:
            raise StoreError(f"rationale must be one of {', '.join(judgements.RATIONALE)}, got {rationale!r}")
        if priority not in judgements.PRIORITIES:
            raise StoreError(f"priority must be one of {', '.join(judgements.PRIORITIES)}, got {priority!r}")
        with self.Session.begin() as s:
            existing = s.scalar(select(Project).where(Project.name == name))
            if existing is not None:
                if not exist_ok:
                    raise StoreError(f"project '{name}' already exists in {self.target}")
                if existing.task != task:
                    raise StoreError(f"project '{name}' exists with task {existing.task}, not {task}")
                return existing.id
            p = Project(
                name=name,
                task=task,
                overlap=overlap,
                lease_ttl_s=lease_ttl_s,
                guidelines=guidelines,
                rationale=rationale,
                priority=priority,
                created_at=now_utc(),
            )
            s.add(p)
            s.flush()
            return p.id

    def project(self, name: str) -> Project:
        with self.ReadSession.begin() as s:
            return self._project(s, name)

    def _project(self, s: Session, name: str) -> Project:
        p = s.scalar(select(Project).where(Project.name == name))
        if p is None:
            names = s.scalars(select(Project.name).order_by(Project.name)).all()
            raise StoreError(
                f"no project '{name}' in {self.target}; projects: {', '.join(names) or '(none)'}"
            )
        return p

    def add_items(self, project: str, items: Iterable[dict], *, seed: int = 0) -> int:
        """items: {external_id, prompt, candidates: [{text, source}], meta?, gold?}. Returns items added."""
        rng = random.Random(seed)
        added = 0
        with self.Session.begin() as s:
            p = self._project(s, project)
            start = s.scalar(select(func.count(Item.id)).where(Item.project_id == p.id)) or 0
            for n, it in enumerate(items):
                cands = it.get("candidates") or []
                if len(cands) > judgements.MAX_CANDIDATES:
                    raise StoreError(
                        f"item '{it.get('external_id')}' has {len(cands)} candidates; the labeling app "
                        f"shows at most {judgements.MAX_CANDIDATES}"
                    )
                if p.task in judgements.ONE_CANDIDATE_TASKS and len(cands) != 1:
                    what = "row" if p.task == "review" else "answer"
                    raise StoreError(
                        f"{p.task} project '{project}': item '{it.get('external_id')}' needs exactly 1 {what}, "
                        f"it has {len(cands)}"
                    )
                if p.task not in judgements.ONE_CANDIDATE_TASKS and len(cands) < 2:
                    raise StoreError(
                        f"item '{it.get('external_id')}' has {len(cands)} candidates; at least 2 needed"
                    )
                if p.task == "pairwise" and len(cands) != 2:
                    raise StoreError(
                        f"pairwise project '{project}': item '{it.get('external_id')}' has "
                        f"{len(cands)} candidates, not 2"
                    )
                _check_gold(p.task, project, it)
                item = Item(
                    project_id=p.id,
                    external_id=str(it["external_id"]),
                    prompt=it["prompt"],
                    meta=it.get("meta") or {},
                    is_gold=it.get("gold") is not None,
                    gold=it.get("gold"),
                    priority=rng.random() if p.priority == "random" else float(start + n),
                    created_at=now_utc(),
                )
                item.candidates = [
                    Candidate(position=i, text=c["text"], source=c.get("source") or {})
                    for i, c in enumerate(cands)
                ]
                s.add(item)
                added += 1
            try:
                s.flush()
            except IntegrityError:
                raise StoreError(
                    f"project '{project}': an item id is already in the project (external ids must be unique)"
                ) from None
        return added

    def max_candidates(self, project: str) -> int:
        """The most candidates any item of the project shows (edits are not shown)."""
        with self.ReadSession.begin() as s:
            p = self._project(s, project)
            per_item = (
                select(func.count(Candidate.id).label("n"))
                .join(Item, Item.id == Candidate.item_id)
                .where(Item.project_id == p.id, Candidate.edited_by.is_(None))
                .group_by(Candidate.item_id)
                .subquery()
            )
            return int(s.scalar(select(func.max(per_item.c.n))) or 0)

    def gold_info(self, item_id: int) -> dict | None:
        """For a gold item: {"best": the candidate id that must come out on top, "note": why} — or for a
        binary item {"label": "good" | "bad", "note": why}; else None."""
        with self.ReadSession.begin() as s:
            item = s.get(Item, item_id)
            if item is None or not item.is_gold or not isinstance(item.gold, dict):
                return None
            if item.gold.get("label") in judgements.BINARY_LABELS:
                return {"label": item.gold["label"], "note": str(item.gold.get("note") or "")}
            if "best" not in item.gold:
                return None
            shown = [c for c in item.candidates if c.edited_by is None]
            best = item.gold["best"]
            if not isinstance(best, int) or not 0 <= best < len(shown):
                return None
            return {"best": shown[best].id, "note": str(item.gold.get("note") or "")}

    def candidate_sources(self, item_id: int) -> dict[int, dict]:
        with self.ReadSession.begin() as s:
            return {
                c.id: dict(c.source) for c in s.scalars(select(Candidate).where(Candidate.item_id == item_id))
            }

    # -- reading --------------------------------------------------------------------------------------------

    def annotations(self, project: str) -> list[dict]:
        """Every judgement of the project with its per-candidate values (for export and stats)."""
        with self.ReadSession.begin() as s:
            p = self._project(s, project)
            rows = s.execute(
                select(Annotation, Assessor.username, Assignment.leased_at)
                .join(Item, Item.id == Annotation.item_id)
                .join(Assessor, Assessor.id == Annotation.assessor_id)
                .outerjoin(
                    Assignment,
                    and_(
                        Assignment.item_id == Annotation.item_id,
                        Assignment.assessor_id == Annotation.assessor_id,
                    ),
                )
                .where(Item.project_id == p.id)
                .order_by(Annotation.id)
            ).all()
            return [
                {
                    "id": a.id,
                    "item_id": a.item_id,
                    "assessor": name,
                    "kind": a.kind,
                    "payload": a.payload,
                    "values": {v.candidate_id: v.value for v in a.values},
                    "rationale": a.rationale,
                    "flagged_unsafe": a.flagged_unsafe,
                    "created_at": a.created_at,
                    # the time the judgement took: from the item being shown (leased) to the submit
                    "seconds": (a.created_at - leased).total_seconds() if leased is not None else None,
                    "client_token": a.client_token,
                }
                for a, name, leased in rows
            ]

    def items(self, project: str) -> list[dict]:
        with self.ReadSession.begin() as s:
            p = self._project(s, project)
            items = s.scalars(select(Item).where(Item.project_id == p.id).order_by(Item.id)).all()
            return [
                {
                    "id": it.id,
                    "external_id": it.external_id,
                    "prompt": it.prompt,
                    "meta": it.meta,
                    "is_gold": it.is_gold,
                    "gold": it.gold,
                    "candidates": [{"id": c.id, "text": c.text, "source": c.source} for c in it.candidates],
                }
                for it in items
            ]

    def assignments(self, project: str) -> list[dict]:
        with self.ReadSession.begin() as s:
            p = self._project(s, project)
            rows = s.execute(
                select(Assignment, Assessor.username)
                .join(Item, Item.id == Assignment.item_id)
                .join(Assessor, Assessor.id == Assignment.assessor_id)
                .where(Item.project_id == p.id)
            ).all()
            return [
                {
                    "item_id": a.item_id,
                    "assessor": name,
                    "status": a.status,
                    "expires_at": a.expires_at,
                    "skip_reason": a.skip_reason,
                }
                for a, name in rows
            ]


def _check_gold(task: str, project: str, item: dict) -> None:
    """A binary item's gold answer is {"label": "good" | "bad"[, "note"]} (the others' is {"best": i})."""
    gold = item.get("gold")
    if task != "binary" or gold is None:
        return
    if not isinstance(gold, dict) or gold.get("label") not in judgements.BINARY_LABELS:
        raise StoreError(
            f"binary project '{project}': item '{item.get('external_id')}' has gold {str(gold)[:80]!r}; a binary gold "
            'answer is {"label": "good"} or {"label": "bad"} (with an optional "note")'
        )
