"""A deployment run waits for a catalog feed that is not yet complete for its week without
holding its worker: it reschedules itself.

The run's state becomes `AwaitingFeed` (a Scheduled state, shown as such in the UI) at the time
of the next try, with the feed's reason and that time in its message, and its process ends.
`digest serve` or the worker starts the same flow run again then, and it syncs the feed first
as every run does. Its tries are counted from its own history: the `AwaitingFeed` states since
it was last scheduled from outside (by the schedule, by hand, or by Retry).

`digest run` has no runner to start it again, so it waits in its own process instead (see
flows/weekly_digest.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import Pause
from prefect.states import Scheduled
from prefect.utilities.engine import propose_state_sync

AWAITING_FEED = "AwaitingFeed"


def waits_so_far() -> int:
    """How many times this flow run rescheduled itself for the feed since it was last scheduled
    from outside (a Retry starts the count again)."""
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(context.flow_run.id)
    waits = 0
    for state in sorted(states, key=lambda each: each.timestamp):
        if state.name == AWAITING_FEED:
            waits += 1
        elif state.is_scheduled():
            waits = 0
    return waits


def reschedule(message: str, *, at: datetime) -> NoReturn:
    """End this process, leaving the flow run `AwaitingFeed` until `at` with `message`.

    Prefect's own reschedule (a pause with `reschedule=True`) waits for someone to resume it;
    this one is resumed by the clock. The state is forced, since a Running run may not go back
    to Scheduled by the ordinary rules, and the engine is left through `Pause`, the way Prefect
    leaves a process whose run will be started again.
    """
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    waiting: State[Any] = Scheduled(scheduled_time=at, name=AWAITING_FEED, message=message)
    with get_client(sync_client=True) as client:
        accepted = propose_state_sync(
            client=client, state=waiting, flow_run_id=context.flow_run.id, force=True
        )
    raise Pause(state=accepted)
