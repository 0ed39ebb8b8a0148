"""The labeling store's tables (SQLAlchemy 2.x), identical on SQLite and PostgreSQL.

projects     a labeling campaign: task kind, overlap, lease TTL, guidelines, rationale policy, priority
items        one prompt to judge (string or messages, JSON), optional gold answer, priority key
candidates   the K responses of an item, with provenance (model, run, sampling params, seed)
assessors    users: role assessor|admin, salted password hash, disabled flag
assignments  a lease of an item to an assessor (unique per item x assessor: never the same item twice)
annotations  one judgement (unique per item x assessor; unique client token makes resubmits idempotent)
annotation_values  the per-candidate values of a judgement (rank / score / pairwise outcome), written in
             the same transaction as the annotation, so a k-wise ranking is never half-written
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(20))  # pairwise | ranking | likert
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    lease_ttl_s: Mapped[int] = mapped_column(Integer, default=1800)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    rationale: Mapped[str] = mapped_column(String(10), default="optional")  # off | optional | required
    priority: Mapped[str] = mapped_column(String(20), default="random")  # random | fifo
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        Index("ix_items_queue", "project_id", "priority"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[object] = mapped_column(JSON)  # a string or a list of {role, content}
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold: Mapped[object | None] = mapped_column(JSON, nullable=True)  # the expected judgement payload
    priority: Mapped[float] = mapped_column(Float, default=0.0)  # lower is served first
    done_count: Mapped[int] = mapped_column(Integer, default=0)  # submitted judgements
    open: Mapped[bool] = mapped_column(
        Boolean, default=True
    )  # false once `overlap` judgements are in (not gold)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    candidates: Mapped[list[Candidate]] = relationship(order_by="Candidate.position", lazy="selectin")


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("item_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[dict] = mapped_column(JSON, default=dict)  # model, run, sampling params, seed
    edited_by: Mapped[int | None] = mapped_column(ForeignKey("assessors.id"), nullable=True)


class Assessor(Base):
    __tablename__ = "assessors"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(10), default="assessor")  # assessor | admin
    password_hash: Mapped[str] = mapped_column(String(300))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("item_id", "assessor_id"),
        Index("ix_assign_item_status", "item_id", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    assessor_id: Mapped[int] = mapped_column(ForeignKey("assessors.id"), index=True)
    status: Mapped[str] = mapped_column(String(10))  # leased | done | skipped
    leased_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    order: Mapped[list[int]] = mapped_column(JSON)  # candidate ids in the order shown to this assessor
    skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Annotation(Base):
    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("item_id", "assessor_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    assessor_id: Mapped[int] = mapped_column(ForeignKey("assessors.id"), index=True)
    client_token: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # pairwise | ranking | likert
    payload: Mapped[dict] = mapped_column(JSON)  # the judgement as submitted (choice / ranking / scores)
    rationale: Mapped[str] = mapped_column(Text, default="")
    flagged_unsafe: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    values: Mapped[list[AnnotationValue]] = relationship(lazy="selectin", cascade="all, delete-orphan")


class AnnotationValue(Base):
    __tablename__ = "annotation_values"
    __table_args__ = (UniqueConstraint("annotation_id", "candidate_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    value: Mapped[float] = mapped_column(Float)  # rank (1 = best) for ranking/pairwise, score for likert
