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

import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rlhf.errors import RlhfError
from rlhf.store import judgements
from rlhf.store.db import is_sqlite, make_engine
from rlhf.store.schema import (
    Annotation,
    AnnotationValue,
    Assessor,
    Assignment,
    Base,
    Candidate,
    Item,
    Project,
)

ROLES = ("assessor", "admin")
RATIONALE = ("off", "optional", "required")
PRIORITIES = ("random", "fifo")


class StoreError(RlhfError):
    """A refused store operation; the message says why and what to do."""


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


@dataclass
class Lease:
    """What an assessor is shown: the item and its candidates in this assessor's own shuffled order."""

    item_id: int
    external_id: str
    prompt: object
    candidates: list[dict]  # [{id, text}] in display order; provenance hidden
    expires_at: datetime
    is_gold: bool


class Store:
    def __init__(self, target: str):
        self.target = target
        self.engine = make_engine(target)
        Base.metadata.create_all(self.engine)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        # reads need no write lock: on SQLite a separate engine opens them with a plain (deferred) BEGIN, so
        # they run beside writers under WAL instead of queueing behind BEGIN IMMEDIATE
        self.read_engine = make_engine(target, read_only=True) if is_sqlite(self.engine) else self.engine
        self.ReadSession = sessionmaker(self.read_engine, expire_on_commit=False)
        self.sqlite = is_sqlite(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()

    # -- users ----------------------------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str = "assessor") -> int:
        username = username.strip()
        if not username:
            raise StoreError("a username must not be empty")
        if role not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if len(password) < 8:
            raise StoreError(f"the password for '{username}' is too short: use at least 8 characters")
        with self.Session.begin() as s:
            if s.scalar(select(Assessor.id).where(Assessor.username == username)) is not None:
                raise StoreError(
                    f"user '{username}' already exists; use `rlhf users set-password` to change it"
                )
            user = Assessor(
                username=username, role=role, password_hash=hash_password(password), created_at=now_utc()
            )
            s.add(user)
            s.flush()
            return user.id

    def _user(self, s: Session, username: str) -> Assessor:
        user = s.scalar(select(Assessor).where(Assessor.username == username))
        if user is None:
            raise StoreError(f"no user '{username}'; add it with `rlhf users add`")
        return user

    def set_password(self, username: str, password: str) -> None:
        if len(password) < 8:
            raise StoreError(f"the password for '{username}' is too short: use at least 8 characters")
        with self.Session.begin() as s:
            self._user(s, username).password_hash = hash_password(password)

    def set_disabled(self, username: str, disabled: bool = True) -> None:
        with self.Session.begin() as s:
            self._user(s, username).disabled = disabled

    def list_users(self) -> list[dict]:
        with self.ReadSession.begin() as s:
            users = s.scalars(select(Assessor).order_by(Assessor.username)).all()
            return [{"username": u.username, "role": u.role, "disabled": u.disabled} for u in users]

    def role(self, username: str) -> str | None:
        """The user's role, or None for an unknown or disabled user."""
        with self.ReadSession.begin() as s:
            user = s.scalar(select(Assessor).where(Assessor.username == username))
            return None if user is None or user.disabled else user.role

    def authenticate(self, username: str, password: str) -> dict | None:
        """The user's {username, role} when the password matches and the account is enabled."""
        with self.ReadSession.begin() as s:
            user = s.scalar(select(Assessor).where(Assessor.username == username))
            if user is None or user.disabled or not check_password(password, user.password_hash):
                return None
            return {"username": user.username, "role": user.role}

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
        if rationale not in RATIONALE:
            raise StoreError(f"rationale must be one of {', '.join(RATIONALE)}, got {rationale!r}")
        if priority not in PRIORITIES:
            raise StoreError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
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
                if len(cands) < 2:
                    raise StoreError(
                        f"item '{it.get('external_id')}' has {len(cands)} candidates; at least 2 needed"
                    )
                if p.task == "pairwise" and len(cands) != 2:
                    raise StoreError(
                        f"pairwise project '{project}': item '{it.get('external_id')}' has "
                        f"{len(cands)} candidates, not 2"
                    )
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

    # -- assignment -----------------------------------------------------------------------------------------

    def _live_slots(self, item_id_col, now: datetime):
        return (
            select(func.count(Assignment.id))
            .where(Assignment.item_id == item_id_col)
            .where(
                or_(
                    Assignment.status == "done",
                    and_(Assignment.status == "leased", Assignment.expires_at > now),
                )
            )
            .scalar_subquery()
        )

    def next_item(self, project: str, username: str, *, now: datetime | None = None) -> Lease | None:
        """The item this assessor should judge next (their live lease first), or None when none is left."""
        now = now or now_utc()
        with self.Session.begin() as s:
            p = self._project(s, project)
            user = self._active_user(s, username)
            live = s.scalar(
                select(Assignment)
                .join(Item, Item.id == Assignment.item_id)
                .where(
                    Item.project_id == p.id,
                    Assignment.assessor_id == user.id,
                    Assignment.status == "leased",
                    Assignment.expires_at > now,
                )
                .order_by(Assignment.leased_at)
                .limit(1)
            )
            if live is not None:
                return self._lease(s, live)
            mine = select(Assignment.item_id).where(Assignment.assessor_id == user.id)
            query = (
                select(Item.id)
                .where(Item.project_id == p.id, Item.open, Item.id.not_in(mine))
                .where(or_(Item.is_gold, self._live_slots(Item.id, now) < p.overlap))
                .order_by(Item.priority, Item.id)
                .limit(1)
            )
            # PostgreSQL: lock one candidate; rows other assessors are leasing are skipped, not waited for
            locked = query if self.sqlite else query.with_for_update(skip_locked=True, of=Item)
            for _attempt in range(200):
                item_id = s.scalar(locked)
                if item_id is None:
                    if self.sqlite or s.scalar(query) is None:
                        return None  # nothing left for this assessor
                    time.sleep(0.002)  # every open item is being leased right now by someone else
                    continue
                item = s.get(Item, item_id)
                recount = not self.sqlite and not item.is_gold  # after the lock, with a fresh snapshot
                if recount and s.scalar(select(self._live_slots(item_id, now))) >= p.overlap:
                    continue
                order = [c.id for c in item.candidates if c.edited_by is None]  # edits are never served
                random.Random(f"{item_id}:{user.id}").shuffle(order)  # per-assignment order, stable
                a = Assignment(
                    item_id=item_id,
                    assessor_id=user.id,
                    status="leased",
                    leased_at=now,
                    expires_at=now + timedelta(seconds=p.lease_ttl_s),
                    order=order,
                )
                s.add(a)
                s.flush()
                return self._lease(s, a)
            raise StoreError("the queue is too contended right now; try again")

    def _active_user(self, s: Session, username: str) -> Assessor:
        user = self._user(s, username)
        if user.disabled:
            raise StoreError(f"user '{username}' is disabled")
        return user

    def _lease(self, s: Session, a: Assignment) -> Lease:
        item = s.get(Item, a.item_id)
        texts = {c.id: c.text for c in item.candidates}
        return Lease(
            item_id=item.id,
            external_id=item.external_id,
            prompt=item.prompt,
            candidates=[{"id": cid, "text": texts[cid]} for cid in a.order],
            expires_at=a.expires_at,
            is_gold=item.is_gold,
        )

    def _assignment_for(
        self, s: Session, p: Project, item_id: int, user: Assessor, now: datetime
    ) -> Assignment:
        a = s.scalar(
            select(Assignment)
            .join(Item, Item.id == Assignment.item_id)
            .where(Assignment.item_id == item_id, Assignment.assessor_id == user.id, Item.project_id == p.id)
        )
        if a is None:
            raise StoreError(f"item {item_id} is not assigned to '{user.username}' in project '{p.name}'")
        return a

    def submit(
        self,
        project: str,
        username: str,
        item_id: int,
        payload: dict,
        *,
        client_token: str,
        rationale: str = "",
        flagged_unsafe: bool = False,
        edit: dict | None = None,
        now: datetime | None = None,
    ) -> int:
        """Store one judgement; returns the annotation id (the stored one for a repeated client token).

        `edit` = {"base": candidate id, "text": improved text}: edit-to-improve. The text is stored as a new
        candidate of the item (never served to other assessors) that export prefers over its base."""
        now = now or now_utc()
        if not client_token or len(client_token) > 100:
            raise StoreError("a submit needs a client token of 1..100 characters")
        try:
            with self.Session.begin() as s:
                p = self._project(s, project)
                user = self._active_user(s, username)
                existing = s.scalar(select(Annotation).where(Annotation.client_token == client_token))
                if existing is not None:
                    if existing.assessor_id != user.id or existing.item_id != item_id:
                        raise StoreError("this client token was already used for another submit")
                    return existing.id
                a = self._assignment_for(s, p, item_id, user, now)
                if a.status == "done":
                    raise StoreError(f"'{username}' already submitted item {item_id}")
                if a.status == "skipped":
                    raise StoreError(f"'{username}' skipped item {item_id}; it cannot be submitted now")
                if a.expires_at <= now:
                    item = s.get(Item, item_id)
                    others = s.scalar(select(self._live_slots(item_id, now)))
                    if not item.is_gold and others >= p.overlap:
                        raise StoreError(
                            f"the lease on item {item_id} expired and the item went to other "
                            "assessors; take the next item"
                        )
                rationale = (rationale or "").strip()
                if p.rationale == "required" and not rationale:
                    raise StoreError("this project requires a rationale with every judgement")
                vals = judgements.values(p.task, payload, a.order)
                if edit is not None:
                    payload = {**payload, "edit": self._add_edit(s, item_id, a.order, user, edit)}
                ann = Annotation(
                    item_id=item_id,
                    assessor_id=user.id,
                    client_token=client_token,
                    kind=p.task,
                    payload=payload,
                    rationale=rationale if p.rationale != "off" else "",
                    flagged_unsafe=bool(flagged_unsafe),
                    created_at=now,
                )
                ann.values = [AnnotationValue(candidate_id=c, value=v) for c, v in vals.items()]
                s.add(ann)
                a.status = "done"
                item = s.get(Item, item_id)
                item.done_count += 1
                if not item.is_gold and item.done_count >= p.overlap:
                    item.open = False
                s.flush()
                return ann.id
        except IntegrityError:
            # a concurrent duplicate of the same token (or item x assessor) won the race: return the stored one
            with self.Session.begin() as s:
                existing = s.scalar(select(Annotation).where(Annotation.client_token == client_token))
                if existing is None:
                    raise StoreError(f"'{username}' already submitted item {item_id}") from None
                return existing.id

    def _add_edit(self, s: Session, item_id: int, shown: list[int], user: Assessor, edit: dict) -> dict:
        base, text = edit.get("base"), (edit.get("text") or "").strip()
        if base not in shown:
            raise StoreError("the edited response must be one of the candidates shown")
        if not text:
            raise StoreError("the improved response is empty")
        texts = {c.id: c.text for c in s.scalars(select(Candidate).where(Candidate.item_id == item_id))}
        if text == texts[base].strip():
            raise StoreError(
                "the improved response is identical to the original; edit it or clear the edit box"
            )
        new = Candidate(
            item_id=item_id,
            position=len(texts),
            text=text,
            edited_by=user.id,
            source={"edited_from": base, "editor": user.username},
        )
        s.add(new)
        s.flush()
        return {"base": base, "candidate": new.id}

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

    def shown_order(self, project: str, username: str, item_id: int) -> list[int]:
        """The candidate ids in the order this assessor was shown them (their assignment's order)."""
        with self.ReadSession.begin() as s:
            p = self._project(s, project)
            return list(self._assignment_for(s, p, item_id, self._user(s, username), now_utc()).order)

    def candidate_sources(self, item_id: int) -> dict[int, dict]:
        with self.ReadSession.begin() as s:
            return {
                c.id: dict(c.source) for c in s.scalars(select(Candidate).where(Candidate.item_id == item_id))
            }

    def skip(
        self, project: str, username: str, item_id: int, reason: str, *, now: datetime | None = None
    ) -> None:
        reason = (reason or "").strip()
        if not reason:
            raise StoreError("say why you skip this item")
        with self.Session.begin() as s:
            p = self._project(s, project)
            user = self._active_user(s, username)
            a = self._assignment_for(s, p, item_id, user, now or now_utc())
            if a.status == "done":
                raise StoreError(f"'{username}' already submitted item {item_id}")
            a.status, a.skip_reason = "skipped", reason[:2000]

    # -- reading --------------------------------------------------------------------------------------------

    def progress(self, project: str, username: str, *, now: datetime | None = None) -> dict:
        now = now or now_utc()
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        with self.ReadSession.begin() as s:
            p = self._project(s, project)
            user = self._user(s, username)
            mine = (
                select(func.count(Annotation.id))
                .join(Item, Item.id == Annotation.item_id)
                .where(Item.project_id == p.id, Annotation.assessor_id == user.id)
            )
            done_total = s.scalar(mine)
            done_today = s.scalar(mine.where(Annotation.created_at >= day_start))
            seen = select(Assignment.item_id).where(Assignment.assessor_id == user.id)
            remaining = s.scalar(
                select(func.count(Item.id))
                .where(Item.project_id == p.id, Item.id.not_in(seen))
                .where(or_(Item.is_gold, self._live_slots(Item.id, now) < p.overlap))
            )
            return {"done_today": done_today, "done_total": done_total, "remaining": remaining}

    def annotations(self, project: str) -> list[dict]:
        """Every judgement of the project with its per-candidate values (for export and stats)."""
        with self.ReadSession.begin() as s:
            p = self._project(s, project)
            rows = s.execute(
                select(Annotation, Assessor.username)
                .join(Item, Item.id == Annotation.item_id)
                .join(Assessor, Assessor.id == Annotation.assessor_id)
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
                    "client_token": a.client_token,
                }
                for a, name in rows
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
