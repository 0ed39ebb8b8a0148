"""Server-side assignment: leases, submits and skips (the rules are in the `rlhf.store.service` docstring).

On SQLite every transaction starts with BEGIN IMMEDIATE, which serialises the read-then-write; on
PostgreSQL candidate items are locked with FOR UPDATE SKIP LOCKED and re-counted after the lock. Submits
are idempotent by client token; a judgement and its per-candidate values are one transaction.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhf.store import judgements
from rlhf.store.base import StoreError, now_utc
from rlhf.store.schema import Annotation, AnnotationValue, Assessor, Assignment, Candidate, Item, Project


@dataclass
class Lease:
    """What an assessor is shown: the item and its candidates in this assessor's own shuffled order."""

    item_id: int
    external_id: str
    prompt: object
    candidates: list[dict]  # [{id, text}] in display order; provenance hidden
    expires_at: datetime
    is_gold: bool


class Assignments:
    """The assignment half of `Store` (it provides sessions, `_project`, `_user` and `limits`)."""

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
        candidate of the item (never served to other assessors) that export prefers over its base.
        Free text is checked against `self.limits` and cleaned (`rlhf.store.limits`); `flagged_unsafe` must be
        a bool (a string such as "false" is refused, never coerced)."""
        now = now or now_utc()
        if not isinstance(client_token, str) or not 1 <= len(client_token) <= 100:
            raise StoreError("a submit needs a client token of 1..100 characters")
        if not isinstance(flagged_unsafe, bool):
            raise StoreError(f"the unsafe flag must be true or false, got {str(flagged_unsafe)[:40]!r}")
        rationale = self.limits.clean("rationale", rationale)
        if edit is not None:
            if not isinstance(edit, dict):
                raise StoreError("an edit is {'base': candidate id, 'text': the improved response}")
            edit = {"base": edit.get("base"), "text": self.limits.clean("edit", edit.get("text"))}
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
                if p.rationale == "required" and not rationale:
                    raise StoreError("this project requires a rationale with every judgement")
                vals = judgements.values(p.task, payload, a.order)
                payload = judgements.stored_payload(p.task, payload)  # only the task's own key is kept
                if edit is not None:
                    payload = {**payload, "edit": self._add_edit(s, item_id, a.order, user, edit)}
                ann = Annotation(
                    item_id=item_id,
                    assessor_id=user.id,
                    client_token=client_token,
                    kind=p.task,
                    payload=payload,
                    rationale=rationale if p.rationale != "off" else "",
                    flagged_unsafe=flagged_unsafe,
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
        base, text = edit["base"], edit["text"]  # text: already checked and cleaned by `submit`
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

    def shown_order(self, project: str, username: str, item_id: int) -> list[int]:
        """The candidate ids in the order this assessor was shown them (their assignment's order)."""
        with self.ReadSession.begin() as s:
            p = self._project(s, project)
            return list(self._assignment_for(s, p, item_id, self._user(s, username), now_utc()).order)

    def skip(
        self, project: str, username: str, item_id: int, reason: str, *, now: datetime | None = None
    ) -> None:
        reason = self.limits.clean("skip_reason", reason)
        if not reason:
            raise StoreError("say why you skip this item")
        with self.Session.begin() as s:
            p = self._project(s, project)
            user = self._active_user(s, username)
            a = self._assignment_for(s, p, item_id, user, now or now_utc())
            if a.status == "done":
                raise StoreError(f"'{username}' already submitted item {item_id}")
            a.status, a.skip_reason = "skipped", reason

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
