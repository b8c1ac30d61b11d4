"""Digest bookkeeping and small durable bot state.

A digest is *claimed* (a row unique per chat and local date) before it is built and posted, so two
scheduler ticks, two processes, or a restart never post the same day's digest twice. Each claim names
its claimant (a token per scheduler run). A claim still ``claimed`` after ``CLAIM_LEASE`` whose claimant
is another run was left by a process that died between claim and post: the next run takes it over, so
a crash costs a delay, not the day's digest. The lease is far longer than building and posting one
digest takes, so a second live process is not overtaken mid-post; what stays possible is a double post
when a process dies in the few milliseconds between the platform accepting the post and the
``posted`` commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.ingest import to_naive_utc
from storage.models import BotState, DigestRun, utcnow

DIGEST_STATUSES = ("claimed", "posted", "skipped", "failed")


#: How long a claim protects a digest that is being built and posted (a model call is bounded by minutes).
CLAIM_LEASE = timedelta(minutes=15)


def claim_digest(
    session: Session,
    chat_pk: int,
    local_date: str,
    scheduled_for: datetime,
    *,
    claimant: str = "",
    now: datetime | None = None,
    lease: timedelta = CLAIM_LEASE,
) -> DigestRun | None:
    """Claim the digest of ``chat_pk`` for ``local_date``; None when it is done or claimed by a live run.

    A claim of another ``claimant`` older than ``lease`` and never finished is taken over (its process
    died before posting); the take-over is one conditional UPDATE, so two runs cannot both win it.
    """
    now_utc = to_naive_utc(now) if now is not None else utcnow()
    existing = session.scalars(
        select(DigestRun).where(DigestRun.chat_id == chat_pk, DigestRun.local_date == local_date)
    ).one_or_none()
    if existing is not None:
        stale = (existing.status == "claimed" and existing.claimed_by != claimant
                 and now_utc - existing.claimed_at > lease)
        if not stale:
            return None
        taken = session.execute(
            update(DigestRun)
            .where(DigestRun.id == existing.id, DigestRun.status == "claimed",
                   DigestRun.claimed_by == existing.claimed_by, DigestRun.claimed_at == existing.claimed_at)
            .values(claimed_by=claimant, claimed_at=now_utc,
                    detail=f"taken over from a claim of {existing.claimed_at:%Y-%m-%d %H:%M} UTC")
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]  # another run took it first
            return None
        session.refresh(existing)
        return existing
    try:
        with session.begin_nested():
            run = DigestRun(chat_id=chat_pk, local_date=local_date, scheduled_for=to_naive_utc(scheduled_for),
                            status="claimed", message_count=0, detail="", claimed_at=now_utc,
                            claimed_by=claimant)
            session.add(run)
    except IntegrityError:  # another claimant won between our select and insert
        return None
    return run


def finish_digest(
    session: Session,
    run_id: int,
    status: str,
    *,
    message_count: int = 0,
    covered_until: datetime | None = None,
    detail: str = "",
) -> None:
    """Record how a claimed digest ended; ``covered_until`` is where the next digest starts."""
    if status not in DIGEST_STATUSES:
        raise ValueError(f"digest status must be one of {DIGEST_STATUSES}, got {status!r}")
    run = session.get(DigestRun, run_id)
    if run is None:
        raise LookupError(f"no digest run {run_id}")
    run.status = status
    run.message_count = message_count
    run.covered_until = to_naive_utc(covered_until) if covered_until else None
    run.detail = detail[:2000]
    run.finished_at = utcnow()


def last_posted(session: Session, chat_pk: int) -> DigestRun | None:
    """The most recent digest that was actually posted in a chat."""
    return session.scalars(
        select(DigestRun)
        .where(DigestRun.chat_id == chat_pk, DigestRun.status == "posted")
        .order_by(DigestRun.scheduled_for.desc())
        .limit(1)
    ).first()


def digest_runs(session: Session, chat_pk: int) -> list[DigestRun]:
    """Every digest run of a chat, oldest first (for tests and an admin's overview)."""
    return list(session.scalars(
        select(DigestRun).where(DigestRun.chat_id == chat_pk).order_by(DigestRun.scheduled_for)
    ))


def get_state(session: Session, key: str) -> str | None:
    row = session.get(BotState, key)
    return None if row is None else row.value


def set_state(session: Session, key: str, value: str) -> None:
    row = session.get(BotState, key)
    if row is None:
        session.add(BotState(key=key, value=value, updated_at=utcnow()))
    else:
        row.value = value
        row.updated_at = utcnow()


def release_digest(session: Session, run_id: int) -> None:
    """Give back a claim that posted nothing (the model was busy), so a later tick may try again."""
    run = session.get(DigestRun, run_id)
    if run is not None and run.status == "claimed":
        session.delete(run)
