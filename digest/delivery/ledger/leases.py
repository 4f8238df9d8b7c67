"""The digest's lease: one run sends a digest at a time, and a dead run's rows turn uncertain."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from digest.delivery.ledger.schedules import requeue_cancelled
from digest.errors import RecalledError, RunInProgressError
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import RECALL_TABLE as RECALL
from digest.states import Cause, DeliveryState, sources_of, values
from digest.weeks import utcnow

log = logging.getLogger(__name__)


def new_owner() -> str:
    """A lease owner id: host and pid let a rerun on the same host see that a holder died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _owner_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _holder(connection: Connection, digest_id: int) -> Any:
    return connection.execute(
        select(DIGEST.c.lease_owner, DIGEST.c.lease_expires_at, DIGEST.c.week).where(
            DIGEST.c.id == digest_id
        )
    ).one()


def acquire_lease(
    engine: Engine,
    *,
    digest_id: int,
    owner: str,
    ttl_seconds: int,
    cancellable_after: datetime | None = None,
) -> int:
    """Take the digest's lease for `owner`; returns how many rows were found `uncertain`.

    Raises RunInProgressError while another live run holds it. On taking the lease, rows of a
    batch whose cancel was confirmed go back to `pending`; every other row still `sending`
    belongs to a run that is gone: it becomes `uncertain`, unless its provider batch is due
    after `cancellable_after` (still cancellable): the caller cancels those.
    """
    now = utcnow()
    with engine.begin() as connection:
        holder = _holder(connection, digest_id)
        free = or_(
            DIGEST.c.lease_owner.is_(None),
            DIGEST.c.lease_owner == owner,
            DIGEST.c.lease_expires_at < now,
        )
        if holder.lease_owner and _owner_is_dead(holder.lease_owner):
            free = or_(free, DIGEST.c.lease_owner == holder.lease_owner)
        taken = connection.execute(
            update(DIGEST)
            .where(DIGEST.c.id == digest_id, free)
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_seconds))
        ).rowcount
        if not taken:
            # Read the holder again: the first read may predate the run that just won the race.
            raise _in_progress(_holder(connection, digest_id))
        # A batch whose cancel was confirmed holds nothing the provider will send, whatever
        # its rows say: a holder that died before recording that is mended first.
        requeue_cancelled(connection, digest_id=digest_id)
        return _mark_orphans_uncertain(
            connection, digest_id=digest_id, owner=owner, cancellable_after=cancellable_after
        )


def _in_progress(holder: Any) -> RunInProgressError:
    until = (
        f" until {holder.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC" if holder.lease_expires_at else ""
    )
    held = (
        f"Another run is sending the digest of {holder.week} (lease held by "
        f"{holder.lease_owner or 'another run'}{until})."
    )
    return RunInProgressError(
        f"{held} Wait for it to finish and run again; nothing was sent by this run.", holder=held
    )


def _mark_orphans_uncertain(
    connection: Connection, *, digest_id: int, owner: str, cancellable_after: datetime | None
) -> int:
    """Rows claimed by any run but `owner` were left by a run that is gone."""
    statement = update(DELIVERY)
    if cancellable_after is not None:
        statement = statement.where(
            or_(DELIVERY.c.send_at.is_(None), DELIVERY.c.send_at <= cancellable_after)
        )
    result = connection.execute(
        statement.where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.state.in_(values(sources_of(DeliveryState.UNCERTAIN, Cause.RUN_DIED))),
            # Claims read "<owner>#<batch>": any claim not this run's is from a run now gone.
            or_(
                DELIVERY.c.claim_owner.is_(None),
                ~DELIVERY.c.claim_owner.startswith(owner + "#", autoescape=True),
            ),
        ).values(
            state=DeliveryState.UNCERTAIN.value,
            last_error="its sending run ended before the provider's answer was recorded",
            updated_at=utcnow(),
        )
    )
    return int(result.rowcount)


def _not_recalled() -> ColumnElement[bool]:
    return ~select(RECALL.c.week).where(RECALL.c.week == DIGEST.c.week).exists()


def lease_held(
    *, digest_id: int | ColumnElement[Any], owner: str | ColumnElement[Any]
) -> ColumnElement[bool]:
    """`owner` holds the digest's lease and its week is not recalled: the condition a run's
    claim carries in its own statement, so a recall or a takeover stops the very next claim.
    Either value may be a bound parameter, for a statement built once (the claim's)."""
    return (
        select(DIGEST.c.id)
        .where(DIGEST.c.id == digest_id, DIGEST.c.lease_owner == owner, _not_recalled())
        .exists()
    )


def check_lease(connection: Connection, *, digest_id: int, owner: str) -> None:
    """RunInProgressError if another run took the lease, RecalledError once the editor recalled
    the week (`digest recall`); nothing while `owner` holds it."""
    if connection.execute(select(lease_held(digest_id=digest_id, owner=owner))).scalar():
        return
    recalled = select(DIGEST.c.id).where(DIGEST.c.id == digest_id, ~_not_recalled())
    if connection.execute(recalled).first():
        raise RecalledError(
            "The editor recalled this digest (`digest recall`) while it was being sent: this "
            "run stopped sending. Nothing more goes out until a run is started --after-recall."
        )
    raise RunInProgressError(
        "This run lost the digest's lease to another run (it was paused longer than "
        "DIGEST_LEASE_SECONDS). It stopped sending; the other run carries on."
    )


def extend_lease(connection: Connection, *, digest_id: int, owner: str, ttl_seconds: int) -> bool:
    """Push the lease's end `ttl_seconds` ahead while `owner` holds it; False if it does not."""
    kept = connection.execute(
        update(DIGEST)
        .where(DIGEST.c.id == digest_id, DIGEST.c.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=ttl_seconds))
    ).rowcount
    return bool(kept)


def release_lease(engine: Engine, *, digest_id: int, owner: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(DIGEST)
            .where(DIGEST.c.id == digest_id, DIGEST.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )


class LeaseHeartbeat:
    """Renews a held lease every few seconds on a thread of its own, while the run works.

    A run that stops renewing (its process killed, its machine gone) loses the digest once the
    lease's time is up, so a run elsewhere takes over within `ttl_seconds` rather than waiting
    for a long lease to run out. A lease another run took is left alone.
    """

    def __init__(self, engine: Engine, *, digest_id: int, owner: str, ttl_seconds: int) -> None:
        self._engine = engine
        self._digest_id = digest_id
        self._owner = owner
        self._ttl = ttl_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    @property
    def interval(self) -> float:
        return max(1.0, self._ttl / 6)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                with self._engine.begin() as connection:
                    kept = extend_lease(
                        connection,
                        digest_id=self._digest_id,
                        owner=self._owner,
                        ttl_seconds=self._ttl,
                    )
            except SQLAlchemyError as error:  # a busy database: the next beat tries again
                log.warning("could not renew the digest's lease: %s", error)
                continue
            if not kept:
                return  # another run took the digest: its claims stop this one
